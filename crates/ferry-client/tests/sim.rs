//! A seeded simulation: several native replicas (Ferry's real `Replica`,
//! merge and sync code) share a space on a real server, through a proxy
//! that, by the seed, drops requests, loses answers after the server
//! applied them, delivers requests twice and delays them. The clients write,
//! patch and delete a few records at random and sync now and then. Then
//! the network heals, everyone syncs until quiet, and: every replica equals
//! the server, every outbox is drained, no deleted record came back, and no
//! replica's cursor ever went backwards.
//!
//! `FERRY_SIM_SEED` (default 1) is the first seed and `FERRY_SIM_SEEDS`
//! (default 200) how many to run; a failure names its seed. Clients act one
//! at a time in the order the seed says, so a seed's operations and faults
//! are the same on every run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_client::{Query, Remote, Replica, ReplicaConfig, Token, sync_space};
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Map, Value, json};

fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

fn below(rng: &mut TestRng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// Faults injected, by kind.
#[derive(Debug, Default, Clone)]
struct Faults {
    dropped: u64,
    answer_lost: u64,
    duplicated: u64,
    delayed: u64,
    passed: u64,
}

struct Net {
    upstream: String,
    http: reqwest::Client,
    rng: Mutex<TestRng>,
    faulty: Mutex<bool>,
    faults: Mutex<Faults>,
}

impl Net {
    async fn forward(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Response {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.upstream))
            .body(body.clone());
        for name in ["authorization", "content-type", "accept"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.clone());
            }
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                let kind = res.headers().get("content-type").cloned();
                let bytes = res.bytes().await.unwrap_or_default();
                let mut response = (status, bytes).into_response();
                if let Some(kind) = kind {
                    response.headers_mut().insert("content-type", kind);
                }
                response
            }
            Err(_) => StatusCode::BAD_GATEWAY.into_response(),
        }
    }
}

/// What a lost request or answer looks like to the client: the
/// connection failed, retry later.
fn lost() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "").into_response()
}

async fn proxy(
    State(net): State<Arc<Net>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let draw = if *net.faulty.lock().unwrap() {
        below(&mut net.rng.lock().unwrap(), 100)
    } else {
        99
    };
    let count = |f: fn(&mut Faults) -> &mut u64| *f(&mut net.faults.lock().unwrap()) += 1;
    match draw {
        0..15 => {
            count(|f| &mut f.dropped);
            lost()
        }
        15..30 => {
            count(|f| &mut f.answer_lost);
            let _ = net.forward(&method, &uri, &headers, &body).await;
            lost()
        }
        30..40 => {
            count(|f| &mut f.duplicated);
            let _ = net.forward(&method, &uri, &headers, &body).await;
            net.forward(&method, &uri, &headers, &body).await
        }
        40..50 => {
            count(|f| &mut f.delayed);
            tokio::time::sleep(std::time::Duration::from_millis(1 + draw % 7)).await;
            net.forward(&method, &uri, &headers, &body).await
        }
        _ => {
            count(|f| &mut f.passed);
            net.forward(&method, &uri, &headers, &body).await
        }
    }
}

const KEYS: u64 = 12;
const CLIENTS: usize = 3;
const STEPS: usize = 120;

/// Every live record of a replica: id to field values.
fn contents(replica: &Replica, space: &SpaceId) -> BTreeMap<String, Map<String, Value>> {
    replica
        .list(space, &Collection::new("todos").unwrap(), &Query::new())
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.fields))
        .collect()
}

/// A local write went through, or was refused because this replica
/// already knows the record deleted (deletes are final).
fn wrote(seed: u64, result: ferry_client::Result<()>) {
    match result {
        Ok(()) => {}
        Err(ferry_client::Error::Invalid(m)) if m.contains("deletes are final") => {}
        Err(e) => panic!("seed {seed}: a local write failed: {e}"),
    }
}

