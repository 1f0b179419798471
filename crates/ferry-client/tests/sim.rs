//! A seeded simulation of Ferry under faults: several native replicas
//! (Ferry's real `Replica`, merge and sync code) share a space on a real
//! server (real store, real handlers) through a proxy the test drives,
//! with every clock under the test's control.
//!
//! By the seed, one step at a time:
//! - the network drops requests, loses answers after the server applied
//!   them, delivers requests twice, delays them, and holds some back to
//!   deliver them later, after newer ones (reordering);
//! - the server crashes before a commit (the request never lands) or after
//!   it (the answer never leaves), and starts again on the same database;
//! - a client crashes (its replica is dropped and opened again from its
//!   file), sometimes right after stamping a batch it never sent;
//! - clients' clocks are skewed by up to 24 hours either way and jump;
//! - tombstones are compacted while clients are away, so they come back
//!   with cursors past the horizon;
//! - clients create, put, patch and delete records, and sync.
//!
//! Then the network heals, the clocks are set right, a day passes (so
//! writes stamped by clocks that ran a day ahead become acceptable), and
//! everyone syncs until quiet. Checked: every replica equals the server;
//! the server holds, for every field, the write with the highest HLC among
//! all the writes made, unless a delete of the record dominates, and no
//! deleted record exists anywhere; every `(client, batch)` got the same
//! answer every time, so it applied at most once; no cursor and no HLC ever
//! went backwards, across crashes and clock jumps; every outbox drained and
//! nothing was refused. A run is a pure function of its seed: the trace of
//! one (every operation, fault, status, cursor and HLC) is compared with a
//! second run of the same seed.
//!
//! `FERRY_SIM_SEED` (default 1) is the first seed and `FERRY_SIM_SEEDS`
//! (default 200) how many to run; a failure names its seed (kept in
//! `REGRESSIONS` once fixed), and
//! `FERRY_SIM_TRACE=1` writes each seed's trace under the target directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_client::{Clock, Query, Remote, Replica, ReplicaConfig, Token, sync_space};
use ferry_core::{Change, ClientId, Collection, Hlc, RecordId, SpaceId};
use ferry_server::clock::ServerClock;
use ferry_server::testing::{self, Guard, Served};
use ferry_server::{AppState, Settings};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Map, Value, json};

/// Seeds that once failed, each kept after its fix:
/// - 2: a replica whose clock ran a day ahead kept an edit of a record
///   deleted and compacted meanwhile; back with an expired cursor, it
///   resynced and then sent the edit, and the record came back. (A resync
///   now pulls before it sends, and drops changes to records the server
///   had and no longer has.)
/// - 34: a replica pulled the delete of a record it had pending edits of,
///   could not send them (clock skew), and sent them once the tombstone was
///   compacted, from a cursor past the horizon. (A pulled delete now drops
///   the pending changes to its record.)
/// - 176: a replica whose first batch reached the server unanswered sent
///   its later edits from cursor 0, which was always served, after the
///   record was deleted and compacted. (A first sync with changes waiting
///   now pulls first, pushes from cursor 0 below the horizon get `410`,
///   and compaction keeps each client's newest batch.)
const REGRESSIONS: &[u64] = &[2, 34, 176];

const CLIENTS: usize = 3;
const STEPS: usize = 160;
/// Where virtual time starts: 2026-05-28.
const T0: u64 = 1_780_000_000_000;
const HOUR: i64 = 3_600_000;

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
    held_back: u64,
    crash_before_commit: u64,
    crash_after_commit: u64,
    passed: u64,
    server_restarts: u64,
    client_crashes: u64,
    clock_jumps: u64,
    compactions: u64,
    resyncs: u64,
}

impl Faults {
    fn add(&mut self, o: &Faults) {
        self.dropped += o.dropped;
        self.answer_lost += o.answer_lost;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.held_back += o.held_back;
        self.crash_before_commit += o.crash_before_commit;
        self.crash_after_commit += o.crash_after_commit;
        self.passed += o.passed;
        self.server_restarts += o.server_restarts;
        self.client_crashes += o.client_crashes;
        self.clock_jumps += o.clock_jumps;
        self.compactions += o.compactions;
        self.resyncs += o.resyncs;
    }
}

