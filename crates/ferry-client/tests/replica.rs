//! The replica alone: local writes, their outbox, the clock, limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Error, Replica, ReplicaConfig, Source};
use ferry_core::{Collection, Hlc, RecordId, SpaceId};
use serde_json::{Map, Value, json};

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn names() -> (SpaceId, Collection, RecordId) {
    (
        SpaceId::new("user:u").unwrap(),
        Collection::new("notes").unwrap(),
        RecordId::new("n1").unwrap(),
    )
}

fn stored_hlc(path: &std::path::Path) -> Hlc {
    let conn = rusqlite::Connection::open(path).unwrap();
    let text: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'hlc'", [], |r| r.get(0))
        .unwrap();
    text.parse().unwrap()
}

#[test]
fn writes_queue_in_the_outbox_and_the_clock_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let (space, notes, n1) = names();
    let r = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let client = r.client_id().clone();
    let mut changes = r.subscribe();
    r.put(
        &space,
        &notes,
        &n1,
        fields(json!({"title": "a", "body": "b"})),
    )
    .unwrap();
    r.patch(&space, &notes, &n1, fields(json!({"title": "c"})))
        .unwrap();
    // put makes the record exactly what it names.
    r.put(&space, &notes, &n1, fields(json!({"title": "d"})))
        .unwrap();
    assert_eq!(
        r.get(&space, &notes, &n1).unwrap().unwrap().fields,
        fields(json!({"title": "d", "body": null}))
    );
    assert_eq!(r.pending().unwrap(), 3);
    assert_eq!(changes.try_recv().unwrap().source, Source::Local);
    let first = stored_hlc(&path);
    drop(r);

    // A clock far ahead before the restart (say, a server's): the next
    // write still goes above it.
    let ahead = Hlc::new(first.physical() + 3_600_000, 7, client.clone()).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'hlc'",
            [ahead.to_string()],
        )
        .unwrap();
    let r = Replica::open(&path, ReplicaConfig::default()).unwrap();
    assert_eq!(r.client_id(), client);
    assert_eq!(r.pending().unwrap(), 3);
    r.patch(&space, &notes, &n1, fields(json!({"title": "e"})))
        .unwrap();
    assert!(stored_hlc(&path) > ahead);
}

#[test]
fn bad_writes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let (space, notes, n1) = names();
    let huge = "x".repeat(1024 * 1024 + 1);
    for bad in [
        json!({}),
        json!({"bad-name": 1}),
        json!({"_reserved": 1}),
        json!({"body": huge}),
    ] {
        let err = r.put(&space, &notes, &n1, fields(bad)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }
    assert_eq!(r.pending().unwrap(), 0);
    assert_eq!(r.get(&space, &notes, &n1).unwrap(), None);
    r.delete(&space, &notes, &n1).unwrap();
    assert!(matches!(
        r.patch(&space, &notes, &n1, fields(json!({"a": 1}))),
        Err(Error::Invalid(_))
    ));
    assert_eq!(r.pending().unwrap(), 1);
}

#[test]
fn two_handles_on_one_file_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let (space, notes, n1) = names();
    let a = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let b = Replica::open(&path, ReplicaConfig::default()).unwrap();
    assert_eq!(a.client_id(), b.client_id());
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, r)| {
            let (space, notes) = (space.clone(), notes.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let id = RecordId::new(format!("w{w}-{i}")).unwrap();
                    r.put(&space, &notes, &id, fields(json!({"i": i}))).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(a.pending().unwrap(), 100);
    assert_eq!(b.pending().unwrap(), 100);
    assert_eq!(a.get(&space, &notes, &n1).unwrap(), None);
}

#[test]
fn one_handle_at_a_time_holds_the_sync_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let a = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let b = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let held = a.try_sync_lock().expect("the lock is free");
    assert!(b.try_sync_lock().is_none());
    assert!(a.try_sync_lock().is_none());
    drop(held);
    assert!(b.try_sync_lock().is_some());
}
