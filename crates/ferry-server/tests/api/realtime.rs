//! Realtime on one node: WebSocket and SSE signals, who gets them, limits,
//! and how connections end.

use std::time::Duration;

use ferry_server::testing::WsClient;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const QUIET: Duration = Duration::from_millis(300);

fn short_token(api: &Api, user: &str, ttl_secs: u64) -> String {
    api.state
        .issuer
        .get()
        .mint(&UserId::new(user).unwrap(), wall_ms() / 1000, ttl_secs)
        .unwrap()
}

/// A WebSocket of `user`, authenticated.
async fn ws(api: &Api, served: &Served, user: &str) -> WsClient {
    let mut client = WsClient::connect(&served.base).await;
    client.auth(&api.token(user)).await;
    client
}

async fn write(api: &Api, user: &str, space: &str, batch: &str, n: u64) -> u64 {
    let r = api
        .sync(
            user,
            space,
            push(
                "phone",
                batch,
                0,
                vec![up(
                    &format!("t-{batch}"),
                    "title",
                    json!(batch),
                    &hlc(n, "phone"),
                )],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["cursor"].as_u64().unwrap()
}

#[tokio::test]
async fn commits_by_sync_and_rest_are_signalled_once() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let mut client = ws(&api, &served, "alice").await;
    let reply = client.subscribe(&["team"]).await;
    assert_eq!(reply["spaces"], json!(["team"]));
    assert_eq!(reply["denied"], json!([]));
    // Nothing committed yet: no signal.
    assert_eq!(client.recv_within(QUIET).await, None);

    let cursor = write(&api, "alice", "team", "b1", 1).await;
    assert_eq!(client.signal().await, ("team".to_owned(), cursor));

    // A retried batch commits nothing: no signal.
    write(&api, "alice", "team", "b1", 1).await;
    assert_eq!(client.recv_within(QUIET).await, None);

    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/r1",
            Some("alice"),
            Some(json!({"fields": {"title": "from REST"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(client.signal().await, ("team".to_owned(), cursor + 1));

    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));

    // Unsubscribed, the space is quiet again.
    client
        .send(json!({"type": "unsubscribe", "spaces": ["team"]}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscribed", "spaces": ["team"]})
    );
    write(&api, "alice", "team", "b2", 2).await;
    assert_eq!(client.recv_within(QUIET).await, None);
}

#[tokio::test]
async fn subscribing_late_announces_the_current_cursor() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let cursor = write(&api, "alice", "team", "b1", 1).await;
    let mut client = ws(&api, &served, "alice").await;
    client.subscribe(&["team"]).await;
    assert_eq!(client.signal().await, ("team".to_owned(), cursor));
    // Subscribing again changes nothing and repeats nothing.
    client.subscribe(&["team"]).await;
    assert_eq!(client.recv_within(QUIET).await, None);
}

#[tokio::test]
async fn no_signal_reaches_a_non_member() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    api.get("/v1/me", "mallory").await;
    let mut mallory = ws(&api, &served, "mallory").await;
    let reply = mallory
        .subscribe(&["team", "user:mallory", "user:alice", "bad/id", "nope"])
        .await;
    assert_eq!(reply["spaces"], json!(["user:mallory"]));
    let mut denied: Vec<String> = serde_json::from_value(reply["denied"].clone()).unwrap();
    denied.sort();
    assert_eq!(denied, ["bad/id", "nope", "team", "user:alice"]);

    let mut alice = ws(&api, &served, "alice").await;
    alice.subscribe(&["team"]).await;
    write(&api, "alice", "team", "b1", 1).await;
    alice.signal().await;
    assert_eq!(mallory.recv_within(QUIET).await, None);

    // Over SSE too: a non-member's stream is a 404.
    let r = api.get("/v1/spaces/team/stream", "mallory").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
}

#[tokio::test]
async fn a_viewer_hears_and_a_removed_member_stops_hearing() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    api.add("alice", "team", "bob", "viewer").await;
    let mut bob = ws(&api, &served, "bob").await;
    bob.subscribe(&["team", "user:bob"]).await;
    let cursor = write(&api, "alice", "team", "b1", 1).await;
    assert_eq!(bob.signal().await, ("team".to_owned(), cursor));

    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/bob",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        bob.recv().await,
        json!({"type": "unsubscribed", "spaces": ["team"]})
    );
    write(&api, "alice", "team", "b2", 2).await;
    assert_eq!(bob.recv_within(QUIET).await, None);
    // The rest of the connection works on.
    bob.send(json!({"type": "ping"})).await;
    assert_eq!(bob.recv().await["type"], "pong");
}