/// A request as the proxy received it, to deliver (again) later.
#[derive(Clone)]
struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The network between the clients and the server.
struct Net {
    upstream: Mutex<String>,
    http: reqwest::Client,
    rng: Mutex<TestRng>,
    faulty: AtomicBool,
    faults: Mutex<Faults>,
    trace: Arc<Mutex<Vec<String>>>,
    held: Mutex<Vec<Request>>,
    /// The first answer to each `(client, batch)`: `applied` and the
    /// conflicts, which every later answer must repeat.
    answers: Mutex<HashMap<(String, String), Value>>,
    violations: Mutex<Vec<String>>,
    /// Set when a fault crashed the server; the step loop restarts it.
    crashed: AtomicBool,
}

impl Net {
    fn note(&self, line: String) {
        self.trace.lock().unwrap().push(line);
    }

    fn count(&self, f: fn(&mut Faults) -> &mut u64) {
        *f(&mut self.faults.lock().unwrap()) += 1;
    }

    /// Sends `req` to the server; records what the answer says of a batch.
    async fn forward(&self, why: &str, req: &Request) -> Response {
        let upstream = self.upstream.lock().unwrap().clone();
        let mut out = self
            .http
            .request(req.method.clone(), format!("{upstream}{}", req.path))
            .body(req.body.clone());
        for name in ["authorization", "content-type", "accept"] {
            if let Some(v) = req.headers.get(name) {
                out = out.header(name, v.clone());
            }
        }
        let Ok(res) = out.send().await else {
            self.note(format!("net {why} {} -> unreachable", req.path));
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let status = res.status();
        let kind = res.headers().get("content-type").cloned();
        let bytes = res.bytes().await.unwrap_or_default();
        self.check_answer(why, req, status, &bytes);
        let mut response = (status, bytes).into_response();
        if let Some(kind) = kind {
            response.headers_mut().insert("content-type", kind);
        }
        response
    }

    /// Traces the answer; a batch answered twice must be answered alike.
    fn check_answer(&self, why: &str, req: &Request, status: StatusCode, bytes: &[u8]) {
        let request: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let answer: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let batch = request["batch_id"].as_str().map(|b| {
            (
                request["client_id"].as_str().unwrap_or("").to_owned(),
                b.to_owned(),
            )
        });
        let mut line = format!(
            "net {why} {} {} cursor={} changes={} -> {}",
            req.method,
            req.path,
            request["cursor"],
            request["changes"].as_array().map_or(0, Vec::len),
            status.as_u16()
        );
        if status == StatusCode::OK {
            line.push_str(&format!(
                " applied={} conflicts={} pulled={} cursor={} hlc={}",
                answer["applied"],
                answer["conflicts"].as_array().map_or(0, Vec::len),
                answer["changes"].as_array().map_or(0, Vec::len),
                answer["cursor"],
                answer["hlc"]
            ));
            if let Some(batch) = batch {
                let outcome =
                    json!({"applied": answer["applied"], "conflicts": answer["conflicts"]});
                let mut answers = self.answers.lock().unwrap();
                match answers.get(&batch) {
                    Some(first) if *first != outcome => {
                        self.violations.lock().unwrap().push(format!(
                            "batch {batch:?} answered {first} first and {outcome} later"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        answers.insert(batch, outcome);
                    }
                }
            }
        } else {
            line.push_str(&format!(" {}", answer["error"]["code"]));
        }
        self.note(line);
    }

    /// Delivers the oldest request held back, if any.
    async fn deliver_held(&self) -> bool {
        let next = {
            let mut held = self.held.lock().unwrap();
            (!held.is_empty()).then(|| held.remove(0))
        };
        match next {
            Some(req) => {
                let _ = self.forward("late", &req).await;
                true
            }
            None => false,
        }
    }
}

/// What a lost request or answer looks like to the client: the connection
/// failed, retry later.
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
    let req = Request {
        method,
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers,
        body,
    };
    let draw = if net.faulty.load(Ordering::SeqCst) {
        below(&mut net.rng.lock().unwrap(), 100)
    } else {
        99
    };
    match draw {
        0..10 => {
            net.count(|f| &mut f.dropped);
            net.note(format!("net dropped {}", req.path));
            lost()
        }
        10..20 => {
            net.count(|f| &mut f.answer_lost);
            let _ = net.forward("answer-lost", &req).await;
            lost()
        }
        20..28 => {
            net.count(|f| &mut f.duplicated);
            let _ = net.forward("twice", &req).await;
            net.forward("again", &req).await
        }
        28..34 => {
            net.count(|f| &mut f.delayed);
            tokio::time::sleep(std::time::Duration::from_millis(1 + draw % 5)).await;
            net.forward("delayed", &req).await
        }
        34..40 => {
            net.count(|f| &mut f.held_back);
            net.note(format!("net held {}", req.path));
            net.held.lock().unwrap().push(req);
            lost()
        }
        40..42 => {
            net.count(|f| &mut f.crash_before_commit);
            net.note(format!("server crashes before {}", req.path));
            net.crashed.store(true, Ordering::SeqCst);
            lost()
        }
        42..44 => {
            net.count(|f| &mut f.crash_after_commit);
            let _ = net.forward("crash-after", &req).await;
            net.note("server crashes after answering".into());
            net.crashed.store(true, Ordering::SeqCst);
            lost()
        }
        _ => {
            net.count(|f| &mut f.passed);
            net.forward("ok", &req).await
        }
    }
}

/// One device.
struct Device {
    name: ClientId,
    path: PathBuf,
    skew: Arc<AtomicI64>,
    replica: Replica,
    remote: Remote,
    away_until: usize,
    created: u64,
    cursor_seen: u64,
    hlc_seen: Option<Hlc>,
}

impl Device {
    fn open(
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
    fn check_hlc(&mut self, seed: u64) {
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

    fn check_cursor(&mut self, seed: u64, space: &SpaceId) {
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
struct Server {
    guard: Guard,
    served: Option<Served>,
    time: Arc<AtomicU64>,
}

impl Server {
    async fn start(&mut self, net: &Net) {
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

    fn served(&self) -> &Served {
        self.served.as_ref().unwrap()
    }
}

/// Every live record of a replica: id to field values.
fn contents(replica: &Replica, space: &SpaceId) -> BTreeMap<String, Map<String, Value>> {
    replica
        .list(space, &Collection::new("todos").unwrap(), &Query::new())
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.fields))
        .collect()
}

/// What the server must hold, from every write made: per record, each
/// field's value with the highest HLC, or nothing once a delete was made.
fn expected(writes: &[Change]) -> BTreeMap<String, BTreeMap<String, (Value, Hlc)>> {
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

/// One run of `seed`: its trace and the faults it injected.
async fn one_seed(seed: u64) -> (Vec<String>, Faults) {
    let trace = Arc::new(Mutex::new(Vec::new()));
    let time = Arc::new(AtomicU64::new(T0));
    let (_, guard) = testing::fresh_store().await;
    let net = Arc::new(Net {
        upstream: Mutex::new(String::new()),
        http: reqwest::Client::new(),
        rng: Mutex::new(rng(seed ^ 0x5eed)),
        faulty: AtomicBool::new(true),
        faults: Mutex::new(Faults::default()),
        trace: trace.clone(),
        held: Mutex::new(Vec::new()),
        answers: Mutex::new(HashMap::new()),
        violations: Mutex::new(Vec::new()),
        crashed: AtomicBool::new(false),
    });
    let mut server = Server {
        guard,
        served: None,
        time: time.clone(),
    };
    server.start(&net).await;
    let app = axum::Router::new().fallback(proxy).with_state(net.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let proxy_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let token = server.served().token("alice");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/spaces", server.served().base))
        .bearer_auth(&token)
        .json(&json!({"id": "sim", "name": "sim"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let space = SpaceId::new("sim").unwrap();
    let todos = Collection::new("todos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut devices: Vec<Device> = (0..CLIENTS)
        .map(|k| {
            let name = ClientId::new(format!("c{k}")).unwrap();
            let path = dir.path().join(format!("c{k}.db"));
            let skew = Arc::new(AtomicI64::new(0));
            let replica = Device::open(&name, &path, &time, &skew);
            replica.track(&space).unwrap();
            Device {
                name,
                path,
                skew,
                replica,
                remote: Remote::new(&base, Arc::new(Token(token.clone()))).unwrap(),
                away_until: 0,
                created: 0,
                cursor_seen: 0,
                hlc_seen: None,
            }
        })
        .collect();

    let mut dice = rng(seed);
    let mut writes: Vec<Change> = Vec::new();
    let mut extra = Faults::default();
    let note = |line: String| trace.lock().unwrap().push(line);
    for step in 0..STEPS {
        time.fetch_add(1 + below(&mut dice, 40), Ordering::SeqCst);
        if below(&mut dice, 4) == 0 && net.deliver_held().await {
            note(format!("{step}: a held request arrived"));
        }
        let k = below(&mut dice, CLIENTS as u64) as usize;
        let d = &mut devices[k];
        let roll = below(&mut dice, 100);
        match roll {
            0..40 => {
                let live: Vec<String> = contents(&d.replica, &space).into_keys().collect();
                let pick = below(&mut dice, 10);
                let existing = (!live.is_empty() && pick < 7)
                    .then(|| live[below(&mut dice, live.len() as u64) as usize].clone());
                let result = match existing {
                    None => {
                        d.created += 1;
                        let id = RecordId::new(format!("{}-r{}", d.name, d.created)).unwrap();
                        let value = json!({"title": format!("{step}"), "n": step});
                        note(format!("{step}: {} creates {id}", d.name));
                        d.replica.put(&space, &todos, &id, value)
                    }
                    Some(key) => {
                        let id = RecordId::new(&key).unwrap();
                        match pick {
                            0..3 => {
                                note(format!("{step}: {} puts {id}", d.name));
                                let value = json!({"title": format!("put {step}")});
                                d.replica.put(&space, &todos, &id, value)
                            }
                            3..6 => {
                                note(format!("{step}: {} patches {id}", d.name));
                                let value = json!({"done": step % 2 == 0, "n": step});
                                d.replica.patch(&space, &todos, &id, value)
                            }
                            _ => {
                                note(format!("{step}: {} deletes {id}", d.name));
                                d.replica.delete(&space, &todos, &id)
                            }
                        }
                    }
                };
                result.unwrap_or_else(|e| panic!("seed {seed}: a local write failed: {e}"));
                let change = d.replica.pending_changes(&space).unwrap().pop().unwrap();
                note(format!(
                    "{step}: wrote {}",
                    serde_json::to_string(&change).unwrap()
                ));
                writes.push(change);
            }
            40..70 => {
                if step < d.away_until {
                    note(format!("{step}: {} is away", d.name));
                } else {
                    let result = sync_space(&d.replica, &d.remote, &space).await;
                    match &result {
                        Ok(report) => {
                            if report.resynced {
                                extra.resyncs += 1;
                            }
                            d.check_cursor(seed, &space);
                            note(format!("{step}: {} synced {report:?}", d.name));
                        }
                        Err(e) => note(format!("{step}: {} sync failed: {:?}", d.name, e.code())),
                    }
                }
            }
            70..76 => {
                // The app is killed: sometimes right after stamping a batch
                // it never got to send.
                if below(&mut dice, 2) == 0 {
                    let stamped = d.replica.next_batch(&space).unwrap();
                    note(format!(
                        "{step}: {} stamps {} changes",
                        d.name,
                        stamped.map_or(0, |b| b.changes.len())
                    ));
                }
                note(format!("{step}: {} crashes", d.name));
                extra.client_crashes += 1;
                let d = &mut devices[k];
                d.replica = Device::open(&d.name, &d.path, &time, &d.skew);
            }
            76..80 => {
                let jump = match below(&mut dice, 6) {
                    0 => -24 * HOUR,
                    1 => 24 * HOUR,
                    2 => -HOUR,
                    3 => 100_000,
                    4 => 0,
                    _ => below(&mut dice, 48 * HOUR as u64) as i64 - 24 * HOUR,
                };
                extra.clock_jumps += 1;
                note(format!("{step}: {}'s clock jumps to {jump} ms off", d.name));
                d.skew.store(jump, Ordering::SeqCst);
            }
            80..84 => {
                let steps = 5 + below(&mut dice, 40) as usize;
                note(format!("{step}: {} goes away for {steps} steps", d.name));
                d.away_until = step + steps;
            }
            84..87 => {
                // Tombstones are kept longer than any request takes to
                // arrive: whatever the network holds lands first.
                while net.deliver_held().await {}
                let cutoff = ferry_server::clock::wall_ms() + 1;
                let report = server.served().state.store.compact(cutoff).await.unwrap();
                extra.compactions += 1;
                let tombstones: u64 = report.spaces.iter().map(|s| s.tombstones).sum();
                note(format!(
                    "{step}: compaction dropped {tombstones} tombstones"
                ));
            }
            _ => {
                note(format!("{step}: the server restarts"));
                net.crashed.store(true, Ordering::SeqCst);
            }
        }
        if net.crashed.swap(false, Ordering::SeqCst) {
            extra.server_restarts += 1;
            drop(server.served.take());
            server.start(&net).await;
        }
        devices[k].check_hlc(seed);
    }

    // Heal: no more faults, clocks set right, a day later; everyone back.
    net.faulty.store(false, Ordering::SeqCst);
    while net.deliver_held().await {}
    time.fetch_add(25 * HOUR as u64, Ordering::SeqCst);
    note("healed".into());
    for d in &mut devices {
        d.skew.store(0, Ordering::SeqCst);
    }
    // Sync rounds until one moves nothing: each pulls the others' pushes.
    let mut quiet = false;
    for _ in 0..6 {
        let mut moved = 0;
        for d in &mut devices {
            let report = sync_space(&d.replica, &d.remote, &space)
                .await
                .unwrap_or_else(|e| {
                    panic!("seed {seed}: {} cannot sync after healing: {e}", d.name)
                });
            note(format!("{} synced {report:?}", d.name));
            moved += report.pushed + report.pulled;
            d.check_cursor(seed, &space);
            d.check_hlc(seed);
        }
        if moved == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "seed {seed}: syncing never went quiet");

    if std::env::var_os("FERRY_SIM_TRACE").is_some() {
        let path = format!("{}/sim-{seed}.trace", env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(&path, trace.lock().unwrap().join("\n")).unwrap();
        println!("seed {seed}: trace in {path}");
    }
    let violations = net.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");

    // The server: each field's highest write, no deleted record.
    let r = http
        .get(format!(
            "{}/v1/spaces/sim/collections/todos/records?limit=1000",
            server.served().base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    let on_server: BTreeMap<String, BTreeMap<String, (Value, Hlc)>> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let fields = r["fields"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, f)| {
                    let hlc: Hlc = f["hlc"].as_str().unwrap().parse().unwrap();
                    (name.clone(), (f["value"].clone(), hlc))
                })
                .collect();
            (r["id"].as_str().unwrap().to_owned(), fields)
        })
        .collect();
    let model = expected(&writes);
    if let Some(id) = on_server.keys().find(|id| !model.contains_key(*id)) {
        panic!("seed {seed}: {id} is on the server but was deleted (or never written)");
    }
    for (id, fields) in &model {
        assert_eq!(
            on_server.get(id),
            Some(fields),
            "seed {seed}: record {id} on the server is not the highest writes of each field"
        );
    }
    let server_values: BTreeMap<String, Map<String, Value>> = on_server
        .iter()
        .map(|(id, f)| {
            let values = f.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect();
            (id.clone(), values)
        })
        .collect();
    for d in &devices {
        assert_eq!(
            d.replica.pending().unwrap(),
            0,
            "seed {seed}: {}'s outbox",
            d.name
        );
        assert_eq!(
            d.replica.rejected().unwrap(),
            vec![],
            "seed {seed}: {} had changes refused",
            d.name
        );
        assert_eq!(
            contents(&d.replica, &space),
            server_values,
            "seed {seed}: {} differs from the server",
            d.name
        );
    }
    proxy_task.abort();
    let mut faults = net.faults.lock().unwrap().clone();
    faults.add(&extra);
    let trace = trace.lock().unwrap().clone();
    (trace, faults)
}

fn seeds() -> (u64, u64) {
    let first = std::env::var("FERRY_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64);
    let count = std::env::var("FERRY_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u64);
    (first, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_leave_every_replica_equal_to_the_server() {
    let (first, count) = seeds();
    let mut total = Faults::default();
    for seed in first..first + count {
        let (_, faults) = one_seed(seed).await;
        total.add(&faults);
    }
    let requests = total.dropped
        + total.answer_lost
        + total.duplicated
        + total.delayed
        + total.held_back
        + total.crash_before_commit
        + total.crash_after_commit
        + total.passed;
    println!(
        "simulation: seeds {first}..={}, {requests} requests through the network, {total:?}",
        first + count - 1
    );
    for (name, n) in [
        ("dropped", total.dropped),
        ("answer lost", total.answer_lost),
        ("duplicated", total.duplicated),
        ("held back", total.held_back),
        ("server crash before commit", total.crash_before_commit),
        ("server crash after commit", total.crash_after_commit),
        ("server restart", total.server_restarts),
        ("client crash", total.client_crashes),
        ("clock jump", total.clock_jumps),
        ("compaction", total.compactions),
        ("resync", total.resyncs),
    ] {
        assert!(
            n > 0 || count < 20,
            "the fault '{name}' never fired: {total:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_replays_the_same_trace() {
    for seed in [1u64, 2, 3, 4, 5] {
        let (first, _) = one_seed(seed).await;
        let (second, _) = one_seed(seed).await;
        assert!(
            first.len() > 100,
            "seed {seed}: a trace of {} lines",
            first.len()
        );
        if let Some(i) = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i))
        {
            panic!(
                "seed {seed}: the traces part at line {i}:\n  first:  {:?}\n  second: {:?}",
                first.get(i),
                second.get(i)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_that_once_failed_pass() {
    for &seed in REGRESSIONS {
        let (trace, faults) = one_seed(seed).await;
        assert!(
            faults.compactions > 0 && trace.len() > 100,
            "seed {seed} no longer compacts: {faults:?}"
        );
    }
}
