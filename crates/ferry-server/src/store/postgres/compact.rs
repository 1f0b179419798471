//! Tombstone compaction in PostgreSQL: one short transaction per space,
//! holding the space's row lock like a push does.

use sqlx::{PgPool, Row};

use crate::store::stored::{self, count, int};
use crate::store::{CompactReport, SpaceCompaction, StoreError};

pub async fn compact(
    pool: &PgPool,
    cutoff_ms: u64,
    reports_cutoff_ms: u64,
) -> Result<CompactReport, StoreError> {
    let cutoff = int(cutoff_ms);
    let reports_cutoff = int(reports_cutoff_ms);
    let sids: Vec<i64> = sqlx::query_scalar(
        "SELECT sid FROM records WHERE deleted IS NOT NULL AND updated_at < $1
         UNION SELECT sid FROM conflicts WHERE created_at < $2",
    )
    .bind(cutoff)
    .bind(reports_cutoff)
    .fetch_all(pool)
    .await?;
    let mut spaces = Vec::new();
    let mut conflicts = 0;
    for sid in sids {
        let mut tx = pool.begin().await?;
        let id: String = sqlx::query_scalar("SELECT id FROM spaces WHERE sid = $1 FOR UPDATE")
            .bind(sid)
            .fetch_one(&mut *tx)
            .await?;
        let deleted = sqlx::query(
            "WITH gone AS (
                 DELETE FROM records
                 WHERE sid = $1 AND deleted IS NOT NULL AND updated_at < $2
                 RETURNING seq
             )
             SELECT count(*), max(seq) FROM gone",
        )
        .bind(sid)
        .bind(cutoff)
        .fetch_one(&mut *tx)
        .await?;
        let tombstones: i64 = deleted.try_get(0)?;
        let top: Option<i64> = deleted.try_get(1)?;
        // Conflict reports of that age go too, and the horizon rises over
        // them: a client that had not pulled past one resyncs, and is told
        // that reports may have been lost with its cursor.
        let reports = sqlx::query(
            "WITH gone AS (
                 DELETE FROM conflicts WHERE sid = $1 AND created_at < $2 RETURNING seq
             )
             SELECT count(*), max(seq) FROM gone",
        )
        .bind(sid)
        .bind(reports_cutoff)
        .fetch_one(&mut *tx)
        .await?;
        conflicts += count(reports.try_get(0)?);
        let reports_top: Option<i64> = reports.try_get(1)?;
        let horizon: i64 = sqlx::query_scalar(
            "UPDATE spaces SET horizon = GREATEST(horizon, $2) WHERE sid = $1 RETURNING horizon",
        )
        .bind(sid)
        .bind(top.max(reports_top).unwrap_or(0))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if tombstones > 0 {
            spaces.push(SpaceCompaction {
                space: stored::space_id(id)?,
                tombstones: count(tombstones),
                horizon: count(horizon),
            });
        }
    }
    spaces.sort_by(|a, b| a.space.cmp(&b.space));
    // Each client's (and user's) newest batch in a space stays, however old: it may be
    // the one the client never heard the answer to, sent again after the
    // client was away past the horizon; applying it a second time could
    // bring back a record deleted and compacted meanwhile.
    let batches = sqlx::query(
        "DELETE FROM batches WHERE created_at < $1
           AND created_at < (SELECT max(b.created_at) FROM batches b
                             WHERE b.sid = batches.sid AND b.client_id = batches.client_id
                               AND b.user_id = batches.user_id)",
    )
    .bind(cutoff)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(CompactReport {
        spaces,
        batches,
        conflicts,
    })
}
