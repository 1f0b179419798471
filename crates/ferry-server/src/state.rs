//! The state every handler shares.

use std::sync::Arc;

use ferry_core::ClientId;

use crate::auth::KnownUsers;
use crate::auth::external::{SharedSecret, SharedSecretConfig};
use crate::auth::issuer::{Issuer, Keyring};
use crate::auth::jwks::{JwksConfig, JwksProvider};
use crate::auth::limits::SignInLimits;
use crate::auth::mail::{self, Mailer, MailerConfig};
use crate::billing::BillingSettings;
use crate::clock::{ServerClock, wall_ms};
use crate::ops::metrics::Metrics;
use crate::realtime::{Realtime, RealtimeSettings};
use crate::store::{Store, StoreError};

/// What the server knows beyond its configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id in the HLCs it stamps.
    pub node_id: ClientId,
    /// How far ahead of the server's clock a change's HLC may be, in ms.
    pub max_clock_skew_ms: u64,
    /// The address people reach Ferry (or the app) at; sign-in links start
    /// with it.
    pub public_url: String,
    /// Where sign-in mail goes.
    pub mailer: MailerConfig,
    /// How long a sign-in link works.
    pub login_ttl_secs: u64,
    /// How long an access token works.
    pub access_ttl_secs: u64,
    /// How long a refresh token works unused.
    pub refresh_ttl_secs: u64,
    /// An external identity provider sharing an HS256 secret, if any.
    pub shared_secret: Option<SharedSecretConfig>,
    /// An external identity provider publishing a JWKS, if any.
    pub jwks: Option<JwksConfig>,
    /// The shortest time between two reloads of Ferry's own signing keys on
    /// an unknown key id.
    pub key_reload_interval: std::time::Duration,
    /// Realtime connections: allowed origins, limits, timings.
    pub realtime: RealtimeSettings,
    /// A directory of static files served at `/` (an app's own build)
    /// instead of Ferry's todo demo.
    pub app_dir: Option<std::path::PathBuf>,
    /// The billing gate and the webhooks' secrets.
    pub billing: BillingSettings,
}

impl Settings {
    /// The defaults, for node `node_id` reachable at `public_url`.
    pub fn new(node_id: ClientId, public_url: impl Into<String>) -> Settings {
        Settings {
            node_id,
            max_clock_skew_ms: 300_000,
            public_url: public_url.into(),
            mailer: MailerConfig::Log,
            login_ttl_secs: 15 * 60,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            shared_secret: None,
            jwks: None,
            key_reload_interval: std::time::Duration::from_secs(30),
            realtime: RealtimeSettings::default(),
            app_dir: None,
            billing: BillingSettings::default(),
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Ferry's own token issuer.
    pub issuer: Arc<Keyring>,
    /// This node's HLC.
    pub clock: Arc<ServerClock>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Where sign-in mail goes.
    pub mailer: Arc<dyn Mailer>,
    /// Rate limits of sign-in requests.
    pub sign_in_limits: Arc<SignInLimits>,
    /// The external provider trusted by a shared secret, if configured.
    pub shared_secret: Option<Arc<SharedSecret>>,
    /// The external provider trusted through its JWKS, if configured.
    pub jwks: Option<Arc<JwksProvider>>,
    /// Realtime signals: this node's subscriptions and the other nodes.
    pub realtime: Arc<Realtime>,
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
        let settings_shared = settings.shared_secret.clone();
        let settings_reload = settings.key_reload_interval;
        let jwks = match settings.jwks.clone() {
            Some(c) => Some(Arc::new(JwksProvider::new(c).map_err(|e| {
                StoreError::Internal(format!("cannot build the JWKS client: {e}"))
            })?)),
            None => None,
        };
        let mailer = mail::mailer(&settings.mailer)
            .map_err(|e| StoreError::Unavailable(format!("cannot prepare the mailer: {e}")))?;
        let metrics = Arc::new(Metrics::new());
        let realtime = Arc::new(Realtime::new(metrics.clone(), store.feed()));
        Ok(AppState {
            store,
            issuer: Arc::new(Keyring::new(issuer, settings_reload)),
            clock: Arc::new(ServerClock::new(settings.node_id.clone())),
            metrics,
            realtime,
            settings: Arc::new(settings),
            mailer,
            sign_in_limits: Arc::default(),
            shared_secret: settings_shared.map(|c| Arc::new(SharedSecret::new(&c))),
            jwks,
            known_users: Arc::default(),
        })
    }
}
