//! Settling a freshly loaded database before anything is timed, so that
//! a run measures Ferry and not the database catching up on the load:
//! PostgreSQL gets `VACUUM ANALYZE` (the visibility map a fresh table
//! lacks, and statistics autovacuum would otherwise gather mid-run) and a
//! `CHECKPOINT` (the load's dirty pages written now, not in a timed run);
//! SQLite gets its WAL checkpointed into the database file (and no
//! `ANALYZE`: a server never runs one, so its planner has no statistics).

use ferry_server::testing::Guard;
use rusqlite::OpenFlags;
use sqlx::Connection;

/// Settles the database behind `guard`; what it did, for the report.
pub async fn settle(guard: &Guard) -> anyhow::Result<String> {
    match guard {
        Guard::Sqlite(dir) => {
            let path = dir.path().join("ferry.db");
            let busy = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
                // The server's file, never a new one.
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                let busy: i64 =
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                Ok(busy != 0)
            })
            .await??;
            Ok(if busy {
                "settled before timing: WAL checkpoint busy (the server was reading), not done"
                    .to_owned()
            } else {
                "settled before timing: WAL checkpointed".to_owned()
            })
        }
        Guard::Postgres(db) => {
            let mut conn = db.connect().await;
            sqlx::raw_sql("VACUUM ANALYZE").execute(&mut conn).await?;
            // A role without the right to it (pg_checkpoint) is told, not
            // stopped: the figures are still figures.
            let checkpoint = match sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await {
                Ok(_) => "CHECKPOINT".to_owned(),
                Err(e) => format!("no CHECKPOINT ({e})"),
            };
            let _ = conn.close().await;
            Ok(format!(
                "settled before timing: VACUUM ANALYZE, {checkpoint}"
            ))
        }
    }
}