async fn one_seed(seed: u64) -> Faults {
    let (store, _guard) = testing::fresh_store().await;
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    let served = Served::start(AppState::new(store, settings).await.unwrap()).await;
    let net = Arc::new(Net {
        upstream: served.base.clone(),
        http: reqwest::Client::new(),
        rng: Mutex::new(rng(seed ^ 0x5eed)),
        faulty: Mutex::new(true),
        faults: Mutex::new(Faults::default()),
    });
    let app = axum::Router::new().fallback(proxy).with_state(net.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let token = served.token("alice");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/spaces", served.base))
        .bearer_auth(&token)
        .json(&json!({"id": "sim", "name": "sim"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let space = SpaceId::new("sim").unwrap();
    let todos = Collection::new("todos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clients: Vec<(Replica, Remote)> = (0..CLIENTS)
        .map(|k| {
            let replica = Replica::open(
                dir.path().join(format!("c{k}.db")),
                ReplicaConfig::default(),
            )
            .unwrap();
            replica.track(&space).unwrap();
            (
                replica,
                Remote::new(&base, Arc::new(Token(token.clone()))).unwrap(),
            )
        })
        .collect();

    let mut dice = rng(seed);
    let mut deleted: HashSet<String> = HashSet::new();
    let mut cursors: HashMap<usize, u64> = HashMap::new();
    let check_cursor = |k: usize, replica: &Replica, cursors: &mut HashMap<usize, u64>| {
        let now = replica.cursor(&space).unwrap();
        let before = cursors.insert(k, now).unwrap_or(0);
        assert!(
            now >= before,
            "seed {seed}: client {k}'s cursor went from {before} back to {now}"
        );
    };
    for step in 0..STEPS {
        let k = below(&mut dice, CLIENTS as u64) as usize;
        let (replica, remote) = &clients[k];
        let key = format!("k{}", below(&mut dice, KEYS));
        let id = RecordId::new(&key).unwrap();
        match below(&mut dice, 10) {
            0..4 => {
                let value = json!({"title": format!("s{seed}-{step}"), "n": step});
                wrote(seed, replica.put(&space, &todos, &id, value));
            }
            4..6 => {
                let value = json!({"done": step % 2 == 0});
                wrote(seed, replica.patch(&space, &todos, &id, value));
            }
            6 => {
                replica.delete(&space, &todos, &id).unwrap();
                deleted.insert(key);
            }
            _ => {
                if sync_space(replica, remote, &space).await.is_ok() {
                    check_cursor(k, replica, &mut cursors);
                }
            }
        }
    }

    // Heal, and sync until quiet: twice round, so everyone pulls the last
    // pushes of the others.
    *net.faulty.lock().unwrap() = false;
    for _ in 0..2 {
        for (k, (replica, remote)) in clients.iter().enumerate() {
            sync_space(replica, remote, &space)
                .await
                .unwrap_or_else(|e| {
                    panic!("seed {seed}: client {k} cannot sync after healing: {e}")
                });
            check_cursor(k, replica, &mut cursors);
        }
    }

    let reference = contents(&clients[0].0, &space);
    for (k, (replica, _)) in clients.iter().enumerate() {
        assert_eq!(
            replica.pending().unwrap(),
            0,
            "seed {seed}: client {k}'s outbox"
        );
        assert_eq!(
            contents(replica, &space),
            reference,
            "seed {seed}: client {k} differs from client 0"
        );
    }
    // The server holds the same.
    let r = http
        .get(format!(
            "{}/v1/spaces/sim/collections/todos/records?limit=1000",
            served.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    let server: BTreeMap<String, Map<String, Value>> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let fields = r["fields"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, f)| (name.clone(), f["value"].clone()))
                .collect();
            (r["id"].as_str().unwrap().to_owned(), fields)
        })
        .collect();
    assert_eq!(
        server, reference,
        "seed {seed}: the replicas differ from the server"
    );
    for key in &deleted {
        assert!(
            !reference.contains_key(key),
            "seed {seed}: deleted {key} came back"
        );
    }
    net.faults.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_leave_every_replica_equal_to_the_server() {
    let first = std::env::var("FERRY_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64);
    let seeds = std::env::var("FERRY_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u64);
    let mut total = Faults::default();
    for seed in first..first + seeds {
        let f = one_seed(seed).await;
        total.dropped += f.dropped;
        total.answer_lost += f.answer_lost;
        total.duplicated += f.duplicated;
        total.delayed += f.delayed;
        total.passed += f.passed;
    }
    println!(
        "simulation: seeds {first}..{}, faults {total:?}",
        first + seeds
    );
    assert!(
        total.answer_lost > 0 && total.duplicated > 0 && total.dropped > 0,
        "the faults never fired: {total:?}"
    );
}
