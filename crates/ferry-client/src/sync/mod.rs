//! One sync of one space: push the outbox in batches, store each answer's
//! page of records, loop until nothing is pending and nothing more waits.
//!
//! Each step is a small function, and each storage step one transaction:
//!
//! 1. [`Replica::next_batch`] takes the oldest unsent changes and stamps
//!    them with a new batch id, or returns the batch already stamped (sent
//!    before, never acknowledged: a crash, a timeout): a retry sends the
//!    same id and the same changes, so the server applies nothing twice.
//! 2. The batch goes to the server with the space's cursor.
//! 3. [`Replica::store_answer`] removes the acknowledged changes from the
//!    outbox, stores the conflicts, merges each pulled record into the
//!    local one with ferry-core (pending local writes carry newer HLCs, so
//!    they stay), and moves the cursor, all in one transaction: the cursor
//!    never gets ahead of the records stored.
//!
//! On `410 cursor_expired` the space is pulled again from 0 (PROTOCOL.md
//! §4) before anything is sent; at the end, records the server had and no
//! longer has were deleted there, and go with their pending changes (the
//! delete wins); records it never had stay while changes to them are
//! pending (see `advance_resync`).

use ferry_core::protocol::{BatchId, SyncResponse};
use ferry_core::{Change, Collection, Hlc, RecordId, RecordState, SpaceId, merge_states};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::replica::{Replica, Source, corrupt, random_hex, read_state, set_meta, stored_hlc};

pub(crate) mod files;
mod inbox;
mod resync;
mod run;

use resync::{Resync, advance_resync, first_sync_with_changes, mark_unseen, resync_stage};
pub(crate) use run::blocking;
pub use run::{sync_space, sync_space_with};

/// The most changes sent in one batch.
pub const MAX_BATCH: usize = 1000;
/// The page size asked for.
pub const PAGE: u32 = 5000;

/// A record as pulled: its fields stay the JSON text the server sent until
/// a local copy needs merging, so a record new to the replica is stored
/// without being parsed and written out again.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PulledRecord {
    /// The record's collection.
    pub collection: Collection,
    /// The record's id.
    pub id: RecordId,
    /// Its `seq` on the server.
    pub seq: u64,
    /// Its fields, `{name: {value, hlc}}`.
    pub fields: Box<serde_json::value::RawValue>,
    /// The HLC of its delete, on a tombstone.
    pub deleted: Option<ferry_core::Hlc>,
    /// The user who created it (v1.5), for the schema's author rules.
    #[serde(default)]
    pub author: Option<String>,
}

/// The server's answer to a sync, as the client reads it.
pub type Answer = SyncResponse<PulledRecord>;

/// Changes sent together under one id.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The batch id.
    pub batch_id: BatchId,
    /// The changes, oldest first.
    pub changes: Vec<Change>,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Local changes the server acknowledged.
    pub pushed: u64,
    /// Records pulled and stored.
    pub pulled: u64,
    /// Conflicts the server reported (now in the inbox).
    pub conflicts: u64,
    /// Whether the space was pulled again from scratch.
    pub resynced: bool,
    /// Whether the server had forgotten part of the space's history this
    /// replica had not pulled yet (`410 cursor_expired`): besides deletes
    /// (applied), conflict reports of that age may have been lost, so an
    /// app may tell the person to check their recent edits.
    pub expired: bool,
    /// Local changes the server refused for good (now in
    /// [`Replica::rejected`]).
    pub rejected: u64,
    /// Attached files the server now holds (uploaded, or found held).
    pub uploaded: u64,
}

/// A local change the server refused for good, kept for the app to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its number.
    pub n: i64,
    /// Its space.
    pub space: SpaceId,
    /// The change.
    pub change: Change,
    /// The server's error code (`forbidden`, `invalid_change`, `too_large`).
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// Whether the server refused a batch for a reason that retrying cannot
/// fix: the caller may not write there (a viewer), or the changes break
/// the protocol's rules. (`clock_skew` is not one: the device's clock may
/// be fixed, and the same changes then go through.)
fn refused_for_good(e: &Error) -> bool {
    matches!(e.code(), Some("forbidden" | "invalid_change" | "too_large"))
}