#[tokio::test]
async fn authentication_is_first_and_in_time() {
    let api = Api::configured(|s| s.realtime.auth_timeout = Duration::from_millis(300)).await;
    let served = api.serve().await;

    // Silence.
    let mut client = WsClient::connect(&served.base).await;
    assert_eq!(client.closed().await, Some(4401));

    // Anything but auth first.
    let mut client = WsClient::connect(&served.base).await;
    client
        .send(json!({"type": "subscribe", "spaces": ["user:x"]}))
        .await;
    assert_eq!(client.closed().await, Some(4401));

    // A bad token.
    let mut client = WsClient::connect(&served.base).await;
    client.send(json!({"type": "auth", "token": "x.y.z"})).await;
    assert_eq!(client.closed().await, Some(4401));

    // The default is the protocol's 10 s.
    assert_eq!(
        Settings::new(ClientId::new("n").unwrap(), "")
            .realtime
            .auth_timeout,
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_unless_renewed() {
    let api = Api::new().await;
    let served = api.serve().await;
    let mut client = WsClient::connect(&served.base).await;
    client.auth(&short_token(&api, "alice", 1)).await;
    let started = std::time::Instant::now();
    assert_eq!(client.closed().await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(3));

    // A fresh token sent in time extends the connection.
    let mut client = WsClient::connect(&served.base).await;
    client.auth(&short_token(&api, "alice", 1)).await;
    client.auth(&api.token("alice")).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong");

    // Another user's token ends it.
    client
        .send(json!({"type": "auth", "token": api.token("bob")}))
        .await;
    assert_eq!(client.closed().await, Some(4401));
}

#[tokio::test]
async fn bad_messages_are_answered_and_oversized_ones_close() {
    let api = Api::configured(|s| s.realtime.max_subscriptions = 3).await;
    let served = api.serve().await;
    let mut client = ws(&api, &served, "alice").await;
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"launch"}"#),
        Message::text(r#"{"type":"subscribe","spaces":"user:alice"}"#),
        Message::binary(vec![1, 2, 3]),
    ] {
        client.send_raw(bad.clone()).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{bad:?}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_request", "{reply}");
    }
    client
        .send(json!({"type": "subscribe", "spaces": ["a", "b", "c", "d"]}))
        .await;
    assert_eq!(client.recv().await["error"]["code"], "too_large");
    // Still usable.
    client.subscribe(&["user:alice"]).await;

    let big = "x".repeat(17 * 1024);
    client
        .send(json!({"type": "subscribe", "spaces": [big]}))
        .await;
    assert_eq!(client.closed().await, Some(1009));
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let api =
        Api::configured(|s| s.realtime.allowed_origins = vec!["https://app.example".into()]).await;
    let served = api.serve().await;
    let refused = WsClient::try_connect(&served.base, Some("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    WsClient::try_connect(&served.base, Some("https://app.example"))
        .await
        .unwrap();
    WsClient::try_connect(&served.base, Some("http://ferry.test"))
        .await
        .unwrap();
    // A page of the host it connected to.
    let own = served.base.clone();
    WsClient::try_connect(&served.base, Some(&own))
        .await
        .unwrap();

    // Without a handshake, a §10 error.
    let r = api.get("/v1/ws", "alice").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_request");
}

/// Reads SSE events from a streaming response until `n` came.
async fn sse_events(response: &mut reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = String::new();
            let mut data = Value::Null;
            let mut name = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).unwrap();
                } else if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                }
            }
            match name.as_str() {
                "" => {}
                "sync-available" => {
                    assert_eq!(id, data["cursor"].to_string());
                    events.push((name, data));
                }
                "schema" => events.push((name, data)),
                other => panic!("unexpected event {other}"),
            }
        }
    }
    events
}

