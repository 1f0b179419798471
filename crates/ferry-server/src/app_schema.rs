//! The app's schema as this node holds it (docs/schema.md): loaded at
//! start, and again whenever a push finds a newer version stored (applied
//! through another node or by `ferry schema apply`), so every node checks
//! writes against the newest schema without a restart. [`watch`] reads it
//! again every second, so that realtime connections are told of a new
//! version (`{"type": "schema"}`) even while nobody writes.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_core::schema::Schema;
use tokio::sync::watch;

use crate::store::{AppSchema, Store, StoreError};

/// The node's copy of the newest app schema.
#[derive(Debug)]
pub struct SchemaCache {
    current: RwLock<Arc<AppSchema>>,
    /// When the store was last asked, for [`SchemaCache::fresh`].
    checked: Mutex<Option<Instant>>,
    /// The version held, for realtime connections to follow.
    versions: watch::Sender<u64>,
}

impl Default for SchemaCache {
    fn default() -> Self {
        SchemaCache {
            current: RwLock::default(),
            checked: Mutex::default(),
            versions: watch::Sender::new(0),
        }
    }
}

/// How stale a node's copy may be when it tells clients the version.
const FRESH: Duration = Duration::from_secs(1);

impl SchemaCache {
    /// The schema the node holds now.
    pub fn current(&self) -> Arc<AppSchema> {
        match self.current.read() {
            Ok(held) => held.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The schema, read again from the store when it was last read more
    /// than a second ago: what sync answers tell clients, so a schema
    /// applied through another node (or the CLI) reaches them within a
    /// second, for one read a second at most.
    pub async fn fresh(&self, store: &dyn Store) -> Result<Arc<AppSchema>, StoreError> {
        let due = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = checked.is_none_or(|at| at.elapsed() >= FRESH);
            if due {
                *checked = Some(Instant::now());
            }
            due
        };
        if due {
            self.reload(store).await
        } else {
            Ok(self.current())
        }
    }

    /// Reads the newest schema from the store and holds it.
    pub async fn reload(&self, store: &dyn Store) -> Result<Arc<AppSchema>, StoreError> {
        let (version, json) = store.app_schema().await?;
        let held = self.current();
        if version == held.version {
            // Parsed once per version.
            return Ok(held);
        }
        let loaded = Arc::new(parse(version, json)?);
        let mut held = match self.current.write() {
            Ok(held) => held,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Never back to an older version (two reloads may cross).
        if loaded.version >= held.version {
            *held = loaded;
        }
        Ok(held.clone())
    }

    /// The version announced to realtime connections now and each newer
    /// one ([`tokio::sync::watch::Receiver::changed`] completes when one is
    /// announced).
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Announces `version` to realtime connections, if newer than the last
    /// announced (announcements only ever go up).
    fn announce(&self, version: u64) {
        self.versions.send_if_modified(|told| {
            let news = version > *told;
            if news {
                *told = version;
            }
            news
        });
    }

    /// Takes the version held at start as announced: connections opened
    /// later hear only of newer ones.
    pub fn announced_at_start(&self) {
        self.announce(self.current().version);
    }
}

/// Reads the stored schema every second while the node runs, so that a
/// schema applied through another node or by `ferry schema apply` is held
/// within a second even when no one writes, and announces a new version
/// to realtime connections once it has held it for [`ANNOUNCE_AFTER`]:
/// by then every node has read it too, so that the sync a connection makes
/// on hearing of it, through whichever node, is answered with it. One
/// small read a second; a failed read is tried again at the next tick.
pub fn watch(state: crate::state::AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(FRESH);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The newest version held, and since when.
        let mut newest: Option<(u64, Instant)> = None;
        loop {
            ticks.tick().await;
            let held = match state.app_schema.reload(state.store.as_ref()).await {
                Ok(held) => held.version,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the app schema; trying again");
                    continue;
                }
            };
            match newest {
                Some((version, since)) if version == held => {
                    if since.elapsed() >= ANNOUNCE_AFTER {
                        state.app_schema.announce(version);
                    }
                }
                _ => newest = Some((held, Instant::now())),
            }
        }
    })
}

/// How long a node holds a new version before announcing it: more than
/// the second every other node takes to read it.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(1500);

/// The newest schema stored, parsed (keys and types of a later Ferry
/// ignored: see [`Schema::parse_served`]).
pub async fn load(store: &dyn Store) -> Result<AppSchema, StoreError> {
    let (version, json) = store.app_schema().await?;
    parse(version, json)
}

fn parse(version: u64, json: Option<String>) -> Result<AppSchema, StoreError> {
    let schema = json
        .map(|json| {
            Schema::parse_served(&json).map_err(|e| {
                StoreError::Internal(format!(
                    "the stored app schema {version} is unreadable: {e}"
                ))
            })
        })
        .transpose()?;
    Ok(AppSchema { version, schema })
}

/// `GET /v1/schema`: the newest app schema, for any signed-in user (a
/// client checks its writes against it): `{"version": N, "schema": {...}}`,
/// `{"version": 0, "schema": null}` when none was applied. Read from the
/// database at most once a second per node, whoever asks (so asking
/// cannot load the database), and never behind the version the node's
/// sync answers named.
async fn get_schema(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    _caller: crate::auth::Caller,
) -> Result<axum::Json<serde_json::Value>, crate::error::ApiError> {
    let held = state.app_schema.fresh(state.store.as_ref()).await?;
    Ok(axum::Json(
        serde_json::json!({"version": held.version, "schema": held.schema}),
    ))
}

/// The routes of the app schema, under `/v1`.
pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new().route("/schema", axum::routing::get(get_schema))
}
