//! The client commands against a real `ferry serve`: two replicas on one
//! machine converge, `watch` shows the other's writes live, and client
//! processes and the server killed with SIGKILL at random moments lose
//! nothing and apply nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Db, Server, ferry};
use ferry_client::{Query, Replica, ReplicaConfig};
use ferry_core::{Collection, RecordId};
use serde_json::{Map, Value, json};

/// A replica file signed in as `email`.
async fn signed_in(server: &Server, dir: &Path, name: &str, email: &str) -> PathBuf {
    signed_in_token(server, dir, name, &server.token(email)).await
}

/// A replica file signed in with `token`.
async fn signed_in_token(server: &Server, dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    replica
        .sign_in_with_token(&server.url, token)
        .await
        .unwrap();
    path
}

fn run(replica: &Path, args: &[&str]) -> Output {
    let out = ferry()
        .args(args)
        .arg("--replica")
        .arg(replica)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn two_replicas_converge_through_the_cli() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let a = signed_in(&server, db.dir.path(), "a.db", "ada@example.com").await;
    let b = signed_in(&server, db.dir.path(), "b.db", "ada@example.com").await;

    let put = run(
        &a,
        &[
            "put",
            "todos",
            "milk",
            r#"{"title": "Milk", "done": false}"#,
        ],
    );
    assert!(stdout(&put).contains("Synced"), "{}", stdout(&put));
    run(&a, &["put", "todos", "bread", r#"{"title": "Bread"}"#]);
    run(&b, &["sync"]);
    assert_eq!(
        stdout(&run(&b, &["get", "todos", "milk"])).trim(),
        r#"{"done":false,"title":"Milk"}"#
    );
    // Fields not named stay; --replace makes the record exactly the body.
    run(&b, &["put", "todos", "milk", r#"{"done": true}"#]);
    run(&a, &["sync"]);
    assert_eq!(
        stdout(&run(&a, &["get", "todos", "milk"])).trim(),
        r#"{"done":true,"title":"Milk"}"#
    );
    run(&a, &["rm", "todos", "bread"]);
    run(&b, &["sync"]);
    let listed = stdout(&run(&b, &["ls", "todos", "--order", "title:desc"]));
    assert_eq!(listed.trim(), r#"{"done":true,"id":"milk","title":"Milk"}"#);
    let open = stdout(&run(&b, &["ls", "todos", "--where", "done=false"]));
    assert_eq!(open.trim(), "");
    assert_eq!(stdout(&run(&b, &["conflicts"])).trim(), "");

    // A space where b may only read: its write is refused, shown once by
    // `conflicts`, and the record holds the server's copy again.
    let owner = server.client(&server.token("ada@example.com"));
    owner.create_space("shared").await;
    let viewer = server.token("viewer@example.com");
    let v = signed_in_token(&server, db.dir.path(), "v.db", &viewer).await;
    let viewer_id = server.client(&viewer).user_id().await;
    let (status, body) = owner
        .send(
            reqwest::Method::PUT,
            &format!("/v1/spaces/shared/members/{viewer_id}"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    run(
        &v,
        &[
            "put",
            "notes",
            "n",
            r#"{"text": "mine"}"#,
            "--space",
            "shared",
        ],
    );
    let shown = stdout(&run(&v, &["conflicts"]));
    assert!(shown.contains("\"code\":\"forbidden\""), "{shown}");
    assert_eq!(stdout(&run(&v, &["conflicts"])).trim(), "");
    let gone = ferry()
        .args(["get", "notes", "n", "--space", "shared", "--replica"])
        .arg(&v)
        .output()
        .unwrap();
    assert!(!gone.status.success());

    // Signing out wipes the replica: nothing of the user is left.
    assert!(stdout(&run(&b, &["logout"])).contains("wiped"));
    assert_eq!(stdout(&run(&b, &["ls", "todos"])).trim(), "");
    let bytes: Vec<u8> = std::fs::read_dir(db.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("b.db"))
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        !bytes.windows(4).any(|w| w == b"Milk"),
        "the data is still on disk"
    );
    let after = ferry()
        .args(["sync", "--replica"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("not signed in"));

    // Bad input: a clear error, nothing written.
    let bad = ferry()
        .args(["put", "todos", "x", "not json", "--replica"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not JSON"));
}

#[tokio::test]
async fn watch_shows_the_other_replica_s_writes_as_they_happen() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let a = signed_in(&server, db.dir.path(), "a.db", "bo@example.com").await;
    let b = signed_in(&server, db.dir.path(), "b.db", "bo@example.com").await;
    let mut watch = ferry()
        .args(["watch", "--replica"])
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Let watch connect and subscribe.
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    run(&a, &["put", "notes", "n1", r#"{"text": "hello from a"}"#]);
    let seen = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("watch printed nothing within 10 s");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == "n1" {
            break v;
        }
    };
    println!(
        "seen by watch {:?} after the put started",
        started.elapsed()
    );
    assert_eq!(seen["from"], "remote");
    assert_eq!(seen["fields"], json!({"text": "hello from a"}));
    watch.kill().unwrap();
    watch.wait().unwrap();
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn integrity(file: &Path) -> String {
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Real client processes (`ferry put`, `ferry sync`) killed with SIGKILL
/// at seeded random moments, and from the second half on the server too,
/// `FERRY_CLIENT_CRASH_ROUNDS` times (default 48; `FERRY_CLIENT_CRASH_SEED`
/// picks the moments). A put that returned is a write the replica promised
/// to keep. At the end: every such write is on the server, and so is every
/// other write the replica holds (a put killed before its commit may be
/// missing from both, never from one only); each record took exactly one
/// seq and holds its one write (no batch applied twice moved it again); the
/// outbox is empty; and the replica's and the server's database files pass
/// `PRAGMA integrity_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_clients_and_the_server_at_random_moments_loses_nothing() {
    use proptest::prelude::Rng;
    use proptest::test_runner::{RngAlgorithm, TestRng};
    use std::collections::BTreeSet;
    let rounds = env_number("FERRY_CLIENT_CRASH_ROUNDS", 48);
    let seed = env_number("FERRY_CLIENT_CRASH_SEED", 1);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let db = Db::new().await;
    let mut server = Server::start(&db);
    let listen = server.url.trim_start_matches("http://").to_owned();
    let path = signed_in(&server, db.dir.path(), "r.db", "cy@example.com").await;
    let space = Replica::open(&path, ReplicaConfig::default())
        .unwrap()
        .personal_space()
        .unwrap();
    let notes = Collection::new("notes").unwrap();
    let (mut kept, mut maybe) = (BTreeSet::new(), BTreeSet::new());
    let mut next = 0u64;
    let (mut puts_killed, mut syncs_killed, mut servers_killed) = (0, 0, 0);
    for round in 0..rounds {
        let server_too = round >= rounds / 2 && rng.next_u64().is_multiple_of(2);
        if rng.next_u64().is_multiple_of(2) {
            // One write, its process killed before, during or after its sync.
            let i = next;
            next += 1;
            let mut put = ferry()
                .args([
                    "put",
                    "notes",
                    &format!("n{i:06}"),
                    &format!(r#"{{"n": {i}}}"#),
                ])
                .arg("--replica")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 60));
            if put.try_wait().unwrap().is_none() {
                put.kill().unwrap();
                puts_killed += 1;
            }
            // Exited 0: written and synced. Killed, or failed to sync: the
            // write may or may not be in the replica.
            match put.wait().unwrap().success() {
                true => kept.insert(i),
                false => maybe.insert(i),
            };
        } else {
            // Writes made in this process, then a sync killed mid-way.
            let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
            for _ in 0..50 + rng.next_u64() % 400 {
                let mut fields = Map::new();
                fields.insert("n".into(), json!(next));
                let id = RecordId::new(format!("n{next:06}")).unwrap();
                replica.put(&space, &notes, &id, fields).unwrap();
                kept.insert(next);
                next += 1;
            }
            drop(replica);
            let mut sync = ferry()
                .args(["sync", "--replica"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(5 + rng.next_u64() % 250));
            if server_too {
                server.kill9();
                servers_killed += 1;
                std::thread::sleep(Duration::from_millis(rng.next_u64() % 50));
                server = Server::start_on(&db, &listen);
            }
            if sync.try_wait().unwrap().is_none() {
                sync.kill().unwrap();
                syncs_killed += 1;
            }
            sync.wait().unwrap();
        }
    }
    run(&path, &["sync"]);
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    assert_eq!(replica.pending().unwrap(), 0, "seed {seed}: the outbox");
    let local: BTreeSet<u64> = replica
        .list(&space, &notes, &Query::new())
        .unwrap()
        .iter()
        .map(|r| r.fields["n"].as_u64().unwrap())
        .collect();
    let lost: Vec<_> = kept.difference(&local).collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: writes the replica promised are gone: {lost:?}"
    );
    let unknown: Vec<_> = local
        .iter()
        .filter(|n| !kept.contains(n) && !maybe.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "seed {seed}: writes never made: {unknown:?}"
    );

    let client = server.client(&server.token("cy@example.com"));
    let mut records: Vec<Value> = Vec::new();
    let mut cursor = 0;
    loop {
        let (status, page) = client
            .get(&format!(
                "/v1/spaces/{space}/changes?cursor={cursor}&limit=10000"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        records.extend(page["changes"].as_array().unwrap().iter().cloned());
        cursor = page["cursor"].as_u64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    let on_server: BTreeSet<u64> = records
        .iter()
        .map(|r| {
            let n = r["fields"]["n"]["value"].as_u64().unwrap();
            assert_eq!(r["id"], json!(format!("n{n:06}")), "seed {seed}: {r}");
            n
        })
        .collect();
    assert_eq!(
        on_server, local,
        "seed {seed}: the server and the replica differ"
    );
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "seed {seed}: a record was written twice"
    );
    drop(replica);
    assert_eq!(
        integrity(&path),
        "ok",
        "seed {seed}: the replica file is damaged"
    );
    server.kill9();
    if let Some(file) = db.sqlite_file() {
        assert_eq!(
            integrity(&file),
            "ok",
            "seed {seed}: the server's file is damaged"
        );
    }
    assert!(
        puts_killed + syncs_killed > 0,
        "seed {seed}: no client was killed mid-way"
    );
    println!(
        "client crash: seed {seed}, {rounds} rounds: {puts_killed} puts and {syncs_killed} syncs \
         killed, {servers_killed} server kill -9s; {} writes promised, {} more made by killed \
         puts, all on the server once",
        kept.len(),
        local.len() - kept.len()
    );
}