impl Replica {
    /// The batch to send next for `space`: the one sent before and not
    /// acknowledged, else the oldest pending changes under a new id.
    pub fn next_batch(&self, space: &SpaceId) -> Result<Option<Outgoing>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stage = resync_stage(&tx, space)?;
        if stage == Resync::Pulling {
            return Ok(None);
        }
        if stage == Resync::None && first_sync_with_changes(&tx, space)? {
            // Pull the space before sending anything, as after a `410`: a
            // batch of this replica may have reached the server unanswered
            // and its records been deleted and compacted there since.
            mark_unseen(&tx, space)?;
            tx.commit()?;
            return Ok(None);
        }
        let stamped: Option<String> = tx
            .query_row(
                "SELECT batch FROM outbox WHERE space = ?1 AND batch IS NOT NULL ORDER BY n LIMIT 1",
                [space.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let batch = match stamped {
            Some(batch) => batch,
            // A resync sends the batch stamped before it, nothing newer.
            None if stage == Resync::Sending => return Ok(None),
            None => {
                let batch = format!("b{}", random_hex(12)?);
                let stamped = tx.execute(
                    "UPDATE outbox SET batch = ?1 WHERE n IN (
                         SELECT n FROM outbox WHERE space = ?2 AND batch IS NULL
                         ORDER BY n LIMIT ?3)",
                    params![batch, space.as_str(), MAX_BATCH as i64],
                )?;
                if stamped == 0 {
                    return Ok(None);
                }
                batch
            }
        };
        let changes = {
            let mut stmt = tx.prepare_cached(
                "SELECT change FROM outbox WHERE space = ?1 AND batch = ?2 ORDER BY n",
            )?;
            let rows =
                stmt.query_map([space.as_str(), batch.as_str()], |r| r.get::<_, String>(0))?;
            rows.map(|text| serde_json::from_str(&text?).map_err(|e| corrupt("outbox change", e)))
                .collect::<Result<Vec<Change>>>()?
        };
        tx.commit()?;
        Ok(Some(Outgoing {
            batch_id: BatchId::new(batch).map_err(|e| corrupt("batch id", e))?,
            changes,
        }))
    }

    /// Stores the server's answer to a sync of `space` that sent `batch`:
    /// one transaction.
    pub fn store_answer(
        &self,
        space: &SpaceId,
        batch: Option<&BatchId>,
        answer: Answer,
    ) -> Result<SyncReport> {
        Ok(self.store(space, batch, answer)?.0)
    }