#[tokio::test]
async fn server_sent_events_carry_the_same_signal() {
    let api = Api::configured(|s| s.realtime.heartbeat_interval = Duration::from_millis(100)).await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let first = write(&api, "alice", "team", "b1", 1).await;
    // Headers as the server sent them: no transparent decompression.
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = format!("{}/v1/spaces/team/stream", served.base);

    let mut stream = http
        .get(&url)
        .bearer_auth(api.token("alice"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // Never compressed: a gzip stream would hold events back.
    assert!(stream.headers().get("content-encoding").is_none());
    let events = sse_events(&mut stream, 1).await;
    assert_eq!(events[0].1, json!({"space": "team", "cursor": first}));
    let second = write(&api, "alice", "team", "b2", 2).await;
    let events = sse_events(&mut stream, 1).await;
    assert_eq!(events[0].1["cursor"], second);

    // EventSource's way: the token in the query, resuming after the last
    // event it saw: nothing repeated, the next commit announced.
    let mut resumed = http
        .get(format!("{url}?access_token={}", api.token("alice")))
        .header("last-event-id", second.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let third = write(&api, "alice", "team", "b3", 3).await;
    assert_eq!(sse_events(&mut resumed, 1).await[0].1["cursor"], third);
    // Heartbeats flow between events.
    let chunk = tokio::time::timeout(Duration::from_secs(5), resumed.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(chunk.starts_with(b":"), "{chunk:?}");

    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let bad = http
        .get(format!("{url}?access_token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let unknown_param = http
        .get(format!("{url}?token=x"))
        .bearer_auth(api.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_param.status(), 400);
}

#[tokio::test]
async fn a_schema_applied_beside_the_node_is_announced_on_every_connection() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    // A WebSocket that follows no space hears it too: the schema is the
    // same for everyone.
    let mut client = ws(&api, &served, "alice").await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/team/stream", served.base))
        .bearer_auth(api.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(client.recv_within(QUIET).await, None);

    // Applied in the database (as `ferry schema apply` does, or another
    // node): no write through this node, yet it reads it within a second
    // and tells its connections.
    let version = super::schema::apply(&api).await;
    let heard = client.recv_within(Duration::from_secs(10)).await;
    assert_eq!(heard, Some(json!({"type": "schema", "version": version})));
    let events = sse_events(&mut stream, 1).await;
    assert_eq!(
        events[0],
        ("schema".to_owned(), json!({"version": version}))
    );
    // Told once.
    assert_eq!(client.recv_within(Duration::from_millis(1500)).await, None);
}

#[tokio::test]
async fn a_removed_member_s_stream_ends() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    api.add("alice", "team", "bob", "editor").await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/team/stream", served.base))
        .bearer_auth(api.token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/bob",
            Some("bob"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            assert!(chunk.starts_with(b":"), "{chunk:?}");
        }
    })
    .await;
    assert!(end.is_ok(), "the stream went on");
}

#[tokio::test]
async fn shutting_down_closes_realtime_connections() {
    let api = Api::new().await;
    let served = api.serve().await;
    let mut client = ws(&api, &served, "alice").await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/user:alice/stream", served.base))
        .bearer_auth(api.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let metrics = api.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    assert!(
        text.contains("ferry_realtime_connections{kind=\"websocket\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ferry_realtime_connections{kind=\"sse\"} 1"),
        "{text}"
    );

    served.stop().await;
    assert_eq!(client.closed().await, Some(1001));
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream stayed open");
    let metrics = api.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    assert!(
        text.contains("ferry_realtime_connections{kind=\"websocket\"} 0"),
        "{text}"
    );
}

/// Opens `n` authenticated, subscribed connections, `batch` at a time.
async fn many(api: &Api, base: &str, space: &str, n: usize, batch: usize) -> Vec<WsClient> {
    let token = api.token("alice");
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let opening = (0..batch.min(n - clients.len())).map(|_| {
            let (base, token) = (base.to_owned(), token.clone());
            let space = space.to_owned();
            tokio::spawn(async move {
                let mut client = WsClient::connect(&base).await;
                client.auth(&token).await;
                client.subscribe(&[&space]).await;
                client
            })
        });
        for task in opening.collect::<Vec<_>>() {
            clients.push(task.await.unwrap());
        }
    }
    clients
}

#[tokio::test]
async fn two_thousand_connections_all_hear_one_commit() {
    const N: usize = 2000;
    // Each connection is two sockets in this process.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 2 * N as u64 + 200,
        "this test needs {} open files; the limit is {limit} (raise it with ulimit -n)",
        2 * N + 200
    );
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let mut clients = many(&api, &served.base, "team", N, 100).await;
    let cursor = write(&api, "alice", "team", "b1", 1).await;
    let heard = clients.iter_mut().map(|c| async move { c.signal().await });
    let heard = futures_util::future::join_all(heard).await;
    assert_eq!(heard.len(), N);
    assert!(heard.iter().all(|s| *s == ("team".to_owned(), cursor)));
    let metrics = api.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    assert!(text.contains(&format!(
        "ferry_realtime_connections{{kind=\"websocket\"}} {N}"
    )));
    assert!(
        text.contains(&format!("ferry_realtime_signals_sent_total {N}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_no_one_up() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let mut reader = ws(&api, &served, "alice").await;
    reader.subscribe(&["team"]).await;
    // Subscribed, then not reading while fifty commits land.
    let mut sleeper = ws(&api, &served, "alice").await;
    sleeper.subscribe(&["team"]).await;
    let mut last = 0;
    for i in 0..50 {
        last = write(&api, "alice", "team", &format!("b{i}"), i + 1).await;
        // The reader hears every commit at once whatever the sleeper does.
        assert_eq!(reader.signal().await.1, last);
    }
    // When the sleeper reads at last, its cursors only go up, to the latest.
    let mut seen = Vec::new();
    while let Some(m) = sleeper.recv_within(QUIET).await {
        seen.push(m["cursor"].as_u64().unwrap());
    }
    assert_eq!(seen.last(), Some(&last));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}
