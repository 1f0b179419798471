//! End-to-end sync against a real `ferry serve` over HTTP: what a newcomer
//! tries first, concurrent writers under a paging reader, and kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Client, Db, Server, now_ms};
use ferry_core::{ClientId, Hlc};
use serde_json::{Value, json};

fn up(id: &str, fields: Value) -> Value {
    json!({"op": "upsert", "collection": "todos", "id": id, "fields": fields})
}

/// A replica's clock: ticks with the wall clock, observes the server.
struct Clock(Hlc);

impl Clock {
    fn new(node: &str) -> Clock {
        Clock(Hlc::zero(ClientId::new(node).unwrap()))
    }
    fn tick(&mut self) -> String {
        self.0 = self.0.tick(now_ms());
        self.0.to_string()
    }
    fn observe(&mut self, body: &Value) {
        if let Some(h) = body["hlc"].as_str() {
            self.0 = self.0.observe(&h.parse().unwrap(), now_ms());
        }
    }
}

#[tokio::test]
async fn the_newcomer_walkthrough() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let ada = server.client(&server.token("ada@example.com"));
    let eve = server.client(&server.token("eve@example.com"));
    ada.create_space("groceries").await;

    let (mut laptop, mut phone) = (Clock::new("laptop"), Clock::new("phone"));
    let early = laptop.tick();
    let title_phone = phone.tick();
    // The phone wrote later, so its title wins; the laptop's `done` is new.
    let (s, r) = ada
        .sync("groceries", json!({"client_id": "phone", "batch_id": "p-1", "cursor": 0,
            "changes": [up("milk", json!({"title": {"value": "Buy oat milk", "hlc": title_phone}}))]}))
        .await;
    assert_eq!((s, &r["applied"]), (200, &json!(1)));
    let laptop_batch = json!({"client_id": "laptop", "batch_id": "l-1", "cursor": 0,
        "changes": [up("milk", json!({"title": {"value": "Buy milk", "hlc": early},
                                       "done": {"value": true, "hlc": early}}))]});
    let (_, r) = ada.sync("groceries", laptop_batch.clone()).await;
    assert_eq!(r["applied"], 1);
    assert_eq!(r["conflicts"][0]["kind"], "stale_write");
    assert_eq!(r["conflicts"][0]["winner"]["value"], "Buy oat milk");
    let rec = &r["changes"][0];
    assert_eq!(rec["fields"]["title"]["value"], "Buy oat milk");
    assert_eq!(rec["fields"]["done"]["value"], true);
    laptop.observe(&r);

    // Retrying the same batch (a lost answer) applies nothing twice.
    let (_, again) = ada.sync("groceries", laptop_batch).await;
    assert_eq!(again["applied"], r["applied"]);
    assert_eq!(again["conflicts"], r["conflicts"]);
    assert_eq!(again["cursor"], r["cursor"]);

    // Delete wins over a later edit.
    let (_, r) = ada
        .sync("groceries", json!({"client_id": "phone", "batch_id": "p-2", "cursor": 2,
            "changes": [{"op": "delete", "collection": "todos", "id": "milk", "hlc": phone.tick()}]}))
        .await;
    assert!(r["changes"][0]["deleted"].as_str().is_some());
    let (_, r) = ada
        .sync("groceries", json!({"client_id": "laptop", "batch_id": "l-2", "cursor": 3,
            "changes": [up("milk", json!({"title": {"value": "Buy more milk", "hlc": laptop.tick()}}))]}))
        .await;
    assert_eq!(r["applied"], 0);
    assert_eq!(r["conflicts"][0]["kind"], "record_deleted");

    // Cursor paging.
    let changes: Vec<Value> = (0..25)
        .map(|i| {
            up(
                &format!("item-{i:02}"),
                json!({"n": {"value": i, "hlc": laptop.tick()}}),
            )
        })
        .collect();
    ada.sync(
        "groceries",
        json!({"client_id": "laptop", "batch_id": "l-3", "cursor": 3, "changes": changes}),
    )
    .await;
    let (mut cursor, mut pages, mut seen) = (0, 0, 0);
    loop {
        let (_, page) = ada
            .get(&format!(
                "/v1/spaces/groceries/changes?cursor={cursor}&limit=10"
            ))
            .await;
        pages += 1;
        seen += page["changes"].as_array().unwrap().len();
        cursor = page["cursor"].as_u64().unwrap();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!((pages, seen, cursor), (3, 26, 28));

    // Eve sees none of it, whatever she tries.
    for path in [
        "/v1/spaces/groceries/changes",
        "/v1/spaces/groceries/members",
        "/v1/spaces/groceries/collections/todos/records",
        "/v1/spaces/groceries/collections/todos/records/item-01",
    ] {
        let (status, body) = eve.get(path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, _) = eve.sync("groceries", json!({"client_id": "eve"})).await;
    assert_eq!(status, 404);
}

/// Pages through `space` by cursor until told the writers are done and a
/// page says nothing more waits; returns every record seen (the latest
/// version of each) and the final cursor.
async fn page_until_done(
    client: Client,
    space: String,
    done: Arc<AtomicBool>,
) -> (HashMap<String, Value>, u64) {
    let mut replica: HashMap<String, Value> = HashMap::new();
    let mut cursor = 0u64;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let (status, page) = client
            .get(&format!(
                "/v1/spaces/{space}/changes?cursor={cursor}&limit=7"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        for rec in page["changes"].as_array().unwrap() {
            let seq = rec["seq"].as_u64().unwrap();
            assert!(seq > cursor, "records come after the cursor");
            replica.insert(rec["id"].as_str().unwrap().to_owned(), rec.clone());
        }
        let next = page["cursor"].as_u64().unwrap();
        assert!(next >= cursor, "the cursor never goes back");
        cursor = next;
        if finished && !page["has_more"].as_bool().unwrap() {
            return (replica, cursor);
        }
    }
}

/// Writer `w`'s batches: mostly records of its own, which a reader that
/// skipped a late commit would never see again, and one record all writers
/// share, so fields conflict.
async fn write_batches(client: Client, space: String, w: usize, batches: usize) {
    let node = format!("writer-{w}");
    let mut clock = Clock::new(&node);
    for b in 0..batches {
        let mut changes: Vec<Value> = (0..4)
            .map(|i| {
                up(
                    &format!("w{w}-{b}-{i}"),
                    json!({"n": {"value": b, "hlc": clock.tick()}}),
                )
            })
            .collect();
        changes.push(up(
            &format!("shared-{}", b % 3),
            json!({"by": {"value": node, "hlc": clock.tick()},
                   &format!("w{w}"): {"value": b, "hlc": clock.tick()}}),
        ));
        let body = json!({"client_id": node, "batch_id": format!("b{b}"), "cursor": 0,
                          "changes": changes, "limit": 1});
        let (status, body) = client.sync(&space, body).await;
        assert_eq!(status, 200, "{body}");
        clock.observe(&body);
    }
}

/// One round: `writers` write concurrently while `readers` page by cursor;
/// every reader must end with exactly the server's final state, as read
/// through each reader's own node.
async fn concurrent_round(space: &str, writers: &[Client], readers: &[Client], batches: usize) {
    let done = Arc::new(AtomicBool::new(false));
    let reading: Vec<_> = readers
        .iter()
        .map(|r| tokio::spawn(page_until_done(r.clone(), space.to_owned(), done.clone())))
        .collect();
    let writing: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(w, c)| tokio::spawn(write_batches(c.clone(), space.to_owned(), w, batches)))
        .collect();
    for w in writing {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for (reader, task) in readers.iter().zip(reading) {
        let (replica, cursor) = task.await.unwrap();
        let (_, all) = reader
            .get(&format!("/v1/spaces/{space}/changes?limit=10000"))
            .await;
        let truth: HashMap<String, Value> = all["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
            .collect();
        assert_eq!(truth.len(), writers.len() * batches * 4 + 3.min(batches));
        assert_eq!(cursor, all["cursor"].as_u64().unwrap());
        let missing: Vec<_> = truth.keys().filter(|k| !replica.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "the reader skipped {} records, among them {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert_eq!(
            replica, truth,
            "the paging reader holds exactly the final state"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_and_two_paging_readers_end_with_exactly_the_final_state() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let owner = server.client(&server.token("owner@example.com"));
    let writers = vec![owner.clone(); 8];
    let readers = vec![owner.clone(); 2];
    for round in 0..4 {
        let space = format!("busy-{round}");
        owner.create_space(&space).await;
        concurrent_round(&space, &writers, &readers, 12).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_serve_one_space_with_cursors_intact() {
    let db = Db::new().await;
    let (a, b) = (Server::start(&db), Server::start(&db));
    let token = a.token("owner@example.com");
    let (on_a, on_b) = (a.client(&token), b.client(&token));
    on_a.create_space("shared").await;
    // Writes through A are pulled through B.
    let (status, body) = on_a
        .sync(
            "shared",
            json!({"client_id": "c", "batch_id": "1", "cursor": 0,
            "changes": [up("first", json!({"n": {"value": 1, "hlc": Clock::new("c").tick()}}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = on_b.get("/v1/spaces/shared/changes?cursor=0").await;
    assert_eq!(page["changes"][0]["id"], "first");
    assert_eq!(page["cursor"], body["cursor"]);
    // Writers and readers spread over both nodes.
    let writers: Vec<Client> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            }
        })
        .collect();
    on_b.create_space("busy").await;
    concurrent_round("busy", &writers, &[on_a.clone(), on_b.clone()], 10).await;
    let (_, from_a) = on_a.get("/v1/spaces/busy/changes?limit=10000").await;
    let (_, from_b) = on_b.get("/v1/spaces/busy/changes?limit=10000").await;
    assert_eq!(from_a["changes"], from_b["changes"]);
}

/// What a pusher knows when its server dies: the ids whose push was
/// answered 200, and the batch that was sent but never answered.
struct Pushed {
    acked: Vec<String>,
    in_flight: Option<(Value, Vec<String>)>,
}

/// Pushes batches of three new records as replica `pusher` until a push
/// goes unanswered (the server was killed) or it is told to stop.
async fn push_until_killed(
    client: Client,
    pusher: usize,
    stop: Arc<AtomicBool>,
    start: usize,
) -> Pushed {
    let mut acked = Vec::new();
    let name = format!("pusher-{pusher}");
    let mut clock = Clock::new(&name);
    for i in start.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Three records per batch: after a crash, all three or none.
        let ids: Vec<String> = (0..3).map(|k| format!("rec-{pusher}-{i:06}-{k}")).collect();
        let changes: Vec<Value> = ids
            .iter()
            .map(|id| up(id, json!({"n": {"value": i, "hlc": clock.tick()}})))
            .collect();
        let body = json!({"client_id": name, "batch_id": format!("b{i}"), "cursor": 0,
                          "limit": 1, "changes": changes});
        match client.try_sync("crash", body.clone()).await {
            Some(200) => acked.extend(ids),
            _ => {
                return Pushed {
                    acked,
                    in_flight: Some((body, ids)),
                };
            }
        }
    }
    Pushed {
        acked,
        in_flight: None,
    }
}

impl Client {
    async fn try_sync(&self, space: &str, body: Value) -> Option<u16> {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/spaces/{space}/sync", self.base()))
            .bearer_auth(self.bearer())
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        // An answer counts only once it has fully arrived.
        res.bytes().await.ok()?;
        Some(status)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Replicas pushing at once in the crash harness.
const PUSHERS: usize = 6;

/// The transactions that committed pushes on `server` since it started,
/// and the pushes they committed (from its metrics; 0 where the backend
/// does not count them).
async fn push_commits(server: &Server) -> (f64, f64) {
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let total = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        total("ferry_db_push_commits_total"),
        total("ferry_db_pushes_committed_total"),
    )
}

/// `ferry serve` is killed with SIGKILL at a random moment while
/// [`PUSHERS`] replicas push, `FERRY_CRASH_ROUNDS` times (default 24; the seed is
/// `FERRY_CRASH_SEED`, default 1). After each restart the client sends its
/// unanswered batch again with the same batch id, as Ferry's clients do.
/// At the end: no acknowledged write is lost, every batch is there whole
/// or not at all, none was applied twice (each record is written once, so
/// the space's sequence numbers are dense), and on SQLite the database
/// file passes `PRAGMA integrity_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    use proptest::prelude::Rng;
    use proptest::test_runner::{RngAlgorithm, TestRng};
    let rounds = env_number("FERRY_CRASH_ROUNDS", 24);
    let seed = env_number("FERRY_CRASH_SEED", 1);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let db = Db::new().await;
    let mut acked_total = Vec::new();
    let mut retried = 0;
    let mut grouped = (0.0, 0.0);
    let mut server = Server::start(&db);
    let token = server.token("crash@example.com");
    server.client(&token).create_space("crash").await;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        // Several replicas at once, so that their pushes share commits
        // (SQLite's group commit) when the kill comes.
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                tokio::spawn(push_until_killed(
                    server.client(&token),
                    p,
                    stop.clone(),
                    round as usize * 100_000,
                ))
            })
            .collect();
        // Let some pushes land, then kill the server mid-stream.
        let wait = 20 + rng.next_u64() % 400;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let (commits, pushes) = push_commits(&server).await;
        grouped.0 += commits;
        grouped.1 += pushes;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut unanswered = Vec::new();
        for pusher in pushers {
            let pushed = pusher.await.unwrap();
            acked_total.extend(pushed.acked);
            unanswered.extend(pushed.in_flight);
        }
        server = Server::start(&db);
        for (body, ids) in unanswered {
            let client = server.client(&token);
            let (status, answer) = client.sync("crash", body).await;
            assert_eq!(status, 200, "seed {seed} round {round}: retry: {answer}");
            assert_eq!(answer["applied"], 3, "seed {seed} round {round}: {answer}");
            acked_total.extend(ids);
            retried += 1;
        }
    }
    let client = server.client(&token);
    let mut changes: Vec<Value> = Vec::new();
    let mut cursor = 0;
    loop {
        let (status, page) = client
            .get(&format!(
                "/v1/spaces/crash/changes?cursor={cursor}&limit=5000"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        changes.extend(page["changes"].as_array().unwrap().iter().cloned());
        cursor = page["cursor"].as_u64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    let stored: std::collections::HashSet<String> = changes
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked_total
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged writes lost: {lost:?}"
    );
    // Batches whose answer never came are there whole or not at all.
    let mut per_batch: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *per_batch.entry(&id[..id.len() - 2]).or_default() += 1;
    }
    let partial: Vec<_> = per_batch.iter().filter(|(_, n)| **n != 3).collect();
    assert!(
        partial.is_empty(),
        "seed {seed}: half-applied batches: {partial:?}"
    );
    // Each record is written once, so seqs are dense: no double apply
    // (a batch applied again would move its records to new seqs).
    let seqs: Vec<u64> = changes.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seed {seed}: a batch was applied twice"
    );
    server.kill9();
    if let Some(file) = db.sqlite_file() {
        let conn = rusqlite::Connection::open(file).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "seed {seed}: the database file is damaged");
    }
    let grouped = grouped.1 / grouped.0.max(1.0);
    if db.sqlite_file().is_some() {
        // Otherwise the kills never fell on a shared commit.
        assert!(
            grouped > 1.0,
            "seed {seed}: {PUSHERS} pushers never shared a commit ({grouped:.2} pushes per commit)"
        );
    }
    println!(
        "crash: seed {seed}, {rounds} kill -9s, {PUSHERS} pushers ({grouped:.2} pushes per commit), {} acknowledged writes kept, {retried} unanswered batches sent \
         again, {} batches stored whole, none twice",
        acked_total.len(),
        per_batch.len()
    );
}
