//! How connections are opened: cached statements are compiled once.

use rusqlite::StatementStatus;

use super::*;

/// A cached statement bound to new values again and again is not compiled
/// again (without the query planner stability guarantee, SQLite
/// recompiles a statement whose plan could depend on a bound value each
/// time that value changes: a fifth of a push's CPU went there).
#[tokio::test]
async fn cached_statements_are_not_compiled_again_for_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ferry.db"))
        .await
        .unwrap();
    let owner = UserId::new("owner").unwrap();
    store.ensure_user(&owner).await.unwrap();
    for i in 0..3 {
        let s = SpaceId::new(format!("s{i}")).unwrap();
        store.create_space(&s, "s", &owner).await.unwrap();
    }
    let recompiled = store
        .read(|c| {
            let queries = [
                // A join, as `role` reads it.
                "SELECT m.role FROM members m JOIN spaces s ON s.sid = m.sid
                 WHERE s.id = ?1 AND m.user_id = ?2",
                // A bound LIMIT, as pages are read.
                "SELECT id FROM spaces WHERE id > ?1 ORDER BY id LIMIT ?2",
            ];
            let mut recompiled = 0;
            for sql in queries {
                for (i, limit) in [(0, 1), (1, 0), (2, 5), (0, 1)] {
                    let mut stmt = c.prepare_cached(sql)?;
                    let space = format!("s{i}");
                    let mut rows = if sql.contains("LIMIT") {
                        stmt.query(rusqlite::params![space, limit])?
                    } else {
                        stmt.query(rusqlite::params![space, "owner"])?
                    };
                    while rows.next()?.is_some() {}
                    drop(rows);
                    recompiled += stmt.get_status(StatementStatus::RePrepare);
                }
            }
            Ok(recompiled)
        })
        .await
        .unwrap();
    assert_eq!(recompiled, 0, "cached statements were compiled again");
}

/// However many reads come at once, at most `READERS` run together, each
/// on a connection that is kept for the next read: a burst neither opens a
/// connection per read (nor compiles its statements again) nor can pin a
/// connection per blocking thread.
#[tokio::test]
async fn concurrent_reads_share_a_bounded_set_of_kept_connections() {
    use std::sync::atomic::AtomicUsize;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ferry.db"))
        .await
        .unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let reads = (0..64).map(|_| {
        let (store, now, most) = (store.clone(), now.clone(), most.clone());
        tokio::spawn(async move {
            store
                .read(move |c| {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
                })
                .await
                .unwrap()
        })
    });
    for read in reads.collect::<Vec<_>>() {
        assert_eq!(read.await.unwrap(), 1);
    }
    assert!(
        most.load(Ordering::SeqCst) <= READERS,
        "{most:?} reads at once"
    );
    let opened = store.inner.readers_opened.load(Ordering::SeqCst);
    assert!(opened as usize <= READERS, "{opened} connections opened");
    let state = store.pool_state();
    assert_eq!(state.connections, 1 + state.idle);
    assert!(state.idle as usize <= READERS);
}
