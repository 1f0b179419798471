//! Webhooks (docs/server-rules.md#webhooks) against a real HTTP server in
//! the test that checks each delivery's signature: every commit's records,
//! in order per space, with the writer; retried while the endpoint fails,
//! a dead letter past the retry window, replayed on demand; filters; what
//! was not delivered survives a restart; on PostgreSQL, two nodes deliver
//! each commit once, and a node stopped mid-delivery leaves it to another.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as Held;
use axum::http::HeaderMap;
use ferry_server::store::webhooks::Endpoint;
use ferry_server::webhooks::sign;
use ferry_server::{AppState, Settings};

use super::*;

const SECRET: &str = "whsec-test-0123456789abcdef";

/// What the receiver got: the delivery's body, and whether its signature
/// held.
#[derive(Debug, Clone)]
struct Got {
    body: Value,
    signed: bool,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Got>>,
    /// Answer 500 to this many requests.
    fail: AtomicU32,
    /// Answer nothing until released.
    hang: AtomicBool,
    release: tokio::sync::Notify,
    /// Requests that arrived, answered or not.
    arrived: AtomicU32,
}

async fn receive(
    Held(r): Held<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.arrived.fetch_add(1, Ordering::SeqCst);
    if r.hang.load(Ordering::SeqCst) {
        r.release.notified().await;
    }
    let header = headers
        .get(sign::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signed = sign::verify(header, SECRET, &body, wall_ms() / 1000, 300);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if r.fail.load(Ordering::SeqCst) > 0 {
        r.fail.fetch_sub(1, Ordering::SeqCst);
        r.got.lock().unwrap().push(Got { body, signed });
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.got.lock().unwrap().push(Got { body, signed });
    StatusCode::OK
}

async fn moved() -> (StatusCode, [(axum::http::HeaderName, &'static str); 1]) {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(axum::http::header::LOCATION, "/hook")],
    )
}

/// A receiving server on 127.0.0.1, port 0; its URL.
async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/moved", axum::routing::post(moved))
        .route("/hook", axum::routing::post(receive).get(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, url)
}

/// Quick timings for tests.
fn quick(s: &mut Settings) {
    s.webhooks.poll = Duration::from_millis(50);
    s.webhooks.first_retry = Duration::from_millis(50);
    s.webhooks.max_retry = Duration::from_millis(200);
    s.webhooks.lease = Duration::from_secs(2);
}

fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        id: "backend".into(),
        url: url.into(),
        secrets: vec!["an-older-secret-0123456789".into(), SECRET.into()],
        spaces: None,
        collections: None,
    }
}

async fn write(api: &Api, user: &str, n: u64) {
    let client = format!("{user}-phone");
    let r = api
        .sync(
            user,
            "team",
            push(
                &client,
                &format!("b{n}"),
                0,
                vec![up(&format!("t{n}"), "title", json!(n), &hlc(n, &client))],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// Waits until `check` holds of what the receiver got.
async fn until(r: &Receiver, what: &str, check: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    for _ in 0..200 {
        let got = r.got.lock().unwrap().clone();
        if check(&got) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: got {:?}", r.got.lock().unwrap());
}

/// Every record delivered (accepted ones), by seq, in delivery order.
fn delivered(got: &[Got]) -> Vec<(u64, String)> {
    got.iter()
        .flat_map(|g| g.body["records"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_commit_is_delivered_signed_in_order_with_its_writer() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    api.add("alice", "team", "bob", "editor").await;
    write(&api, "alice", 1).await;
    // Added now: what was committed before is not its news.
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    let _served = api.serve().await;
    for n in 2..=6 {
        write(&api, if n % 2 == 0 { "bob" } else { "alice" }, n).await;
    }
    let got = until(&r, "five records", |g| delivered(g).len() >= 5).await;
    assert!(
        got.iter().all(|g| g.signed),
        "a delivery's signature did not hold"
    );
    let seqs: Vec<u64> = delivered(&got).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        vec![2, 3, 4, 5, 6],
        "in order, each once, none from before"
    );
    // Contiguous ranges, each delivery with an id of its own.
    let mut next = 2;
    for g in &got {
        assert_eq!(g.body["seq_from"], next, "{}", g.body);
        next = g.body["seq_to"].as_u64().unwrap() + 1;
        assert_eq!(g.body["space"], "team");
        assert!(g.body["id"].as_str().unwrap().starts_with("whd_"));
    }
    let first = &got[0].body["records"][0];
    assert_eq!(first["writer"], "bob");
    assert_eq!(first["author"], "bob");
    assert_eq!(first["collection"], "todos");
    assert_eq!(first["fields"]["title"]["value"], 2);
    let metrics = api.get("/metrics", "alice").await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("ferry_webhook_deliveries_total{outcome=\"delivered\"}")
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_the_same_delivery_until_it_answers() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    r.fail.store(3, Ordering::SeqCst);
    let _served = api.serve().await;
    write(&api, "alice", 1).await;
    let got = until(&r, "four tries", |g| g.len() >= 4).await;
    let ids: Vec<&Value> = got.iter().map(|g| &g.body["id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "a retry is the same delivery: {ids:?}"
    );
    // Later commits wait behind it, then follow in order.
    write(&api, "alice", 2).await;
    let got = until(&r, "the next commit", |g| {
        delivered(g).iter().any(|(s, _)| *s == 2)
    })
    .await;
    assert_eq!(delivered(&got).last().unwrap().0, 2);
    assert_eq!(api.state.store.webhook_backlog().await.unwrap().0, 0);
}

#[tokio::test]
async fn past_the_retry_window_a_delivery_is_a_dead_letter_that_can_be_replayed() {
    let (r, url) = receiver().await;
    let api = Api::configured(|s| {
        quick(s);
        s.webhooks.retry_for = Duration::from_millis(400);
    })
    .await;
    api.space("alice", "team").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    r.fail.store(u32::MAX, Ordering::SeqCst);
    let _served = api.serve().await;
    write(&api, "alice", 1).await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = api.state.store.webhook_dead_letters().await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1, "no dead letter");
    assert!(
        dead[0].attempts >= 2 && dead[0].error.contains("500"),
        "{dead:?}"
    );
    // The endpoint recovers: the next commit is delivered, then the dead
    // letter when the operator replays it, under its own delivery id.
    r.fail.store(0, Ordering::SeqCst);
    write(&api, "alice", 2).await;
    until(&r, "the next commit", |g| {
        g.last().is_some_and(|g| g.body["seq_to"] == 2)
    })
    .await;
    assert!(api.state.store.replay_webhook(dead[0].id).await.unwrap());
    api.state.realtime.webhooks.notify_one();
    let got = until(&r, "the replay", |g| {
        g.last()
            .is_some_and(|g| g.body["id"] == dead[0].delivery.as_str())
    })
    .await;
    assert!(got.last().unwrap().signed);
    assert_eq!(got.last().unwrap().body["records"][0]["id"], "t1");
    for _ in 0..100 {
        if api
            .state
            .store
            .webhook_dead_letters()
            .await
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replayed dead letter is still listed");
}

#[tokio::test]
async fn an_endpoint_gets_only_its_spaces_and_collections() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    api.space("alice", "other").await;
    let mut e = endpoint(&url);
    e.spaces = Some(vec![ferry_core::SpaceId::new("team").unwrap()]);
    e.collections = Some(vec![ferry_core::Collection::new("cards").unwrap()]);
    api.state
        .store
        .put_webhook_endpoint(&e, wall_ms())
        .await
        .unwrap();
    let _served = api.serve().await;
    let card = |space: &str, id: &str| {
        let path = format!("/v1/spaces/{space}/collections/cards/records/{id}");
        let body = json!({"fields": {"url": id}});
        let api = &api;
        async move {
            let r = api
                .call(Method::PUT, &path, Some("alice"), Some(body))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    };
    write(&api, "alice", 1).await; // a todo: not wanted
    card("other", "elsewhere").await;
    card("team", "c1").await;
    let got = until(&r, "the card", |g| !g.is_empty()).await;
    assert_eq!(
        delivered(&got)
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
        ["c1"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        r.got.lock().unwrap().len(),
        1,
        "something else was delivered"
    );
}

#[tokio::test]
async fn an_endpoint_replaced_under_its_id_is_sent_as_it_is_now() {
    let (r, url) = receiver().await;
    // Replays and the backlog are looked at rarely; the endpoint must not
    // be.
    let api = Api::configured(|s| {
        quick(s);
        s.webhooks.poll = Duration::from_secs(30);
    })
    .await;
    api.space("alice", "team").await;
    let mut e = endpoint(&url);
    e.collections = Some(vec![ferry_core::Collection::new("cards").unwrap()]);
    api.state
        .store
        .put_webhook_endpoint(&e, wall_ms())
        .await
        .unwrap();
    let _served = api.serve().await;
    write(&api, "alice", 1).await; // a todo: not wanted yet
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.collections = None;
    api.state
        .store
        .put_webhook_endpoint(&e, wall_ms())
        .await
        .unwrap();
    write(&api, "alice", 2).await; // wanted now
    let got = until(&r, "the second todo", |g| !g.is_empty()).await;
    assert_eq!(
        delivered(&got)
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
        ["t2"]
    );
}

/// A node of its own on the database `api` uses (its own store: its own
/// connections and listener), with quick timings, named `name`.
async fn node(api: &Api, name: &str) -> Served {
    let mut settings = Settings::new(ClientId::new(name).unwrap(), "http://ferry.test");
    quick(&mut settings);
    Served::start(
        AppState::new(api._guard.reopen().await, settings)
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn what_was_not_delivered_survives_a_restart() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    r.fail.store(u32::MAX, Ordering::SeqCst);
    let served = api.serve().await;
    write(&api, "alice", 1).await;
    until(&r, "a failed try", |g| !g.is_empty()).await;
    served.stop().await;
    r.fail.store(0, Ordering::SeqCst);
    let restarted = node(&api, "server-1").await;
    let got = until(&r, "the delivery after the restart", |g| {
        g.len() >= 2 && delivered(&g[g.len() - 1..]).len() == 1
    })
    .await;
    assert_eq!(
        got.last().unwrap().body["id"],
        got[0].body["id"],
        "the same delivery"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn two_nodes_deliver_each_commit_once() {
    let (r, url) = receiver().await;
    let api = Api::on(testing::fresh_postgres().await, quick).await;
    api.space("alice", "team").await;
    api.space("alice", "lists").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    let (a, b) = (node(&api, "node-a").await, node(&api, "node-b").await);
    // Commits through both nodes, in two spaces.
    let http = reqwest::Client::new();
    for n in 1..=40u64 {
        let (base, space) = if n % 2 == 0 {
            (&a.base, "team")
        } else {
            (&b.base, "lists")
        };
        let client = format!("c{n}");
        let body = push(
            &client,
            "b",
            0,
            vec![up(&format!("t{n}"), "title", json!(n), &hlc(n, &client))],
        );
        let res = http
            .post(format!("{base}/v1/spaces/{space}/sync"))
            .bearer_auth(api.token("alice"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let got = until(&r, "forty records", |g| delivered(g).len() >= 40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if r.got.lock().unwrap().len() > got.len() {
        r.got.lock().unwrap().clone()
    } else {
        got
    };
    let mut ids: Vec<&str> = got.iter().map(|g| g.body["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a delivery was sent twice");
    assert_eq!(
        delivered(&got).len(),
        40,
        "a record was delivered twice or not at all"
    );
    for space in ["team", "lists"] {
        let seqs: Vec<u64> = got
            .iter()
            .filter(|g| g.body["space"] == space)
            .flat_map(|g| g.body["records"].as_array().cloned().unwrap_or_default())
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{space} out of order: {seqs:?}"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_node_stopped_mid_delivery_leaves_it_to_another() {
    let (r, url) = receiver().await;
    let api = Api::on(testing::fresh_postgres().await, quick).await;
    api.space("alice", "team").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    r.hang.store(true, Ordering::SeqCst);
    let a = node(&api, "node-a").await;
    write(&api, "alice", 1).await;
    // Node A's request arrives and hangs; A is killed (its tasks aborted,
    // the request dropped unanswered).
    for _ in 0..200 {
        if r.arrived.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.arrived.load(Ordering::SeqCst), 1, "node A sent nothing");
    drop(a);
    r.hang.store(false, Ordering::SeqCst);
    let b = node(&api, "node-b").await;
    let got = until(&r, "node B's delivery", |g| !g.is_empty()).await;
    assert_eq!(delivered(&got), vec![(1, "t1".to_owned())]);
    b.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failure_never_a_delivery() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    let moved = endpoint(&url.replace("/hook", "/moved"));
    api.state
        .store
        .put_webhook_endpoint(&moved, wall_ms())
        .await
        .unwrap();
    let _served = api.serve().await;
    write(&api, "alice", 1).await;
    let mut retrying = 0;
    for _ in 0..100 {
        retrying = api.state.store.webhook_backlog().await.unwrap().0;
        if retrying > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retrying, 1, "the redirect was not a failure");
    assert_eq!(
        r.arrived.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn large_records_go_in_deliveries_of_about_a_mebibyte() {
    let (r, url) = receiver().await;
    let api = Api::configured(quick).await;
    api.space("alice", "team").await;
    api.state
        .store
        .put_webhook_endpoint(&endpoint(&url), wall_ms())
        .await
        .unwrap();
    for n in 1..=3u64 {
        let big = "x".repeat(600 * 1024);
        let client = "alice-phone";
        let r = api
            .sync(
                "alice",
                "team",
                push(
                    client,
                    &format!("b{n}"),
                    0,
                    vec![up(&format!("t{n}"), "title", json!(big), &hlc(n, client))],
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let _served = api.serve().await;
    let got = until(&r, "three records", |g| delivered(g).len() >= 3).await;
    assert_eq!(
        delivered(&got).iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(got.len() >= 2, "one delivery of 1.8 MB");
    assert!(
        got.iter()
            .all(|g| g.body["records"].as_array().unwrap().len() <= 2)
    );
}
