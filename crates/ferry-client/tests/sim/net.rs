//! The simulated network: a proxy between the replicas and the server
//! that drops, loses, duplicates, delays and holds back requests by the
//! seed, crashes the server before or after a commit, traces every request
//! and answer, and checks that a batch is answered alike every time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Value, json};

pub fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

pub fn below(rng: &mut TestRng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// Faults injected, by kind.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub dropped: u64,
    pub answer_lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub held_back: u64,
    pub crash_before_commit: u64,
    pub crash_after_commit: u64,
    pub passed: u64,
    pub server_restarts: u64,
    pub client_crashes: u64,
    pub clock_jumps: u64,
    pub compactions: u64,
    pub resyncs: u64,
    /// Conflicts the devices' inboxes hold in the end.
    pub conflicts: u64,
}

impl Faults {
    pub fn add(&mut self, o: &Faults) {
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
        self.conflicts += o.conflicts;
    }
}

/// A request as the proxy received it, to deliver (again) later.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The network between the clients and the server.
pub struct Net {
    pub upstream: Mutex<String>,
    pub http: reqwest::Client,
    pub rng: Mutex<TestRng>,
    pub faulty: AtomicBool,
    pub faults: Mutex<Faults>,
    pub trace: Arc<Mutex<Vec<String>>>,
    pub held: Mutex<Vec<Request>>,
    /// The first answer to each `(client, batch)`: `applied` and the
    /// conflicts, which every later answer must repeat.
    pub answers: Mutex<HashMap<(String, String), Value>>,
    pub violations: Mutex<Vec<String>>,
    /// Set when a fault crashed the server; the step loop restarts it.
    pub crashed: AtomicBool,
}

impl Net {
    pub fn note(&self, line: String) {
        self.trace.lock().unwrap().push(line);
    }

    pub fn count(&self, f: fn(&mut Faults) -> &mut u64) {
        *f(&mut self.faults.lock().unwrap()) += 1;
    }

    /// Sends `req` to the server; records what the answer says of a batch.
    pub async fn forward(&self, why: &str, req: &Request) -> Response {
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
    pub fn check_answer(&self, why: &str, req: &Request, status: StatusCode, bytes: &[u8]) {
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
    pub async fn deliver_held(&self) -> bool {
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
pub fn lost() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "").into_response()
}

pub async fn proxy(
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
