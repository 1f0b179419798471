//! PostgreSQL going away and coming back, whatever `FERRY_TEST_BACKEND`
//! says: this test is about PostgreSQL and always needs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Server, now_ms};
use ferry_server::testing::TestDatabase;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy to PostgreSQL that the test can cut, dropping every
/// connection through it, and restore on the same port.
struct Proxy {
    port: u16,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(port: u16, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut stop_accepting = stopped.clone();
            loop {
                tokio::select! {
                    _ = stop_accepting.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { return };
                        let mut stop_this = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = stop_this.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Proxy { port, stop, task }
    }

    /// Cuts every connection and stops listening.
    async fn cut(self) -> u16 {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        self.port
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls `GET /health` until it answers `want`, for at most `limit`.
async fn wait_for_health(base: &str, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, _) = get(&format!("{base}/health"), None).await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "/health did not answer {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_away_requests_answer_503_and_service_returns_by_itself() {
    let db = TestDatabase::create().await;
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let target: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .expect("FERRY_TEST_POSTGRES names an IP address and port");
    let proxy = Proxy::start(0, target).await;
    let direct = format!("@{}:{}/", options.get_host(), options.get_port());
    assert!(
        db.url.contains(&direct),
        "{} names its host and port",
        db.url
    );
    let via_proxy = db
        .url
        .replace(&direct, &format!("@127.0.0.1:{}/", proxy.port));

    let dir = tempfile::tempdir().unwrap();
    let args = vec!["--database".to_owned(), via_proxy];
    let server = Server::spawn(&dir.path().join("ferry.log"), args, "127.0.0.1:0");
    let token = server.token("ops@example.com");
    let client = server.client(&token);
    client.create_space("ops").await;
    let push = |id: &str, batch: &str| {
        json!({"client_id": "c", "batch_id": batch, "cursor": 0, "changes": [
            {"op": "upsert", "collection": "t", "id": id,
             "fields": {"x": {"value": 1, "hlc": format!("{:015}:00000:c", now_ms())}}}]})
    };
    assert_eq!(client.sync("ops", push("before", "1")).await.0, 200);

    // PostgreSQL goes away.
    let port = proxy.cut().await;
    let took = wait_for_health(&server.url, 503, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(4), "/health took {took:?}");
    let started = Instant::now();
    let (status, body) = client.sync("ops", push("during", "2")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "no hang: {:?}",
        started.elapsed()
    );
    let (status, body) = get(
        &format!("{}/v1/spaces/ops/changes", server.url),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("unavailable"))
    );
    let (status, health) = get(&format!("{}/health", server.url), None).await;
    assert_eq!((status, &health["db"]), (503, &json!("unreachable")));

    // It comes back on the same address: Ferry recovers by itself.
    let _proxy = Proxy::start(port, target).await;
    wait_for_health(&server.url, 200, Duration::from_secs(15)).await;
    let (status, body) = client.sync("ops", push("after", "3")).await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = client.get("/v1/spaces/ops/changes").await;
    let ids: Vec<_> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("before"), json!("after")],
        "the refused push left nothing"
    );
}
