//! The background task against a real server: it syncs on local writes
//! and on realtime signals, reports its status, and rides out the server
//! going away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ferry_client::{Remote, Replica, ReplicaConfig, State, SyncConfig, Syncer, Token};
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

async fn serve(store: Arc<dyn Store>, listener: TcpListener) -> Served {
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    Served::start_on(AppState::new(store, settings).await.unwrap(), listener).await
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn quick() -> SyncConfig {
    SyncConfig {
        debounce: Duration::from_millis(50),
        interval: Duration::from_secs(30),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        realtime: true,
    }
}

/// Waits up to 10 s for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test]
async fn writes_reach_the_other_replica_by_themselves() {
    let (store, _guard) = testing::fresh_store().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(store, listener).await;
    let remote = Remote::new(&base, Arc::new(Token(server.token("ada")))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let space = SpaceId::new("user:ada").unwrap();
    let (todos, t1) = (
        Collection::new("todos").unwrap(),
        RecordId::new("t1").unwrap(),
    );
    let a = Replica::open(dir.path().join("a.db"), ReplicaConfig::default()).unwrap();
    let b = Replica::open(dir.path().join("b.db"), ReplicaConfig::default()).unwrap();
    let sa = Syncer::start(a.clone(), remote.clone(), vec![space.clone()], quick());
    let sb = Syncer::start(b.clone(), remote.clone(), vec![space.clone()], quick());
    // Give b's realtime connection a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.put(&space, &todos, &t1, fields(json!({"title": "hello"})))
        .unwrap();
    eventually("b hearing of a's write", || {
        b.get(&space, &todos, &t1).unwrap().is_some()
    })
    .await;
    eventually("a's status settling", || {
        let s = sa.status().borrow().clone();
        s.state == State::Idle && s.pending == 0 && s.last_synced.is_some()
    })
    .await;
    // And back the other way.
    b.patch(&space, &todos, &t1, fields(json!({"done": true})))
        .unwrap();
    eventually("a hearing of b's write", || {
        a.get(&space, &todos, &t1)
            .unwrap()
            .unwrap()
            .fields
            .get("done")
            == Some(&json!(true))
    })
    .await;
    sb.stop().await;
    drop(sa);
    server.stop().await;
}

#[tokio::test]
async fn a_write_made_while_the_server_is_away_syncs_when_it_returns() {
    let (store, _guard) = testing::fresh_store().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(store.clone(), listener).await;
    let remote = Remote::new(
        &format!("http://{addr}"),
        Arc::new(Token(server.token("bo"))),
    )
    .unwrap();
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let space = SpaceId::new("user:bo").unwrap();
    let (todos, t1) = (
        Collection::new("todos").unwrap(),
        RecordId::new("t1").unwrap(),
    );
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let syncer = Syncer::start(replica.clone(), remote, vec![space.clone()], quick());
    replica
        .put(&space, &todos, &t1, fields(json!({"title": "offline"})))
        .unwrap();
    eventually("the status saying offline", || {
        let s = syncer.status().borrow().clone();
        matches!(s.state, State::Offline { .. }) && s.pending == 1
    })
    .await;
    // Waiting for the write to reach the server says at once that it
    // cannot, and why.
    match syncer.synced().await {
        Err(ferry_client::Error::Offline(_)) => {}
        other => panic!("synced() while the server is away: {other:?}"),
    }

    // Back on the same address.
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = serve(store.clone(), listener).await;
    let status = syncer.synced().await.unwrap();
    assert_eq!((status.state.clone(), status.pending), (State::Idle, 0));
    let stored = store.record(&space, &todos, &t1).await.unwrap().unwrap();
    assert!(stored.fields.get().contains("offline"));
    drop(syncer);
    server.stop().await;
}

#[tokio::test]
async fn a_refusal_stops_sync_until_the_app_asks_again() {
    let (store, _guard) = testing::fresh_store().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(store, listener).await;
    let remote = Remote::new(&base, Arc::new(Token("not-a-token".into()))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let space = SpaceId::new("user:cy").unwrap();
    replica
        .put(
            &space,
            &Collection::new("todos").unwrap(),
            &RecordId::new("t").unwrap(),
            fields(json!({"x": 1})),
        )
        .unwrap();
    let syncer = Syncer::start(replica.clone(), remote, vec![space], quick());
    eventually("the status saying why", || {
        matches!(&syncer.status().borrow().state, State::Error { reason } if reason.contains("401"))
    })
    .await;
    assert_eq!(replica.pending().unwrap(), 1);
    drop(syncer);
    server.stop().await;
}

#[tokio::test]
async fn a_payment_wall_pauses_sync_and_local_work_goes_on() {
    use axum::http::StatusCode;
    // A server whose sync answers 402, as one with a billing gate does for
    // a user without a plan.
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/v1/spaces/{space}/sync",
        axum::routing::post(move || async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (
                StatusCode::PAYMENT_REQUIRED,
                axum::Json(json!({"error": {"code": "payment_required",
                                             "message": "sync needs the pro plan"}})),
            )
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let remote = Remote::new(&base, Arc::new(Token("t".into()))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let space = SpaceId::new("user:di").unwrap();
    let todos = Collection::new("todos").unwrap();
    let config = SyncConfig {
        realtime: false,
        ..quick()
    };
    let syncer = Syncer::start(replica.clone(), remote, vec![space.clone()], config);
    replica
        .put(
            &space,
            &todos,
            &RecordId::new("a").unwrap(),
            fields(json!({"x": 1})),
        )
        .unwrap();
    eventually("the status saying paused", || {
        matches!(&syncer.status().borrow().state,
                 State::Paused { reason } if reason.contains("pro plan"))
    })
    .await;
    // Writes go on, queue up, and are not retried at every write.
    for i in 0..20 {
        replica
            .put(
                &space,
                &todos,
                &RecordId::new(format!("b{i}")).unwrap(),
                fields(json!({"i": i})),
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = syncer.status().borrow().clone();
    assert!(matches!(status.state, State::Paused { .. }), "{status:?}");
    assert_eq!(status.pending, 21);
    assert_eq!(replica.pending().unwrap(), 21);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Asked explicitly (the person just subscribed), it tries again.
    syncer.sync_now();
    eventually("a second try", || {
        asked.load(std::sync::atomic::Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test]
async fn a_space_that_fails_does_not_hold_up_the_others() {
    let (store, _guard) = testing::fresh_store().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(store.clone(), listener).await;
    let remote = Remote::new(&base, Arc::new(Token(server.token("ed")))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let todos = Collection::new("todos").unwrap();
    // "aaa" sorts first and is not the user's: every sync of it is a 404.
    let theirs = SpaceId::new("aaa").unwrap();
    let mine = SpaceId::new("user:ed").unwrap();
    replica
        .put(
            &theirs,
            &todos,
            &RecordId::new("x").unwrap(),
            fields(json!({"x": 1})),
        )
        .unwrap();
    replica
        .put(
            &mine,
            &todos,
            &RecordId::new("y").unwrap(),
            fields(json!({"y": 1})),
        )
        .unwrap();
    let syncer = Syncer::start(replica.clone(), remote, vec![theirs, mine.clone()], quick());
    eventually("the status saying why", || {
        matches!(&syncer.status().borrow().state, State::Error { reason } if reason.contains("404"))
    })
    .await;
    let stored = store
        .record(&mine, &todos, &RecordId::new("y").unwrap())
        .await
        .unwrap();
    assert!(stored.is_some(), "the user's own space did not sync");
    assert_eq!(replica.pending().unwrap(), 1);
    drop(syncer);
    server.stop().await;
}

#[tokio::test]
async fn pages_travel_compressed() {
    use tower_http::compression::CompressionLayer;
    // A server that compresses what it may, like Ferry's, and notes what
    // the client asked for and what it sent back.
    type Seen = Vec<(Option<String>, Option<String>)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let hlc = ferry_core::Hlc::zero(ClientId::new("server").unwrap())
        .tick(1_763_798_400_000)
        .to_string();
    let app = axum::Router::new()
        .route(
            "/v1/spaces/{space}/sync",
            axum::routing::post(move || async move {
                axum::Json(
                    json!({"applied": 0, "conflicts": [], "changes": [], "cursor": 7,
                                  "has_more": false, "hlc": hlc}),
                )
            }),
        )
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let sink = sink.clone();
                async move {
                    let header = |h: &axum::http::HeaderMap, name: &str| {
                        h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                    };
                    let asked = header(request.headers(), "accept-encoding");
                    let response = next.run(request).await;
                    let sent = header(response.headers(), "content-encoding");
                    sink.lock().unwrap().push((asked, sent));
                    response
                }
            },
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let remote = Remote::new(&base, Arc::new(Token("t".into()))).unwrap();
    let request = ferry_core::protocol::SyncRequest {
        client_id: ClientId::new("c").unwrap(),
        batch_id: None,
        cursor: 0,
        changes: Vec::new(),
        limit: None,
        conflict_cursor: None,
    };
    let answer = remote
        .sync(&SpaceId::new("user:di").unwrap(), &request)
        .await
        .unwrap();
    assert_eq!(answer.cursor, 7, "the compressed answer was read");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].0.as_deref().is_some_and(|a| a.contains("gzip")),
        "the client did not ask for gzip: {seen:?}"
    );
    assert_eq!(seen[0].1.as_deref(), Some("gzip"), "{seen:?}");
}

#[tokio::test]
async fn a_new_schema_reaches_a_running_replica_by_the_realtime_signal() {
    let (store, _guard) = testing::fresh_store().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(store.clone(), listener).await;
    let remote = Remote::new(&base, Arc::new(Token(server.token("ada")))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let space = SpaceId::new("user:ada").unwrap();
    let replica = Replica::open(dir.path().join("a.db"), ReplicaConfig::default()).unwrap();
    // Polling every 30 s: only the signal can bring the schema in time.
    let syncer = Syncer::start(replica.clone(), remote, vec![space.clone()], quick());
    eventually("the first sync", || {
        syncer.status().borrow().last_synced.is_some()
    })
    .await;
    assert_eq!(replica.app_schema().version, 0);

    let schema = r#"{"collections": {"todos": {"mode": "strict", "fields": {
        "title": {"type": "string", "required": true}}}}}"#;
    let json = serde_json::to_string(&ferry_core::schema::Schema::parse(schema).unwrap()).unwrap();
    let version = store.apply_app_schema(&json, 0).await.unwrap();
    eventually("the replica holding the new schema", || {
        replica.app_schema().version == version
    })
    .await;
    // And it judges writes by it at once.
    let refused = replica.put(
        &space,
        &Collection::new("todos").unwrap(),
        &RecordId::new("t1").unwrap(),
        fields(json!({"title": 7})),
    );
    assert!(
        matches!(refused, Err(ferry_client::Error::Schema(_))),
        "{refused:?}"
    );
    drop(syncer);
    server.stop().await;
}
