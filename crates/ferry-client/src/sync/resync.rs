//! A full resync of a space, from 0: after `410 cursor_expired`, after
//! changes the server refused for good, and before the first push of a
//! replica that wrote before it ever synced. It pulls the whole space
//! before sending anything, then sends the batch stamped before it, and
//! only then newer changes; records the server had and no longer has go
//! with their pending changes (the delete wins).

use ferry_core::{ClientId, Collection, Fields, Hlc, RecordId, RecordState, SpaceId};
use rusqlite::{OptionalExtension, TransactionBehavior};

use super::SyncReport;
use crate::error::Result;
use crate::replica::{Replica, corrupt};

impl Replica {
    /// Starts pulling `space` again from 0, after `410 cursor_expired`:
    /// every local record is marked unseen, and those still unseen when the
    /// pull ends are dropped (see `advance_resync`).
    pub fn begin_resync(&self, space: &SpaceId) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        mark_unseen(&tx, space)?;
        tx.commit()?;
        Ok(())
    }
}

/// Where a full resync of a space stands (`spaces.resync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resync {
    /// None under way.
    None,
    /// Pulling the space from 0; nothing is sent meanwhile, so that no
    /// local change reaches the server before the replica knows which of
    /// its records the server deleted.
    Pulling,
    /// Pulled; sending the batch stamped before the resync began (under
    /// its id: the server may have applied it already).
    Sending,
}

/// Starts a full resync of `space` from 0: every local record unseen.
pub(super) fn mark_unseen(tx: &rusqlite::Transaction<'_>, space: &SpaceId) -> Result<()> {
    tx.execute(
        "UPDATE records SET seen = 0 WHERE space = ?1",
        [space.as_str()],
    )?;
    tx.execute(
        "INSERT INTO spaces (space, cursor, resync) VALUES (?1, 0, 1)
         ON CONFLICT (space) DO UPDATE SET cursor = 0, resync = 1",
        [space.as_str()],
    )?;
    Ok(())
}

/// Whether no answer for `space` was ever stored while local changes wait.
pub(super) fn first_sync_with_changes(
    tx: &rusqlite::Transaction<'_>,
    space: &SpaceId,
) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM spaces s WHERE s.space = ?1 AND s.synced_at IS NULL
               AND EXISTS (SELECT 1 FROM outbox o WHERE o.space = s.space)",
        )?
        .exists([space.as_str()])?)
}

pub(super) fn resync_stage(tx: &rusqlite::Transaction<'_>, space: &SpaceId) -> Result<Resync> {
    let stage: Option<i64> = tx
        .prepare_cached("SELECT resync FROM spaces WHERE space = ?1")?
        .query_row([space.as_str()], |r| r.get(0))
        .optional()?;
    Ok(match stage {
        Some(1) => Resync::Pulling,
        Some(2) => Resync::Sending,
        _ => Resync::None,
    })
}

/// Moves a full resync of `space` on, once a pull reached the head.
///
/// A record the server has had (`remote`) and did not send again was
/// deleted there and its tombstone compacted: the delete wins, so the
/// record and any pending local changes to it are dropped, each dropped
/// record reported as a `record_deleted` conflict. Then the batch stamped
/// before the resync, if any, is sent; once it is acknowledged, records
/// the server still lacks and no pending change needs are dropped, and the
/// resync ends. (Were local changes sent before the pull ended, a change to
/// a record deleted and compacted meanwhile would bring it back.)
pub(super) fn advance_resync(
    tx: &rusqlite::Transaction<'_>,
    space: &SpaceId,
    changed: &mut Vec<(Collection, RecordId)>,
    report: &mut SyncReport,
    me: &ClientId,
    now_ms: u64,
) -> Result<()> {
    if resync_stage(tx, space)? == Resync::None {
        return Ok(());
    }
    type Gone = (String, String, String, Option<String>);
    let deleted: Vec<Gone> = {
        let mut stmt = tx.prepare(
            "DELETE FROM records WHERE space = ?1 AND seen = 0 AND remote = 1
             RETURNING collection, id, fields, deleted",
        )?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (collection, id, fields, tombstone) in deleted {
        let collection = Collection::new(collection).map_err(|e| corrupt("collection", e))?;
        let id = RecordId::new(id).map_err(|e| corrupt("record id", e))?;
        let local = RecordState {
            fields: serde_json::from_str::<Fields>(&fields)
                .map_err(|e| corrupt("record fields", e))?,
            deleted: tombstone
                .map(|d| d.parse::<Hlc>())
                .transpose()
                .map_err(|e| corrupt("tombstone", e))?,
        };
        // The delete itself is forgotten: when it happened is unknown.
        if super::inbox::deleted(tx, space, (&collection, &id), None, &local, me, now_ms)? {
            report.conflicts += 1;
        }
        changed.push((collection, id));
    }
    let stamped = tx
        .prepare_cached("SELECT 1 FROM outbox WHERE space = ?1 AND batch IS NOT NULL LIMIT 1")?
        .exists([space.as_str()])?;
    if stamped {
        tx.execute(
            "UPDATE spaces SET resync = 2 WHERE space = ?1",
            [space.as_str()],
        )?;
        return Ok(());
    }
    {
        let mut stmt = tx.prepare(
            "DELETE FROM records AS r WHERE r.space = ?1 AND r.seen = 0
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.space = r.space
                               AND o.collection = r.collection AND o.id = r.id)
             RETURNING collection, id",
        )?;
        let gone = stmt.query_map([space.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in gone {
            let (collection, id) = row?;
            changed.push((
                Collection::new(collection).map_err(|e| corrupt("collection", e))?,
                RecordId::new(id).map_err(|e| corrupt("record id", e))?,
            ));
        }
    }
    tx.execute(
        "UPDATE records SET seen = 1 WHERE space = ?1 AND seen = 0",
        [space.as_str()],
    )?;
    tx.execute(
        "UPDATE spaces SET resync = 0 WHERE space = ?1",
        [space.as_str()],
    )?;
    report.resynced = true;
    Ok(())
}
