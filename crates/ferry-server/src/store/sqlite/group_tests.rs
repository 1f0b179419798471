//! Group commit, driven directly: a failing batch among others, a group
//! whose commit fails, abandoned pushes and the group's bounds; then many
//! pushes through the store, which must share commits.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::store::tests::{batch, hlc, records, team, upsert};

async fn open() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ferry.db"))
        .await
        .unwrap();
    (store, dir)
}

fn one(id: &str) -> Vec<ferry_core::Change> {
    vec![upsert(id, "n", json!(1), hlc(1, "a"))]
}

#[tokio::test]
async fn a_failing_batch_applies_nothing_and_the_rest_of_its_group_commits() {
    let (store, _dir) = open().await;
    let s = team(&store).await;
    let queue = Queue::default();
    let (first, bad, last) = (
        queue.add(s.clone(), batch("c1", "b1", one("t-1"))),
        // `a-ok` is written, then `poison` fails: the savepoint must undo
        // the first write too.
        queue.add(
            s.clone(),
            batch(
                "c2",
                "b2",
                vec![
                    upsert("a-ok", "n", json!(1), hlc(1, "a")),
                    upsert("poison", "n", json!(1), hlc(2, "a")),
                ],
            ),
        ),
        queue.add(s.clone(), batch("c3", "b3", one("t-3"))),
    );
    {
        let mut conn = store.inner.writer.clone().lock_owned().await;
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
        assert_eq!(commit(&mut conn, queue.take()), 2);
        conn.execute_batch("DROP TRIGGER poison").unwrap();
    }
    assert_eq!(first.await.unwrap().unwrap().head, 1);
    let refused = bad.await.unwrap();
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("poisoned")),
        "{refused:?}"
    );
    assert_eq!(last.await.unwrap().unwrap().head, 2, "seqs stay gapless");
    let stored = records(&store, &s).await;
    let mut ids: Vec<_> = stored.keys().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["t-1", "t-3"]);
    // The refused batch left no trace, not even its batch id: sent again,
    // it applies whole instead of answering as a replay.
    let again = store
        .push(
            &s,
            batch(
                "c2",
                "b2",
                vec![
                    upsert("a-ok", "n", json!(1), hlc(1, "a")),
                    upsert("poison", "n", json!(1), hlc(2, "a")),
                ],
            ),
        )
        .await
        .unwrap();
    assert_eq!((again.applied, again.replayed, again.head), (2, false, 4));
}

#[tokio::test]
async fn a_group_that_cannot_commit_tells_every_push_and_keeps_nothing() {
    let (store, _dir) = open().await;
    let s = team(&store).await;
    let queue = Queue::default();
    let told = [
        queue.add(s.clone(), batch("c1", "b1", one("t-1"))),
        queue.add(s.clone(), batch("c2", "b2", one("late"))),
        queue.add(s.clone(), batch("c3", "b3", one("t-3"))),
    ];
    {
        let mut conn = store.inner.writer.clone().lock_owned().await;
        // A deferred foreign key broken by `late`: every statement passes,
        // the commit fails.
        conn.execute_batch(
            "CREATE TABLE dangling (sid INTEGER REFERENCES spaces (sid) DEFERRABLE INITIALLY DEFERRED);
             CREATE TRIGGER late AFTER INSERT ON records WHEN NEW.id = 'late'
             BEGIN INSERT INTO dangling VALUES (-1); END;",
        )
        .unwrap();
        assert_eq!(commit(&mut conn, queue.take()), 0);
        assert!(conn.is_autocommit(), "the failed group was rolled back");
        conn.execute_batch("DROP TRIGGER late; DROP TABLE dangling")
            .unwrap();
    }
    for answer in told {
        let answer = answer.await.unwrap();
        assert!(
            matches!(&answer, Err(e) if e.to_string().contains("FOREIGN KEY")),
            "{answer:?}"
        );
    }
    assert!(records(&store, &s).await.is_empty());
    let again = store.push(&s, batch("c1", "b1", one("t-1"))).await.unwrap();
    assert_eq!((again.applied, again.head), (1, 1));
}

#[tokio::test]
async fn abandoned_pushes_are_dropped_and_groups_keep_their_bounds() {
    let s = crate::store::tests::space("team");
    let queue = Queue::default();
    let _a = queue.add(s.clone(), batch("c", "a", one("a")));
    drop(queue.add(s.clone(), batch("c", "gone", one("gone"))));
    let _c = queue.add(s.clone(), batch("c", "c", one("c")));
    let ids = |group: &[Waiting]| -> Vec<String> {
        group
            .iter()
            .map(|w| w.batch.batch_id.as_ref().unwrap().as_str().to_owned())
            .collect()
    };
    assert_eq!(ids(&queue.take()), ["a", "c"]);
    assert!(queue.take().is_empty());

    // A batch at the change bound goes alone; the next waits for the next group.
    let big: Vec<_> = (0..MAX_GROUP_CHANGES)
        .map(|i| upsert(&format!("r{i}"), "n", json!(1), hlc(1, "a")))
        .collect();
    let mut held = vec![
        queue.add(s.clone(), batch("c", "big", big)),
        queue.add(s.clone(), batch("c", "small", one("s"))),
    ];
    assert_eq!(ids(&queue.take()), ["big"]);
    assert_eq!(ids(&queue.take()), ["small"]);
    for i in 0..MAX_GROUP_BATCHES + 5 {
        held.push(queue.add(s.clone(), batch("c", &format!("n{i}"), one("n"))));
    }
    assert_eq!(queue.take().len(), MAX_GROUP_BATCHES);
    assert_eq!(queue.take().len(), 5);
}

/// Many devices pushing at once: every push is answered and applied once,
/// seqs are gapless, and they shared far fewer commits than there were
/// pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_commits() {
    let (store, _dir) = open().await;
    let s = team(&store).await;
    let store = Arc::new(store);
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (store, s, start) = (store.clone(), s.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let pushed = store
                    .push(&s, batch(&format!("c{i}"), "b", one(&format!("t-{i}"))))
                    .await;
                pushed.unwrap().applied
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let page = store.pull(&s, crate::store::tests::all(0)).await.unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=64).collect::<Vec<_>>());
    let state = store.pool_state();
    assert_eq!(state.pushes_committed, 64);
    assert!(
        state.push_commits <= 32,
        "64 concurrent pushes took {} commits",
        state.push_commits
    );
}
