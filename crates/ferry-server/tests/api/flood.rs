//! A flood of malformed requests at a running server (127.0.0.1, port 0):
//! valid requests to every endpoint, each bent by one to three random
//! mutations (truncated, bytes changed, values of the wrong type or size,
//! paths and queries garbled, tokens forged, methods swapped), plus raw
//! bytes that are not HTTP at all. Not one may be answered with a 5xx, and
//! the server must still be healthy afterwards.
//!
//! Seeded and repeatable: `FERRY_FLOOD_SEED` picks the seed (default 1)
//! and `FERRY_FLOOD_REQUESTS` the number of requests (default 10,000); a
//! failure prints the seed and the requests that failed.

use std::fmt::Write as _;
use std::time::Duration;

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A request before and after mutation.
#[derive(Debug, Clone)]
struct Shot {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Dice(TestRng);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
    fn one<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.0.next_u64() as u8).collect()
    }
}

const HLC: &str = "001763798400000:00000:c";

/// Valid requests, one or more per endpoint, as a member of `team` sends
/// them.
fn templates(token: &str, api_token: &str) -> Vec<Shot> {
    let json = |method: &str, path: &str, body: Value| Shot {
        method: method.into(),
        path: path.into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    let get = |path: &str| json("GET", path, Value::Null).without_body();
    let upsert = json!({"op": "upsert", "collection": "todos", "id": "t-1",
                        "fields": {"title": {"value": "milk", "hlc": HLC}}});
    let delete = json!({"op": "delete", "collection": "todos", "id": "t-2", "hlc": HLC});
    // Changes with bases, as Ferry's clients send them, for the bending.
    let seen = json!({"op": "upsert", "collection": "todos", "id": "t-1",
                      "fields": {"title": {"value": "eggs", "hlc": HLC}},
                      "base": {"title": HLC}});
    let seen_delete = json!({"op": "delete", "collection": "todos", "id": "t-1", "hlc": HLC,
                             "base": {"title": HLC, "done": null}});
    let with_api_token = |mut shot: Shot| {
        shot.headers.retain(|(k, _)| k != "authorization");
        shot.with_header("authorization", &format!("Bearer {api_token}"))
    };
    vec![
        json(
            "POST",
            "/v1/tokens",
            json!({"name": "ext", "spaces": ["team"], "access": "write",
                                          "server_fields": false, "expires_in": 3600}),
        ),
        get("/v1/tokens"),
        json("DELETE", "/v1/tokens/AAAAAAAAAAAAAAAAAAAAAA", Value::Null).without_body(),
        with_api_token(get("/v1/spaces/team/changes?cursor=0")),
        with_api_token(json(
            "POST",
            "/v1/spaces/team/sync",
            json!({"client_id": "c9", "batch_id": "b9", "cursor": 0, "changes": [upsert.clone()]}),
        )),
        with_api_token(json(
            "PATCH",
            "/v1/spaces/team/collections/todos/records/t-9",
            json!({"fields": {"title": "x"}}),
        )),
        with_api_token(get("/v1/me")),
        get("/v1/me"),
        get("/v1/schema"),
        get("/v1/spaces"),
        json(
            "POST",
            "/v1/spaces",
            json!({"id": "flood", "name": "Flood"}),
        ),
        json(
            "POST",
            "/v1/spaces/team/sync",
            json!({"client_id": "c1", "batch_id": "b1", "cursor": 0, "limit": 10,
                   "changes": [upsert, delete]}),
        ),
        json(
            "POST",
            "/v1/spaces/team/sync",
            json!({"client_id": "c1", "cursor": 0, "changes": []}),
        ),
        json(
            "POST",
            "/v1/spaces/team/sync",
            json!({"client_id": "c2", "batch_id": "b2", "cursor": 0, "conflict_cursor": 3,
                   "changes": [seen, seen_delete]}),
        ),
        get("/v1/spaces/team/changes?cursor=0&limit=10&collections=todos"),
        get("/v1/spaces/team/changes?cursor=0&client_id=c1&conflict_cursor=2"),
        get("/v1/spaces/team/members"),
        json(
            "PUT",
            "/v1/spaces/team/members/bob",
            json!({"role": "editor"}),
        ),
        json("DELETE", "/v1/spaces/team/members/bob", Value::Null).without_body(),
        json(
            "POST",
            "/v1/spaces/team/invites",
            json!({"email": "carol@example.com", "role": "viewer"}),
        ),
        get("/v1/spaces/team/collections/todos/records?limit=5&after=t-0"),
        get("/v1/spaces/team/collections/todos/records/t-1"),
        json(
            "PUT",
            "/v1/spaces/team/collections/todos/records/t-1",
            json!({"fields": {"title": "milk", "done": false}}),
        ),
        json(
            "PATCH",
            "/v1/spaces/team/collections/todos/records/t-1",
            json!({"fields": {"done": true}}),
        ),
        json(
            "DELETE",
            "/v1/spaces/team/collections/todos/records/t-1",
            Value::Null,
        )
        .without_body(),
        get("/v1/spaces/team/stream"),
        get("/v1/ws"),
        // Files: uploads (whose bytes the bending mangles, so that the hash
        // rarely matches), ranges, a delete.
        json("PUT", "/v1/spaces/team/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", json!({"bytes": "x"}))
            .with_header("ferry-file-name", "a%20b.txt"),
        // The rest of an upload (the header bent too).
        json("PUT", "/v1/spaces/team/files/0000000000000000000000000000000000000000000000000000000000000001", json!({"bytes": "x"}))
            .with_header("content-range", "bytes 3-14/15"),
        get("/v1/spaces/team/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").with_header("range", "bytes=0-3"),
        json("HEAD", "/v1/spaces/team/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Value::Null).without_body(),
        json("DELETE", "/v1/spaces/team/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Value::Null).without_body(),
        json(
            "POST",
            "/v1/auth/magic-link",
            json!({"email": "dora@example.com"}),
        ),
        json("POST", "/v1/auth/verify", json!({"token": "abc"})),
        json("POST", "/v1/auth/refresh", json!({"refresh_token": "abc"})),
        json("POST", "/v1/auth/logout", json!({"refresh_token": "abc"})),
        json(
            "POST",
            "/v1/billing/webhooks/stripe",
            json!({"id": "evt_1", "type": "customer.subscription.updated",
                   "data": {"object": {"customer": "cus_1", "status": "active"}}}),
        )
        .with_header("stripe-signature", "t=1763798400,v1=00ff"),
        json(
            "POST",
            "/v1/billing/webhooks/lemonsqueezy",
            json!({"meta": {"event_name": "subscription_created"}, "data": {"attributes": {}}}),
        )
        .with_header("x-signature", "00ff"),
        get("/.well-known/jwks.json"),
        get("/health"),
        get("/metrics"),
        get("/"),
        get("/auth/magic-link"),
        get("/app/app.js"),
        get("/react"),
        get("/favicon.ico"),
        get("/.env"),
        get("/assets/app.js"),
        get("/.well-known/assetlinks.json"),
    ]
}

impl Shot {
    fn without_body(mut self) -> Shot {
        self.body.clear();
        self.headers.retain(|(k, _)| k != "content-type");
        self
    }
    fn with_header(mut self, name: &str, value: &str) -> Shot {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Values of the wrong type, size or shape.
fn odd_value(dice: &mut Dice) -> Value {
    match dice.below(12) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1e308),
        3 => json!(u64::MAX),
        4 => json!("x".repeat(dice.below(300_000))),
        5 => json!([]),
        6 => json!({}),
        7 => json!("\u{0}\u{ffff}/../%00"),
        8 => json!(true),
        9 => {
            let depth = 1 + dice.below(200);
            serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth)))
                .unwrap_or(Value::Null)
        }
        10 => json!(HLC.replace('0', "9")),
        _ => json!("not-an-hlc"),
    }
}

