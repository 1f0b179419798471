//! Settling a freshly loaded database before anything is timed, so that
//! a run measures Ferry and not the database catching up on the load:
//! PostgreSQL gets `VACUUM ANALYZE` (the visibility map a fresh table
//! lacks, and statistics autovacuum would otherwise gather mid-run) and a
//! `CHECKPOINT` (the load's dirty pages written now, not in a timed run);
//! SQLite gets `ANALYZE` and its WAL checkpointed into the database file.

use ferry_server::testing::Guard;
use sqlx::Connection;

/// Settles the database behind `guard`; what it did, for the report.
pub async fn settle(guard: &Guard) -> anyhow::Result<&'static str> {
    match guard {
        Guard::Sqlite(dir) => {
            let path = dir.path().join("ferry.db");
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let conn = rusqlite::Connection::open(path)?;
                conn.execute_batch("ANALYZE")?;
                // Busy (the server's readers) is an answer, not an error.
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(())
            })
            .await??;
            Ok("settled before timing: ANALYZE, WAL checkpoint")
        }
        Guard::Postgres(db) => {
            let mut conn = db.connect().await;
            sqlx::raw_sql("VACUUM ANALYZE").execute(&mut conn).await?;
            sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await?;
            let _ = conn.close().await;
            Ok("settled before timing: VACUUM ANALYZE, CHECKPOINT")
        }
    }
}
