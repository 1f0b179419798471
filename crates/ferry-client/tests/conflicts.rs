//! Conflicts between replicas, end to end against a real server on a
//! socket (127.0.0.1, port 0), on the backend `FERRY_TEST_BACKEND` names:
//! the loser of concurrent edits is told whichever replica syncs first, a
//! write lost to a delete is kept and can be restored, and the winner is
//! told nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_client::{Clock, Remote, Replica, ReplicaConfig, Resolution, Token, sync_space};
use ferry_core::conflict::restorable;
use ferry_core::{ClientId, Collection, ConflictKind, RecordId, SpaceId};
use ferry_server::clock::wall_ms;
use ferry_server::testing::{self, Guard, Served};
use ferry_server::{AppState, Settings};
use serde_json::{Value, json};

struct World {
    server: Served,
    store: Arc<dyn ferry_server::Store>,
    remote: Remote,
    dir: tempfile::TempDir,
    /// The replicas' wall clock, moved by the test.
    time: Arc<AtomicU64>,
    _guard: Guard,
}

async fn world() -> World {
    let (store, guard) = testing::fresh_store().await;
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    let server = Served::start(AppState::new(store.clone(), settings).await.unwrap()).await;
    let remote = Remote::new(&server.base, Arc::new(Token(server.token("ada")))).unwrap();
    World {
        server,
        store,
        remote,
        dir: tempfile::tempdir().unwrap(),
        time: Arc::new(AtomicU64::new(wall_ms())),
        _guard: guard,
    }
}

impl World {
    fn replica(&self, name: &str) -> Replica {
        let time = self.time.clone();
        let config = ReplicaConfig {
            client_id: Some(ClientId::new(name).unwrap()),
            clock: Clock::from_fn(move || time.load(Ordering::SeqCst)),
            ..ReplicaConfig::default()
        };
        Replica::open(self.dir.path().join(format!("{name}.db")), config).unwrap()
    }

    /// Moves the replicas' clock on, so the next write is later.
    fn later(&self) {
        self.time.fetch_add(10, Ordering::SeqCst);
    }

    async fn sync(&self, r: &Replica) -> ferry_client::SyncReport {
        sync_space(r, &self.remote, &space()).await.unwrap()
    }
}

fn space() -> SpaceId {
    SpaceId::new("user:ada").unwrap()
}
fn notes() -> Collection {
    Collection::new("notes").unwrap()
}
fn x() -> RecordId {
    RecordId::new("x").unwrap()
}

fn title(r: &Replica) -> Value {
    r.get(&space(), &notes(), &x()).unwrap().unwrap().fields["title"].clone()
}

/// Replicas a and b both hold `x = {"title": "orig"}`.
async fn both_hold_orig(w: &World) -> (Replica, Replica) {
    let (a, b) = (w.replica("a"), w.replica("b"));
    a.put(&space(), &notes(), &x(), json!({"title": "orig"}))
        .unwrap();
    w.sync(&a).await;
    w.sync(&b).await;
    assert_eq!(title(&b), json!("orig"));
    (a, b)
}