    /// [`Self::store_answer`], also telling whether changes of `space`
    /// still wait to be sent.
    fn store(
        &self,
        space: &SpaceId,
        batch: Option<&BatchId>,
        answer: Answer,
    ) -> Result<(SyncReport, bool)> {
        // A page reaching the server's head finishes the space's first sync.
        let complete = !answer.has_more;
        let mut report = SyncReport::default();
        let mut changed = Vec::with_capacity(answer.changes.len());
        let pending;
        {
            let now = self.now_ms();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(batch) = batch {
                tx.execute(
                    "UPDATE records SET remote = 1 WHERE space = ?1 AND EXISTS (
                         SELECT 1 FROM outbox o WHERE o.space = records.space AND o.batch = ?2
                           AND o.collection = records.collection AND o.id = records.id)",
                    [space.as_str(), batch.as_str()],
                )?;
                report.pushed = tx.execute(
                    "DELETE FROM outbox WHERE space = ?1 AND batch = ?2",
                    [space.as_str(), batch.as_str()],
                )? as u64;
            }
            let me = &self.client_id();
            for conflict in answer.conflicts.iter().chain(&answer.reported) {
                if inbox::take(&tx, space, conflict, me, now)? {
                    report.conflicts += 1;
                }
            }
            for record in answer.changes {
                if merge_pulled(&tx, space, &record, me, now)? {
                    report.conflicts += 1;
                }
                changed.push((record.collection, record.id));
                report.pulled += 1;
            }
            let hlc = stored_hlc(&tx, me)?.observe(&answer.hlc, now);
            set_meta(&tx, "hlc", &hlc.to_string())?;
            // Reports up to the page's end are in the inbox now; a pull
            // from 0 (a resync) does not take them again.
            // The role the server judged this sync by: what later local
            // writes are judged by (kept when an older server says none).
            tx.execute(
                "INSERT INTO spaces (space, cursor, conflict_cursor, synced_at, role, complete)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5)
                 ON CONFLICT (space) DO UPDATE SET cursor = excluded.cursor,
                     conflict_cursor = max(conflict_cursor, excluded.cursor),
                     synced_at = excluded.synced_at,
                     role = coalesce(excluded.role, role),
                     complete = max(complete, excluded.complete)",
                params![
                    space.as_str(),
                    answer.cursor as i64,
                    now as i64,
                    answer.role.map(ferry_core::Role::as_str),
                    complete
                ],
            )?;
            if !answer.has_more {
                advance_resync(&tx, space, &mut changed, &mut report, me, now)?;
            }
            pending = has_pending(&tx, space)?;
            tx.commit()?;
        }
        self.wrote(u32::try_from(changed.len()).unwrap_or(u32::MAX).max(1));
        self.announce_all_completing(space, changed, Source::Remote, complete);
        Ok((report, pending))
    }

    /// Moves the changes of `batch`, which the server refused with `error`,
    /// from the outbox to the rejected list, and restores the server's copy
    /// of the records they touched: those (unless other changes to them are
    /// pending) are dropped, and the space is pulled again from 0.
    pub fn reject_batch(&self, space: &SpaceId, batch: &BatchId, error: &Error) -> Result<u64> {
        let (code, message, only) = match error {
            Error::Server {
                code,
                message,
                change,
                ..
            } => (code.clone(), message.clone(), *change),
            other => ("refused".to_owned(), other.to_string(), None),
        };
        let mut touched = Vec::new();
        let refused = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The record of the change the server named, when it named one:
            // every pending change to that record (of this batch, and those
            // queued after it, which were made over the refused one) is set
            // aside, so that the record is restored to the server's copy;
            // the rest of the batch goes again. Else the whole batch.
            let named: Option<(String, String)> = match only {
                Some(index) => tx
                    .query_row(
                        "SELECT collection, id FROM outbox WHERE space = ?1 AND batch = ?2
                         ORDER BY n LIMIT 1 OFFSET ?3",
                        params![space.as_str(), batch.as_str(), index as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?,
                None => None,
            };
            let (named_collection, named_id) = named.unzip();
            let rows: Vec<(String, String, String)> = {
                let mut stmt = tx.prepare(
                    "DELETE FROM outbox WHERE space = ?1
                       AND CASE WHEN ?3 IS NULL THEN batch = ?2
                                ELSE (batch = ?2 OR batch IS NULL) AND collection = ?3 AND id = ?4 END
                     RETURNING collection, id, change",
                )?;
                let rows = stmt.query_map(
                    params![space.as_str(), batch.as_str(), named_collection, named_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (collection, id, change) in &rows {
                tx.execute(
                    "INSERT INTO rejected (space, change, code, message, at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![space.as_str(), change, code, message, self.now_ms() as i64],
                )?;
                let restored = tx.execute(
                    "DELETE FROM records AS r WHERE space = ?1 AND collection = ?2 AND id = ?3
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.space = r.space
                                       AND o.collection = r.collection AND o.id = r.id)",
                    params![space.as_str(), collection, id],
                )?;
                if restored > 0 {
                    touched.push((
                        Collection::new(collection.as_str())
                            .map_err(|e| corrupt("collection", e))?,
                        RecordId::new(id.as_str()).map_err(|e| corrupt("record id", e))?,
                    ));
                }
            }
            tx.execute(
                "UPDATE records SET seen = 0 WHERE space = ?1",
                [space.as_str()],
            )?;
            tx.execute(
                "UPDATE spaces SET cursor = 0, resync = 1 WHERE space = ?1",
                [space.as_str()],
            )?;
            tx.commit()?;
            rows.len() as u64
        };
        // After the connection is let go: watches read the records again.
        self.announce_all(space, touched, Source::Remote);
        Ok(refused)
    }

    /// Removes the bases of the changes of `batch` (for a server that
    /// takes none); the batch keeps its id, since the server applied
    /// nothing of it.
    pub fn strip_bases(&self, space: &SpaceId, batch: &BatchId) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(i64, String)> = {
            let mut stmt =
                tx.prepare("SELECT n, change FROM outbox WHERE space = ?1 AND batch = ?2")?;
            let rows = stmt.query_map([space.as_str(), batch.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (n, text) in rows {
            let mut change: Change =
                serde_json::from_str(&text).map_err(|e| corrupt("outbox change", e))?;
            match &mut change {
                Change::Upsert { base, .. } | Change::Delete { base, .. } => *base = None,
            }
            let text = serde_json::to_string(&change).map_err(|e| corrupt("change", e))?;
            tx.execute(
                "UPDATE outbox SET change = ?2 WHERE n = ?1",
                params![n, text],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The local changes the server refused for good, oldest first.
    pub fn rejected(&self) -> Result<Vec<Rejected>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT n, space, change, code, message FROM rejected ORDER BY n")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (n, space, change, code, message) = row?;
            Ok(Rejected {
                n,
                space: SpaceId::new(space).map_err(|e| corrupt("space id", e))?,
                change: serde_json::from_str(&change).map_err(|e| corrupt("rejected change", e))?,
                code,
                message,
            })
        })
        .collect()
    }

    /// Forgets rejected change `n` (the app has shown it).
    pub fn dismiss_rejected(&self, n: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM rejected WHERE n = ?1", [n])?;
        Ok(())
    }
}

/// Folds a pulled record into the local one; a record new to the replica
/// is stored as the server sent it. A pulled tombstone drops the pending
/// changes to its record, kept in the inbox as lost to the delete; whether
/// the inbox gained such an entry.
fn merge_pulled(
    tx: &rusqlite::Transaction<'_>,
    space: &SpaceId,
    record: &PulledRecord,
    me: &ferry_core::ClientId,
    now_ms: u64,
) -> Result<bool> {
    let known: bool = tx
        .prepare_cached("SELECT 1 FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3")?
        .exists([
            space.as_str(),
            record.collection.as_str(),
            record.id.as_str(),
        ])?;
    if !known {
        tx.prepare_cached(
            "INSERT INTO records (space, collection, id, fields, deleted, seen, remote, author)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, ?6)",
        )?
        .execute(params![
            space.as_str(),
            record.collection.as_str(),
            record.id.as_str(),
            record.fields.get(),
            record.deleted.as_ref().map(Hlc::to_string),
            record.author,
        ])?;
        return Ok(false);
    }
    let theirs = RecordState {
        fields: serde_json::from_str(record.fields.get()).map_err(|e| Error::Server {
            status: 200,
            code: "invalid_answer".into(),
            message: format!("record {}/{}: {e}", record.collection, record.id),
            retry_after: None,
            change: None,
        })?,
        deleted: record.deleted.clone(),
    };
    let local = read_state(tx, space, &record.collection, &record.id)?;
    let merged = merge_states(local.clone(), &theirs);
    let fields = serde_json::to_string(&merged.fields).map_err(|e| corrupt("fields", e))?;
    // The server has this record, and a resync met it.
    tx.prepare_cached(
        "UPDATE records SET fields = ?4, deleted = ?5, seen = 1, remote = 1,
             author = coalesce(?6, author)
         WHERE space = ?1 AND collection = ?2 AND id = ?3",
    )?
    .execute(params![
        space.as_str(),
        record.collection.as_str(),
        record.id.as_str(),
        fields,
        merged.deleted.as_ref().map(Hlc::to_string),
        record.author,
    ])?;
    if record.deleted.is_none() || local.is_deleted() {
        return Ok(false);
    }
    inbox::deleted(
        tx,
        space,
        (&record.collection, &record.id),
        record.deleted.as_ref(),
        &local,
        me,
        now_ms,
    )
}

/// Whether changes of `space` wait in the outbox.
fn has_pending(conn: &rusqlite::Connection, space: &SpaceId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM outbox WHERE space = ?1 LIMIT 1")?
        .exists([space.as_str()])?)
}
