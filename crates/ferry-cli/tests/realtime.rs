//! Realtime through real `ferry serve` processes: on one node with the
//! backend `FERRY_TEST_BACKEND` names, and across two nodes sharing one
//! PostgreSQL (always PostgreSQL: that is what the nodes share).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Db, Server, now_ms};
use ferry_server::testing::{TestDatabase, WsClient};
use serde_json::{Value, json};

/// An upsert of record `id` by replica `node`.
fn change(id: &str, n: u64, node: &str) -> Value {
    json!({"op": "upsert", "collection": "todos", "id": id,
           "fields": {"title": {"value": id, "hlc": format!("{:015}:{n:05}:{node}", now_ms())}}})
}

/// Pushes one change through `client`; the cursor after it.
async fn commit(client: &Client, space: &str, batch: &str) -> u64 {
    let (status, body) = client
        .sync(
            space,
            // A replica of its own per batch: a client id is one user's.
            json!({"client_id": format!("cli-{batch}"), "batch_id": batch, "cursor": 0,
                   "changes": [change(batch, 0, &format!("cli-{batch}"))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["cursor"].as_u64().unwrap()
}

/// Two nodes on one fresh PostgreSQL database.
struct Cluster {
    _db: TestDatabase,
    url: String,
    dir: tempfile::TempDir,
    a: Server,
    b: Server,
}

impl Cluster {
    async fn start() -> Cluster {
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["--database".to_owned(), db.url.clone()];
        let a = Server::spawn(&dir.path().join("a.log"), args.clone(), "127.0.0.1:0");
        let b = Server::spawn(&dir.path().join("b.log"), args, "127.0.0.1:0");
        Cluster {
            url: db.url.clone(),
            _db: db,
            dir,
            a,
            b,
        }
    }

    fn logs(&self) -> String {
        ["a.log", "b.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn ws(server: &Server, token: &str, spaces: &[&str]) -> WsClient {
    let mut client = WsClient::connect(&server.url).await;
    client.auth(token).await;
    let reply = client.subscribe(spaces).await;
    assert_eq!(reply["denied"], json!([]), "{reply}");
    client
}

#[tokio::test]
async fn a_commit_on_one_node_is_announced_on_the_other() {
    let cluster = Cluster::start().await;
    let (alice_token, bob_token) = (
        cluster.a.token("alice@example.com"),
        cluster.a.token("bob@example.com"),
    );
    let alice_b = cluster.b.client(&alice_token);
    let bob_b = cluster.b.client(&bob_token);
    alice_b.create_space("team").await;
    let bob_id = bob_b.user_id().await;
    let (status, body) = alice_b
        .send(
            reqwest::Method::PUT,
            &format!("/v1/spaces/team/members/{bob_id}"),
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Alice listens on node A, by WebSocket and by SSE; Bob on A too.
    let mut alice_ws = ws(&cluster.a, &alice_token, &["team"]).await;
    let mut bob_ws = ws(&cluster.a, &bob_token, &["team"]).await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/team/stream", cluster.a.url))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    for i in 0..5 {
        let started = Instant::now();
        let cursor = commit(&bob_b, "team", &format!("b{i}")).await;
        assert_eq!(
            alice_ws.signal().await,
            ("team".to_owned(), cursor),
            "{}",
            cluster.logs()
        );
        println!(
            "commit on node B heard on node A after {:?}",
            started.elapsed()
        );
        assert_eq!(bob_ws.signal().await, ("team".to_owned(), cursor));
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("no event on node A's stream")
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&chunk);
        assert!(text.contains(&format!("\"cursor\":{cursor}")), "{text}");
    }

    // Bob is removed through node B: node A stops telling him.
    let (status, _) = alice_b
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/spaces/team/members/{bob_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        bob_ws.recv().await,
        json!({"type": "unsubscribed", "spaces": ["team"]})
    );
    let cursor = commit(&alice_b, "team", "after").await;
    assert_eq!(alice_ws.signal().await.1, cursor);
    assert_eq!(bob_ws.recv_within(Duration::from_millis(500)).await, None);
}

#[tokio::test]
async fn a_node_that_lost_its_listener_catches_up() {
    let cluster = Cluster::start().await;
    let token = cluster.a.token("carol@example.com");
    let carol_b = cluster.b.client(&token);
    carol_b.create_space("notes").await;
    let mut client = ws(&cluster.a, &token, &["notes"]).await;
    let cursor = commit(&carol_b, "notes", "first").await;
    assert_eq!(client.signal().await.1, cursor);

    // Cut both nodes' listening connections, and commit right away, while
    // node A is reconnecting: its notification is lost, and node A must
    // re-read the head once it listens again.
    let admin = sqlx::PgPool::connect(&cluster.url).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&admin)
        .await
        .unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 2, "expected one listener per node");
    let cursor = commit(&carol_b, "notes", "during").await;
    assert_eq!(client.signal().await.1, cursor, "{}", cluster.logs());
    // And it listens again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cursor = commit(&carol_b, "notes", "after").await;
    assert_eq!(client.signal().await.1, cursor);
    let metrics = reqwest::get(format!("{}/metrics", cluster.a.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_realtime_listener_reconnects_total "))
        .unwrap();
    assert!(reconnects.parse::<u64>().unwrap() >= 1, "{metrics}");
}

#[tokio::test]
async fn one_node_announces_its_own_commits() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let token = server.token("dave@example.com");
    let dave = server.client(&token);
    let personal = format!("user:{}", dave.user_id().await);
    let mut client = ws(&server, &token, &[&personal]).await;
    let cursor = commit(&dave, &personal, "b1").await;
    assert_eq!(client.signal().await, (personal.clone(), cursor));

    // SIGTERM closes realtime connections and the server still exits
    // cleanly.
    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(client.closed().await, Some(1001));
}
