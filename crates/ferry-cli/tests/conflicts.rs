//! The conflict stories through the CLI against a real `ferry serve`: two
//! replicas write offline (the server down), then come back in either
//! order; the one whose write lost finds both versions in `ferry
//! conflicts`, the other finds nothing, and a write lost to a delete comes
//! back with `ferry conflicts --restore`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Db, Server, ferry};
use ferry_client::{Replica, ReplicaConfig};
use serde_json::Value;

async fn signed_in(server: &Server, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    replica
        .sign_in_with_token(&server.url, &server.token("ada@example.com"))
        .await
        .unwrap();
    path
}

fn run(replica: &Path, args: &[&str]) -> String {
    let out: Output = ferry()
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `ferry conflicts` lists, one JSON value per line.
fn conflicts(replica: &Path) -> Vec<Value> {
    run(replica, &["conflicts"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two replicas holding `x = {"title": "orig"}`, and the server stopped.
async fn offline_pair(db: &Db) -> (Server, PathBuf, PathBuf) {
    let mut server = Server::start(db);
    let a = signed_in(&server, db.dir.path(), "a.db").await;
    let b = signed_in(&server, db.dir.path(), "b.db").await;
    run(&a, &["put", "notes", "x", r#"{"title": "orig"}"#]);
    run(&b, &["sync"]);
    assert!(server.terminate().success());
    (server, a, b)
}

fn restart(db: &Db, stopped: &Server) -> Server {
    let listen = stopped.url.trim_start_matches("http://").to_owned();
    Server::start_on(db, &listen)
}

fn later() {
    std::thread::sleep(std::time::Duration::from_millis(5));
}

#[tokio::test]
async fn the_older_offline_edit_is_told_whichever_replica_syncs_first() {
    for a_first in [false, true] {
        let db = Db::new().await;
        let (stopped, a, b) = offline_pair(&db).await;
        let saved = run(&a, &["put", "notes", "x", r#"{"title": "A older"}"#]);
        assert!(saved.contains("Saved locally"), "{saved}");
        later();
        run(&b, &["put", "notes", "x", r#"{"title": "B newer"}"#]);
        let _server = restart(&db, &stopped);
        let order = if a_first { [&a, &b, &a] } else { [&b, &a, &b] };
        for r in order {
            run(r, &["sync"]);
        }
        let lost = conflicts(&a);
        assert_eq!(lost.len(), 1, "a_first = {a_first}: {lost:?}");
        let c = &lost[0]["conflict"];
        assert_eq!(c["kind"], "stale_write");
        assert_eq!(c["yours"]["value"], "A older");
        assert_eq!(c["winner"]["value"], "B newer");
        assert!(conflicts(&b).is_empty(), "a_first = {a_first}");
        assert_eq!(
            run(&a, &["get", "notes", "x"]).trim(),
            r#"{"title":"B newer"}"#
        );
    }
}

#[tokio::test]
async fn a_write_lost_to_a_delete_is_restored_from_the_conflicts() {
    for delete_first in [true, false] {
        let db = Db::new().await;
        let (stopped, a, b) = offline_pair(&db).await;
        run(&b, &["rm", "notes", "x"]);
        later();
        run(&a, &["put", "notes", "x", r#"{"note": "LOSTWRITE-123"}"#]);
        let _server = restart(&db, &stopped);
        let order = if delete_first {
            [&b, &a, &b]
        } else {
            [&a, &b, &a]
        };
        for r in order {
            run(r, &["sync"]);
        }
        let lost = conflicts(&a);
        assert_eq!(lost.len(), 1, "delete_first = {delete_first}: {lost:?}");
        let c = &lost[0]["conflict"];
        assert_eq!(c["kind"], "record_deleted");
        assert_eq!(c["yours"]["value"]["note"]["value"], "LOSTWRITE-123");
        assert!(conflicts(&b).is_empty());
        let gone = ferry()
            .args(["get", "notes", "x", "--replica"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(!gone.status.success());

        let n = lost[0]["n"].to_string();
        let restored = run(&a, &["conflicts", "--restore", &n, "--id", "x2"]);
        assert!(restored.contains("Restored as x2"), "{restored}");
        assert!(conflicts(&a).is_empty());
        run(&b, &["sync"]);
        // What A wrote, not the title it had not written.
        assert_eq!(
            run(&b, &["get", "notes", "x2"]).trim(),
            r#"{"note":"LOSTWRITE-123"}"#
        );
    }
}
