//! What the tests against a real server share: a server on a socket
//! (127.0.0.1, port 0) over the store `FERRY_TEST_BACKEND` names,
//! replicas in a temporary directory, and short names.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ferry_client::{Remote, Replica, ReplicaConfig, Token};
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{self, Guard, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::{Map, Value};

/// A server over a store that outlives it.
pub async fn start(store: Arc<dyn Store>) -> Served {
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    Served::start(AppState::new(store, settings).await.unwrap()).await
}

pub fn remote_for(server: &Served, user: &str) -> Remote {
    Remote::new(&server.base, Arc::new(Token(server.token(user)))).unwrap()
}

pub struct Setup {
    pub server: Served,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    _guard: Guard,
}

pub async fn setup() -> Setup {
    let (store, guard) = testing::fresh_store().await;
    Setup {
        server: start(store.clone()).await,
        store,
        dir: tempfile::tempdir().unwrap(),
        _guard: guard,
    }
}

impl Setup {
    pub fn replica(&self, name: &str) -> Replica {
        Replica::open(self.dir.path().join(name), ReplicaConfig::default()).unwrap()
    }
}

pub fn space(s: &str) -> SpaceId {
    SpaceId::new(s).unwrap()
}
pub fn todos() -> Collection {
    Collection::new("todos").unwrap()
}
pub fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}
pub fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}
