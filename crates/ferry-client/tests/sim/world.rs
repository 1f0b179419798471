//! The simulated world besides the network: the devices (replicas on
//! virtual clocks), the restartable server, and the model of what the
//! server must hold once everything has synced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ferry_client::{Clock, Query, Remote, Replica, ReplicaConfig};
use ferry_core::{Change, ClientId, Collection, Hlc, SpaceId};
use ferry_server::clock::ServerClock;
use ferry_server::testing::{Guard, Served};
use ferry_server::{AppState, Settings};
use serde_json::{Map, Value};

use crate::net::Net;

/// One device.
pub struct Device {
    pub name: ClientId,
    pub path: PathBuf,
    pub skew: Arc<AtomicI64>,
    pub replica: Replica,
    pub remote: Remote,
    pub away_until: usize,
    pub created: u64,
    pub cursor_seen: u64,
    pub hlc_seen: Option<Hlc>,
}

impl Device {
    pub fn open(
        name: &ClientId,
        path: &PathBuf,
        time: &Arc<AtomicU64>,
        skew: &Arc<AtomicI64>,
    ) -> Replica {
        let (time, skew) = (time.clone(), skew.clone());
        let config = ReplicaConfig {
            client_id: Some(name.clone()),
            clock: Clock::from_fn(move || {
                let now = time.load(Ordering::SeqCst) as i64 + skew.load(Ordering::SeqCst);
                now.max(0) as u64
            }),
            ..ReplicaConfig::default()
        };
        Replica::open(path, config).unwrap()
    }

    /// Checks that the replica's HLC did not go backwards.
    pub fn check_hlc(&mut self, seed: u64) {
        let now = self.replica.hlc().unwrap();
        if let Some(before) = &self.hlc_seen {
            assert!(
                now >= *before,
                "seed {seed}: {}'s HLC went from {before} back to {now}",
                self.name
            );
        }
        self.hlc_seen = Some(now);
    }

    pub fn check_cursor(&mut self, seed: u64, space: &SpaceId) {
        let now = self.replica.cursor(space).unwrap();
        assert!(
            now >= self.cursor_seen,
            "seed {seed}: {}'s cursor went from {} back to {now} after a full sync",
            self.name,
            self.cursor_seen
        );
        self.cursor_seen = now;
    }
}

/// The server, restartable on its database.
pub struct Server {
    pub guard: Guard,
    pub served: Option<Served>,
    pub time: Arc<AtomicU64>,
}

impl Server {
    pub async fn start(&mut self, net: &Net) {
        let store = self.guard.reopen().await;
        let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
        let mut state = AppState::new(store, settings).await.unwrap();
        let time = self.time.clone();
        state.clock = Arc::new(ServerClock::with_time(
            ClientId::new("server").unwrap(),
            move || time.load(Ordering::SeqCst),
        ));
        let served = Served::start(state).await;
        *net.upstream.lock().unwrap() = served.base.clone();
        self.served = Some(served);
    }

    pub fn served(&self) -> &Served {
        self.served.as_ref().unwrap()
    }
}

/// Every live record of a replica: id to field values.
pub fn contents(replica: &Replica, space: &SpaceId) -> BTreeMap<String, Map<String, Value>> {
    replica
        .list(space, &Collection::new("todos").unwrap(), &Query::new())
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.fields))
        .collect()
}

/// What the server must hold, from every write made: per record, each
/// field's value with the highest HLC, or nothing once a delete was made.
pub fn expected(writes: &[Change]) -> BTreeMap<String, BTreeMap<String, (Value, Hlc)>> {
    let mut fields: BTreeMap<String, BTreeMap<String, (Value, Hlc)>> = BTreeMap::new();
    let mut deleted = std::collections::BTreeSet::new();
    for change in writes {
        match change {
            Change::Delete { id, .. } => {
                deleted.insert(id.to_string());
            }
            Change::Upsert { id, fields: f, .. } => {
                let record = fields.entry(id.to_string()).or_default();
                for (name, fv) in f {
                    let slot = record
                        .entry(name.to_string())
                        .or_insert_with(|| (fv.value.clone(), fv.hlc.clone()));
                    if fv.hlc > slot.1 {
                        *slot = (fv.value.clone(), fv.hlc.clone());
                    }
                }
            }
        }
    }
    fields.retain(|id, _| !deleted.contains(id));
    fields
}