#[tokio::test]
async fn the_loser_of_concurrent_edits_is_told_whichever_syncs_first() {
    for a_first in [false, true] {
        let w = world().await;
        let (a, b) = both_hold_orig(&w).await;
        // Offline: A writes, then B (a later HLC).
        w.later();
        a.patch(&space(), &notes(), &x(), json!({"title": "A older"}))
            .unwrap();
        w.later();
        b.patch(&space(), &notes(), &x(), json!({"title": "B newer"}))
            .unwrap();
        if a_first {
            w.sync(&a).await;
            w.sync(&b).await;
        } else {
            w.sync(&b).await;
        }
        let report = w.sync(&a).await;
        w.sync(&b).await;
        assert_eq!(report.conflicts, 1, "a_first = {a_first}");
        for r in [&a, &b] {
            assert_eq!(title(r), json!("B newer"), "a_first = {a_first}");
        }
        let inbox = a.conflicts().unwrap();
        assert_eq!(inbox.len(), 1, "a_first = {a_first}: {inbox:?}");
        let c = &inbox[0].conflict;
        assert_eq!(c.kind, ConflictKind::StaleWrite);
        assert_eq!(c.field.as_ref().unwrap().as_str(), "title");
        assert_eq!(c.yours.as_ref().unwrap().value, json!("A older"));
        assert_eq!(c.winner.as_ref().unwrap().value, json!("B newer"));
        assert!(
            b.conflicts().unwrap().is_empty(),
            "the winner is told nothing"
        );
        // Syncing again tells nothing again.
        assert_eq!(w.sync(&a).await.conflicts, 0);
        assert_eq!(a.conflicts().unwrap().len(), 1);

        // Keeping mine writes it again: it wins everywhere, and B, who had
        // seen "B newer" replaced by it, is told nothing.
        a.resolve(inbox[0].n, Resolution::KeepMine).unwrap();
        w.sync(&a).await;
        w.sync(&b).await;
        assert_eq!(title(&b), json!("A older"));
        assert!(a.conflicts().unwrap().is_empty());
        assert!(b.conflicts().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_plain_edit_after_seeing_the_other_tells_no_one() {
    let w = world().await;
    let (a, b) = both_hold_orig(&w).await;
    w.later();
    a.patch(&space(), &notes(), &x(), json!({"title": "A"}))
        .unwrap();
    w.sync(&a).await;
    w.sync(&b).await;
    w.later();
    b.patch(&space(), &notes(), &x(), json!({"title": "B"}))
        .unwrap();
    w.sync(&b).await;
    w.sync(&a).await;
    assert_eq!(title(&a), json!("B"));
    assert!(a.conflicts().unwrap().is_empty());
    assert!(b.conflicts().unwrap().is_empty());
}

#[tokio::test]
async fn of_three_writers_every_loser_is_told_and_the_winner_is_not() {
    let w = world().await;
    let (a, b) = both_hold_orig(&w).await;
    let c = w.replica("c");
    w.sync(&c).await;
    for r in [&a, &b, &c] {
        w.later();
        let name = r.client_id().to_string();
        r.patch(&space(), &notes(), &x(), json!({ "title": name }))
            .unwrap();
    }
    // The middle writer first, then the oldest, then the newest.
    for r in [&b, &a, &c, &a, &b] {
        w.sync(r).await;
    }
    for (r, lost) in [(&a, Some("a")), (&b, Some("b")), (&c, None)] {
        let inbox = r.conflicts().unwrap();
        match lost {
            Some(v) => {
                assert_eq!(inbox.len(), 1, "{}: {inbox:?}", r.client_id());
                assert_eq!(inbox[0].conflict.yours.as_ref().unwrap().value, json!(v));
            }
            None => assert!(inbox.is_empty(), "{inbox:?}"),
        }
        assert_eq!(title(r), json!("c"));
    }
}

#[tokio::test]
async fn a_write_lost_to_a_delete_is_kept_and_restored_in_either_order() {
    for delete_first in [true, false] {
        let w = world().await;
        let (a, b) = both_hold_orig(&w).await;
        // Offline: B deletes x; A, not having seen it, writes a note.
        w.later();
        b.delete(&space(), &notes(), &x()).unwrap();
        w.later();
        a.patch(&space(), &notes(), &x(), json!({"note": "LOSTWRITE-123"}))
            .unwrap();
        if delete_first {
            w.sync(&b).await;
            w.sync(&a).await;
        } else {
            w.sync(&a).await;
            w.sync(&b).await;
            w.sync(&a).await;
        }
        w.sync(&b).await;
        for r in [&a, &b] {
            assert_eq!(r.get(&space(), &notes(), &x()).unwrap(), None);
        }
        assert!(
            b.conflicts().unwrap().is_empty(),
            "the deleter is told nothing"
        );
        let inbox = a.conflicts().unwrap();
        assert_eq!(inbox.len(), 1, "delete_first = {delete_first}: {inbox:?}");
        let c = &inbox[0].conflict;
        assert_eq!(c.kind, ConflictKind::RecordDeleted);
        assert_eq!(
            Value::Object(restorable(c)),
            json!({"note": "LOSTWRITE-123"})
        );
        // A delete is final: keeping mine says to restore instead.
        assert!(a.resolve(inbox[0].n, Resolution::KeepMine).is_err());
        let restored = a.restore(inbox[0].n, None).unwrap();
        assert!(a.conflicts().unwrap().is_empty());
        w.sync(&a).await;
        w.sync(&b).await;
        let on_b = b.get(&space(), &notes(), &restored).unwrap().unwrap();
        assert_eq!(on_b.fields["note"], json!("LOSTWRITE-123"));
    }
}

#[tokio::test]
async fn edits_pending_when_a_resync_meets_the_delete_are_kept() {
    let w = world().await;
    let (a, b) = both_hold_orig(&w).await;
    let y = RecordId::new("y").unwrap();
    b.put(&space(), &notes(), &y, json!({"title": "y"}))
        .unwrap();
    w.sync(&b).await;
    // While A is away: y is deleted and compacted (A's cursor expires),
    // then x is deleted; A writes to x, not knowing.
    w.later();
    b.delete(&space(), &notes(), &y).unwrap();
    w.sync(&b).await;
    w.store.compact(wall_ms() + 1).await.unwrap();
    w.later();
    b.delete(&space(), &notes(), &x()).unwrap();
    w.sync(&b).await;
    w.later();
    a.patch(&space(), &notes(), &x(), json!({"note": "typed offline"}))
        .unwrap();
    let report = w.sync(&a).await;
    assert!(report.expired && report.resynced, "{report:?}");
    assert_eq!(a.pending().unwrap(), 0);
    let inbox = a.conflicts().unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(
        Value::Object(restorable(&inbox[0].conflict)),
        json!({"note": "typed offline"})
    );
    assert_eq!(
        inbox[0]
            .conflict
            .winner
            .as_ref()
            .map(|w| w.hlc.node().as_str()),
        Some("b")
    );
    drop(w.server);
}
