//! What one connection or one request may cost the server, over a real
//! socket: header, body and idle timeouts, the connection cap, the
//! realtime sign-in deadline, token expiry on long-lived connections,
//! metric labels an outsider cannot multiply, the metrics token, and
//! client addresses behind trusted proxies. Each test fails if its limit
//! is removed.

use std::time::{Duration, Instant};

use ferry_server::auth::external::{EmailTrust, SharedSecretConfig};
use ferry_server::http::HttpLimits;
use ferry_server::testing::Served;
use ferry_server::testing::WsClient;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// The API with short HTTP limits.
async fn limited(header: u64, body: u64, max_connections: usize) -> Api {
    Api::configured(move |s| {
        s.http = HttpLimits {
            header_timeout: Duration::from_secs(header),
            body_timeout: Duration::from_secs(body),
            write_timeout: Duration::from_secs(1),
            max_connections,
            ..HttpLimits::default()
        };
    })
    .await
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `within` passes,
/// which fails the test); what it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {within:?}; it sent {:?}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn partial_headers_silent_sockets_and_idle_connections_are_closed() {
    let api = limited(1, 30, 1000).await;
    let served = api.serve().await;
    let started = Instant::now();
    // A request whose headers never end.
    let mut partial = connect(&served.base).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // A socket that never says anything.
    let mut silent = connect(&served.base).await;
    // A kept-alive connection that goes idle after one answer.
    let mut idle = connect(&served.base).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for (name, stream) in [
        ("partial headers", &mut partial),
        ("silent", &mut silent),
        ("idle keep-alive", &mut idle),
    ] {
        let sent = until_closed(stream, Duration::from_secs(5)).await;
        if name == "idle keep-alive" {
            assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_body_trickled_a_byte_at_a_time_ends_at_the_body_deadline() {
    let api = limited(10, 1, 1000).await;
    let served = api.serve().await;
    let token = api.token("alice");
    let stream = connect(&served.base).await;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/spaces/user:alice/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        // One byte every 200 ms: each arrives well within any per-read
        // timeout, the whole never within the body's.
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(9), "still open");
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_and_health_answers_once_silent_ones_close() {
    let api = limited(2, 30, 3).await;
    let served = api.serve().await;
    // Three silent sockets take every slot.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect(&served.base).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", served.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // It waited for a slot: the header timeout closed the silent ones.
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "answered after {:?}, beside three connections holding every slot",
        started.elapsed()
    );
    for mut s in silent {
        until_closed(&mut s, Duration::from_secs(5)).await;
    }
}

#[test]
fn the_default_cap_stays_below_the_open_files_limit() {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0;
    let cap = ferry_server::http::connections_within(limit);
    assert!((cap as u64) < limit, "{cap} connections for {limit} files");
}

#[tokio::test]
async fn invented_methods_all_count_as_one_label() {
    let api = Api::new().await;
    for i in 0..200 {
        let method = Method::from_bytes(format!("X{i}{}", "Y".repeat(1000)).as_bytes()).unwrap();
        let req = Request::builder()
            .method(method)
            .uri("/health")
            .body(Body::empty())
            .unwrap();
        api.send(req).await;
    }
    let metrics = api.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.len() < 64 * 1024, "{} bytes of metrics", text.len());
    assert!(!text.contains("YYYY"), "an invented method became a label");
    assert!(
        text.contains(r#"method="other""#),
        "invented methods are counted as other"
    );
}

#[tokio::test]
async fn a_metrics_token_keeps_metrics_to_whoever_holds_it() {
    let api = Api::configured(|s| s.metrics_token = Some("metrics-token-5f2a9c0e1b".into())).await;
    for token in [None, Some("wrong-token"), Some("")] {
        let r = api
            .call_with_token(Method::GET, "/metrics", token, None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let ok = api
        .call_with_token(
            Method::GET,
            "/metrics",
            Some("metrics-token-5f2a9c0e1b"),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.as_str().unwrap().contains("ferry_http_requests"));
    // A short one is refused at start.
    let (store, _guard) = testing::fresh_store().await;
    let mut settings = Settings::new(ClientId::new("s").unwrap(), "http://ferry.test");
    settings.metrics_token = Some("short".into());
    let err = AppState::new(store, settings).await.unwrap_err();
    assert!(err.to_string().contains("metrics token"), "{err}");
}

#[tokio::test]
async fn pings_do_not_extend_the_sign_in_deadline() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let api = Api::configured(|s| s.realtime.auth_timeout = Duration::from_secs(1)).await;
    let served = api.serve().await;
    let url = format!("{}/v1/ws", served.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let started = Instant::now();
    // A ping every 300 ms, never an `auth`: closed at the deadline all the
    // same, 1 s after the upgrade.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an unauthenticated socket that pings is still open after 5 s"
        );
        if socket
            .send(Message::Ping(b"here".to_vec().into()))
            .await
            .is_err()
        {
            break None;
        }
        match tokio::time::timeout(Duration::from_millis(300), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(None | Some(Err(_))) => break None,
            Ok(Some(Ok(_))) | Err(_) => continue,
        }
    };
    assert_eq!(closed, Some(4401));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "closed after {:?}",
        started.elapsed()
    );
}

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes-0123";

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_whose_exp_has_a_fraction_still_ends_its_connections() {
    let api = Api::configured(|s| {
        s.shared_secret = Some(SharedSecretConfig {
            secret: SECRET.into(),
            issuer: None,
            audience: None,
            email_trust: EmailTrust::Verified,
        })
    })
    .await;
    let served = api.serve().await;
    // An `exp` of a whole second 2 to 3 s away, plus half a second that
    // the server drops (the provider's leeway applies to REST only).
    let started = Instant::now();
    let exp = (wall_ms() / 1000 + 3) as f64 + 0.5;
    let token = hs256(&json!({"sub": "frac-1", "exp": exp}));
    let me = api.get_with_token("/v1/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    let mut ws = WsClient::connect(&served.base).await;
    ws.auth(&token).await;
    assert_eq!(ws.closed().await, Some(4401));
    // At its `exp`, at least 2 s after the token was made: neither never
    // nor at once (as an unreadable `exp` would be).
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_secs(2) && lived < Duration::from_secs(8),
        "closed after {lived:?}"
    );
    // The event stream ends too.
    let token = hs256(&json!({"sub": "frac-2", "exp": (wall_ms() / 1000 + 3) as f64 + 0.5}));
    let me = api.get_with_token("/v1/me", &token).await;
    let space = format!("user:{}", me.body["user"]["id"].as_str().unwrap());
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/{space}/stream", served.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_key_on_the_forwarded_client() {
    let magic = |served: &Served, forwarded: String| {
        let base = served.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/auth/magic-link"))
                .header("X-Forwarded-For", forwarded)
                .json(&json!({"email": format!("p{}@example.com", rand_suffix())}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Trusted: 25 clients behind the proxy each have their own allowance.
    let trusting = Api::configured(|s| s.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    let served = trusting.serve().await;
    for i in 0..25 {
        let status = magic(&served, format!("203.0.113.{i}")).await;
        assert_eq!(status, 202, "client {i}");
    }
    // A client cannot escape its own limit by forging the header in front
    // of the proxy: the proxy's own entry (the rightmost) is what counts.
    let mut last = 0;
    for i in 0..25 {
        last = magic(&served, format!("198.51.100.{i}, 192.0.2.9"))
            .await
            .as_u16();
    }
    assert_eq!(last, 429);
    // Not trusted: the header is ignored, and the peer's limit applies.
    let plain = Api::new().await;
    let served = plain.serve().await;
    let mut last = 0;
    for i in 0..25 {
        last = magic(&served, format!("203.0.113.{i}")).await.as_u16();
    }
    assert_eq!(last, 429);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn a_server_dropped_mid_way_lets_go_of_its_state() {
    // A node whose serving future is dropped (a test's restart, a
    // supervisor's abort) closes its realtime connections and stops its
    // bridge: nothing of it keeps the database pool open.
    let api = Api::new().await;
    let before = std::sync::Arc::strong_count(&api.state.store);
    let served = api.serve().await;
    let mut ws = WsClient::connect(&served.base).await;
    ws.auth(&api.token("alice")).await;
    ws.subscribe(&["user:alice"]).await;
    // A connection that never sends a request does not hold it either.
    let _silent = connect(&served.base).await;
    drop(served);
    assert_eq!(ws.closed().await, Some(1001));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::sync::Arc::strong_count(&api.state.store) > before {
        assert!(
            Instant::now() < deadline,
            "{} holders of the store remain",
            std::sync::Arc::strong_count(&api.state.store) - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_gives_its_slot_back() {
    let api = limited(10, 30, 1).await;
    let served = api.serve().await;
    // The one slot: a client with a small window that asks for the demo's
    // largest file again and again and never reads an answer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket
        .connect(served.base.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let asks = "GET /app/ferry_wasm_bg.wasm HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50);
    greedy.write_all(asks.as_bytes()).await.unwrap();
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", served.base))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("a client that does not read held the only slot");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(greedy);
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_connections() {
    let api = Api::configured(|s| {
        s.http.max_connections_per_address = 3;
        // The test's clients are on loopback, which is not counted by
        // default (a reverse proxy on the same machine).
        s.http.exempt_loopback = false;
    })
    .await;
    let served = api.serve().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&served.base).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect(&served.base).await;
    let answer = until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert!(answer.contains("rate_limited"), "{answer}");
    // One closes: another may open.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = reqwest::Client::new()
        .get(format!("{}/health", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Loopback is not counted when exempt (the default).
    let open = Api::configured(|s| s.http.max_connections_per_address = 1).await;
    let served = open.serve().await;
    let _a = connect(&served.base).await;
    let _b = connect(&served.base).await;
    let health = reqwest::Client::new()
        .get(format!("{}/health", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
