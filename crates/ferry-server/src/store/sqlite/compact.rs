//! Tombstone compaction in SQLite: one transaction on the single writer.

use ferry_core::SpaceId;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::stored::int;
use crate::store::{CompactReport, SpaceCompaction, StoreError};

pub fn compact(
    c: &mut Connection,
    cutoff_ms: u64,
    reports_cutoff_ms: u64,
) -> Result<CompactReport, StoreError> {
    let cutoff = int(cutoff_ms);
    let reports_cutoff = int(reports_cutoff_ms);
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Vec<(String, i64, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT s.id, count(*), max(r.seq) FROM records r JOIN spaces s ON s.sid = r.sid
             WHERE r.deleted IS NOT NULL AND r.updated_at < ?1
             GROUP BY r.sid ORDER BY s.id",
        )?;
        stmt.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    tx.execute(
        "UPDATE spaces SET horizon = max(spaces.horizon, t.top)
         FROM (SELECT sid, max(seq) AS top FROM records
               WHERE deleted IS NOT NULL AND updated_at < ?1 GROUP BY sid) AS t
         WHERE spaces.sid = t.sid",
        [cutoff],
    )?;
    tx.execute(
        "DELETE FROM records WHERE deleted IS NOT NULL AND updated_at < ?1",
        [cutoff],
    )?;
    // Conflict reports of that age go too, and the horizon rises over
    // them: a client that had not pulled past one resyncs, and is told
    // that reports may have been lost with its cursor.
    tx.execute(
        "UPDATE spaces SET horizon = max(spaces.horizon, t.top)
         FROM (SELECT sid, max(seq) AS top FROM conflicts WHERE created_at < ?1 GROUP BY sid) AS t
         WHERE spaces.sid = t.sid",
        [reports_cutoff],
    )?;
    let conflicts = tx.execute(
        "DELETE FROM conflicts WHERE created_at < ?1",
        [reports_cutoff],
    )?;
    // Each client's (and user's) newest batch in a space stays, however old: it may be
    // the one the client never heard the answer to, sent again after the
    // client was away past the horizon; applying it a second time could
    // bring back a record deleted and compacted meanwhile.
    let batches = tx.execute(
        "DELETE FROM batches WHERE created_at < ?1
           AND created_at < (SELECT max(b.created_at) FROM batches b
                             WHERE b.sid = batches.sid AND b.client_id = batches.client_id
                               AND b.user_id = batches.user_id)",
        params![cutoff],
    )?;
    let mut spaces = Vec::with_capacity(found.len());
    for (id, tombstones, _) in found {
        let horizon: i64 =
            tx.query_row("SELECT horizon FROM spaces WHERE id = ?1", [&id], |r| {
                r.get(0)
            })?;
        spaces.push(SpaceCompaction {
            space: SpaceId::new(id)
                .map_err(|e| StoreError::Internal(format!("stored space id: {e}")))?,
            tombstones: tombstones.max(0) as u64,
            horizon: horizon.max(0) as u64,
        });
    }
    tx.commit()?;
    Ok(CompactReport {
        spaces,
        batches: batches as u64,
        conflicts: conflicts as u64,
    })
}