/// Replaces one value somewhere in `v` with an odd one.
fn bend_json(v: &mut Value, dice: &mut Dice) {
    let children = match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if children == 0 || dice.below(3) == 0 {
        *v = odd_value(dice);
        return;
    }
    let k = dice.below(children);
    match v {
        Value::Object(m) => {
            if dice.below(4) == 0 {
                m.insert(format!("extra{k}"), odd_value(dice));
            } else if let Some((_, child)) = m.iter_mut().nth(k) {
                bend_json(child, dice);
            }
        }
        Value::Array(a) => bend_json(&mut a[k], dice),
        _ => {}
    }
}

const SEGMENTS: &[&str] = &[
    "",
    "..",
    "%00",
    "%ff%fe",
    "a%2Fb",
    "user:alice",
    "x y",
    "%E2%80%AE",
    "team/../team",
    "💥",
    ".env",
    "%2eenv",
    ".git",
];

/// A forged or broken bearer token.
fn odd_token(dice: &mut Dice, real: &str) -> String {
    match dice.below(9) {
        7 => format!("Bearer fyt_{}_{}", "A".repeat(22), "B".repeat(43)),
        8 => format!(
            "Bearer fyt_{}",
            String::from_utf8_lossy(&dice.bytes(66)).replace(['\r', '\n'], "")
        ),
        0 => String::new(),
        1 => "Bearer".into(),
        2 => format!("Bearer {}", &real[..dice.below(real.len())]),
        3 => {
            // Same header and claims, signature of another key.
            let cut = real.rfind('.').unwrap_or(0);
            format!("Bearer {}.AAAA", &real[..cut])
        }
        4 => "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.".into(),
        5 => format!("Basic {real}"),
        _ => format!(
            "Bearer {}",
            String::from_utf8_lossy(&dice.bytes(40)).replace(['\r', '\n'], "")
        ),
    }
}

