//! The state every handler shares.

use std::sync::Arc;

use ferry_core::ClientId;

use crate::auth::KnownUsers;
use crate::auth::issuer::Issuer;
use crate::clock::{ServerClock, wall_ms};
use crate::ops::metrics::Metrics;
use crate::store::{Store, StoreError};

/// What the server knows beyond its configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id in the HLCs it stamps.
    pub node_id: ClientId,
    /// How far ahead of the server's clock a change's HLC may be, in ms.
    pub max_clock_skew_ms: u64,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Ferry's own token issuer.
    pub issuer: Arc<Issuer>,
    /// This node's HLC.
    pub clock: Arc<ServerClock>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<Settings>,
    pub(crate) known_users: Arc<KnownUsers>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl AppState {
    /// Builds the state over `store`, loading (or creating) the signing keys.
    pub async fn new(store: Arc<dyn Store>, settings: Settings) -> Result<AppState, StoreError> {
        let issuer = Issuer::load(store.as_ref(), wall_ms()).await?;
        Ok(AppState {
            store,
            issuer: Arc::new(issuer),
            clock: Arc::new(ServerClock::new(settings.node_id.clone())),
            metrics: Arc::new(Metrics::new()),
            settings: Arc::new(settings),
            known_users: Arc::default(),
        })
    }
}
