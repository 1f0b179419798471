//! The client commands against a real `ferry serve`: two replicas on one
//! machine converge, `watch` shows the other's writes live, and a sync
//! killed with SIGKILL again and again loses nothing and applies nothing
//! twice.

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

#[tokio::test]
async fn a_sync_killed_again_and_again_loses_nothing_and_applies_nothing_twice() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let path = signed_in(&server, db.dir.path(), "r.db", "cy@example.com").await;
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let space = replica.personal_space().unwrap();
    let notes = Collection::new("notes").unwrap();
    let mut written = 0usize;
    let mut write = |n: usize| {
        for _ in 0..n {
            let mut fields = Map::new();
            fields.insert("n".into(), json!(written));
            fields.insert("text".into(), json!(format!("note number {written}")));
            let id = RecordId::new(format!("n{written:05}")).unwrap();
            replica.put(&space, &notes, &id, fields).unwrap();
            written += 1;
        }
    };
    write(4000);
    let mut kills = 0;
    for round in 0..12u64 {
        let mut sync = ferry()
            .args(["sync", "--replica"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Somewhere in the first few batches.
        std::thread::sleep(Duration::from_millis(20 + (round * 37) % 200));
        if sync.try_wait().unwrap().is_none() {
            sync.kill().unwrap();
            kills += 1;
        }
        sync.wait().unwrap();
        write(25);
    }
    assert!(kills >= 3, "only {kills} syncs were killed mid-way");
    run(&path, &["sync"]);
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    assert_eq!(replica.pending().unwrap(), 0);
    assert_eq!(
        replica.list(&space, &notes, &Query::new()).unwrap().len(),
        written
    );

    // The server holds every note once: each took exactly one seq.
    let client = server.client(&server.token("cy@example.com"));
    let (status, page) = client
        .get(&format!("/v1/spaces/{space}/changes?cursor=0&limit=10000"))
        .await;
    assert_eq!(status, 200);
    let records = page["changes"].as_array().unwrap();
    assert_eq!(records.len(), written);
    assert_eq!(page["cursor"].as_u64().unwrap(), written as u64);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["fields"]["n"]["value"], json!(i), "{r}");
    }
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let applied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_changes_applied_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(applied, written as u64, "{metrics}");
    println!("{kills} syncs killed; {written} notes, each applied once");
}