fn mutate(shot: &mut Shot, dice: &mut Dice, token: &str) -> &'static str {
    match dice.below(10) {
        0 => {
            let keep = dice.below(shot.body.len() + 1);
            shot.body.truncate(keep);
            "truncated body"
        }
        1 => {
            for _ in 0..1 + dice.below(8) {
                if !shot.body.is_empty() {
                    let at = dice.below(shot.body.len());
                    shot.body[at] = dice.bytes(1)[0];
                }
            }
            "bytes changed"
        }
        2 | 3 => {
            let mut v: Value = serde_json::from_slice(&shot.body).unwrap_or(json!({}));
            bend_json(&mut v, dice);
            shot.body = serde_json::to_vec(&v).unwrap_or_default();
            "value bent"
        }
        4 => {
            let mut parts: Vec<String> = shot.path.split('/').map(str::to_owned).collect();
            let at = 1 + dice.below(parts.len().saturating_sub(1).max(1));
            if at < parts.len() {
                parts[at] = if dice.below(5) == 0 {
                    "a".repeat(dice.below(5000))
                } else {
                    (*dice.one(SEGMENTS)).to_owned()
                };
            }
            shot.path = parts.join("/");
            "path garbled"
        }
        5 => {
            let q = match dice.below(5) {
                0 => "cursor=-1".to_owned(),
                1 => "cursor=18446744073709551616&limit=0".to_owned(),
                2 => "limit=abc&collections=,,,&conflict_cursor=-3".to_owned(),
                3 => format!("collections={}", "c,".repeat(dice.below(2000))),
                4 if dice.below(2) == 0 => format!("client_id={}", "c".repeat(dice.below(300))),
                _ => "access_token=x&unknown=%zz".to_owned(),
            };
            let base = shot.path.split('?').next().unwrap_or("/").to_owned();
            shot.path = format!("{base}?{q}");
            "query garbled"
        }
        6 if dice.below(4) == 0 => {
            let value = match dice.below(4) {
                0 => "not-an-address".to_owned(),
                1 => "1.2.3.4, , ::ffff:10.0.0.1, 999.1.1.1".to_owned(),
                2 => "203.0.113.7, ".repeat(dice.below(2000)),
                _ => "127.0.0.1".to_owned(),
            };
            shot.headers.push(("x-forwarded-for".into(), value));
            "forwarded-for forged"
        }
        6 => {
            let forged = odd_token(dice, token);
            shot.headers.retain(|(k, _)| k != "authorization");
            if !forged.is_empty() {
                shot.headers.push(("authorization".into(), forged));
            }
            "token forged"
        }
        7 if dice.below(3) == 0 => {
            // HTTP lets a client invent methods of any length; each must
            // not become something the server keeps (a metric label).
            let n = 1 + dice.below(20_000);
            shot.method = format!("X{}", "Q".repeat(n));
            "method invented"
        }
        7 => {
            shot.method = (*dice
                .one(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]))
            .to_owned();
            "method swapped"
        }
        8 => {
            let kind = dice.one(&[
                "text/plain",
                "application/json; charset=latin1",
                "multipart/form-data",
                "",
            ]);
            shot.headers.retain(|(k, _)| k != "content-type");
            shot.headers
                .push(("content-type".into(), (*kind).to_owned()));
            "content type changed"
        }
        _ => {
            if dice.below(50) == 0 {
                // Past the body limit.
                shot.body = vec![b'['; 10 * 1024 * 1024 + 1 + dice.below(1024)];
                "oversized body"
            } else {
                let mut v: Value = serde_json::from_slice(&shot.body).unwrap_or(json!({}));
                if let Some(changes) = v.get_mut("changes").and_then(Value::as_array_mut) {
                    let one = changes.first().cloned().unwrap_or(Value::Null);
                    let n = dice.below(2000);
                    changes.extend(std::iter::repeat_n(one, n));
                } else {
                    v = json!({"fields": {"big": "y".repeat(dice.below(1_200_000))}});
                }
                shot.body = serde_json::to_vec(&v).unwrap_or_default();
                "large body"
            }
        }
    }
}

/// Bytes that are not a well-formed HTTP request, on a raw socket; the
/// status line of the answer, if any.
async fn raw(addr: &str, dice: &mut Dice) -> Option<String> {
    let bytes = match dice.below(4) {
        0 => {
            let n = 1 + dice.below(2000);
            dice.bytes(n)
        }
        1 => b"POST /v1/spaces/team/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"cl"
            .to_vec(),
        2 => format!(
            "GET /v1/me HTTP/1.1\r\nHost: x\r\n{}: y\r\n\r\n",
            "h".repeat(dice.below(100_000))
        )
        .into_bytes(),
        _ => b"GET /v1/me HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\nzz\r\n".to_vec(),
    };
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = socket.write_all(&bytes).await;
    let _ = socket.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().map(str::to_owned)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn a_flood_of_malformed_requests_gets_no_5xx() {
    let seed = env_number("FERRY_FLOOD_SEED", 1);
    let total = env_number("FERRY_FLOOD_REQUESTS", 10_000) as usize;
    // An app's own build, hidden files and all, and a proxy trusted for
    // the client's address: the flood reaches the file server and the
    // forwarded-for reading too.
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("index.html"), "<p>app</p>").unwrap();
    std::fs::write(app.path().join(".env"), "CANARY=flood").unwrap();
    std::fs::create_dir(app.path().join("assets")).unwrap();
    std::fs::write(app.path().join("assets/app.js"), "1").unwrap();
    let dir = app.path().to_owned();
    let api = Api::configured(move |s| {
        s.app_dir = Some(dir);
        s.trusted_proxies = "127.0.0.1".parse().unwrap();
    })
    .await;
    api.space("alice", "team").await;
    // Its todos are mirrored into a table (docs/tables.md): every push the
    // flood lands writes rows too, and no value reaches the table as a 5xx.
    super::tables::apply(
        &api,
        r#"{"collections": {"todos": {"table": "todos", "fields": {
            "title": {"type": "string"}, "done": {"type": "boolean"},
            "n": {"type": "integer"}, "at": {"type": "timestamp"},
            "tags": {"type": "array", "items": "string"}, "meta": {"type": "json"}}}}}"#,
    )
    .await
    .unwrap();
    let served = api.serve().await;
    let token = api.token("alice");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut dice = Dice(TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let api_token = super::tokens::token(
        &api,
        "alice",
        json!({"name": "flood", "spaces": ["team"], "access": "write"}),
    )
    .await;
    let templates = templates(&token, &api_token);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let addr = served.base.trim_start_matches("http://").to_owned();

    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut failures = String::new();
    let mut failed = 0;
    for i in 0..total {
        if dice.below(50) == 0 {
            *kinds.entry("raw bytes").or_default() += 1;
            if let Some(line) = raw(&addr, &mut dice).await
                && line.starts_with("HTTP/1.1 5")
            {
                failed += 1;
                let _ = writeln!(failures, "#{i} raw bytes: {line}");
            }
            continue;
        }
        let mut shot = dice.one(&templates).clone();
        for _ in 0..1 + dice.below(3) {
            let kind = mutate(&mut shot, &mut dice, &token);
            *kinds.entry(kind).or_default() += 1;
        }
        let Ok(method) = reqwest::Method::from_bytes(shot.method.as_bytes()) else {
            continue;
        };
        let mut req = http
            .request(method, format!("{}{}", served.base, shot.path))
            .body(shot.body.clone());
        for (k, v) in &shot.headers {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(v) {
                req = req.header(k.as_str(), value);
            }
        }
        let status = match req.send().await {
            // Streams (SSE) stay open: the status is what counts, but for
            // hidden files, whose answer must not hold them.
            Ok(response) if shot.path.contains("env") => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if body.contains("CANARY") {
                    failed += 1;
                    let _ = writeln!(failures, "#{i} {} served a hidden file", shot.path);
                }
                status
            }
            Ok(response) => response.status().as_u16(),
            Err(e) if e.is_builder() => continue,
            Err(e) => {
                failed += 1;
                let _ = writeln!(
                    failures,
                    "#{i} {} {}: no answer: {e}",
                    shot.method, shot.path
                );
                continue;
            }
        };
        *statuses.entry(status).or_default() += 1;
        if status >= 500 {
            failed += 1;
            if failed <= 20 {
                let body = String::from_utf8_lossy(&shot.body);
                let _ = writeln!(
                    failures,
                    "#{i} {} {} -> {status}; body {:.300}",
                    shot.method, shot.path, body
                );
            }
        }
    }
    let health = http
        .get(format!("{}/health", served.base))
        .send()
        .await
        .unwrap();
    println!("flood: seed {seed}, {total} requests; mutations {kinds:?}; answers {statuses:?}");
    assert_eq!(
        failed, 0,
        "seed {seed}: {failed} requests failed:\n{failures}"
    );
    assert_eq!(health.status(), 200, "the server is not healthy afterwards");
    // Invented methods left one label behind, whatever their number.
    let metrics = http
        .get(format!("{}/metrics", served.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("QQQQ"),
        "an invented method became a label"
    );
    assert!(
        metrics.len() < 256 * 1024,
        "the metrics grew to {} bytes",
        metrics.len()
    );
    assert!(
        statuses.keys().any(|s| *s == 200) && statuses.keys().any(|s| (400..500).contains(s)),
        "the flood never reached a handler or never was refused: {statuses:?}"
    );
}
