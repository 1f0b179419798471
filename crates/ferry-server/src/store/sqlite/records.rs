//! Pushing and pulling records in SQLite.
//!
//! A push costs the same handful of statements whatever the batch size: the
//! batch's records are read in one query (the keys passed as one JSON array
//! and joined through `json_each`), merged in Rust with ferry-core, and
//! written back by one prepared upsert stepped once per row.

use ferry_core::{Collection, Conflict, RecordId, SpaceId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::value::RawValue;

use crate::store::batch::{BatchPlan, Merged, check_cursor, check_push_cursor, first_changes};
use crate::store::delivery::{self, Delivery};
use crate::store::stored::corrupt;
use crate::store::stored::{int, now_ms};
use crate::store::{Batch, PageFill, PullPage, PullQuery, PushOutcome, RecordRow, StoreError};

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The space's `(sid, seq, horizon)`.
fn space_row(c: &Connection, space: &SpaceId) -> Result<(i64, u64, u64), StoreError> {
    c.prepare_cached("SELECT sid, seq, horizon FROM spaces WHERE id = ?1")?
        .query_row([space.as_str()], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound("space"))
}

/// Reads the stored rows of a batch's records: `?2` is the JSON array of
/// their `[collection, id]`. CROSS JOIN keeps the keys as the outer loop,
/// so each is one index lookup (the planner may otherwise scan the space).
pub(super) const READ_BATCH_SQL: &str = "SELECT r.collection, r.id, r.fields, r.deleted, r.author
     FROM json_each(?2) k
     CROSS JOIN records r ON r.sid = ?1 AND r.collection = k.value ->> 0 AND r.id = k.value ->> 1";

pub fn push(c: &mut Connection, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcome = push_in(&tx, space, batch)?;
    tx.commit()?;
    Ok(outcome)
}

/// [`push`] inside the write transaction `tx`, which the caller commits:
/// the capture drain applies the app's writes this way, with the removal
/// of what it applied.
pub fn push_in(tx: &Connection, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError> {
    let (sid, head, horizon) = space_row(tx, space)?;
    if let Some(cursor) = batch.cursor {
        check_push_cursor(cursor, horizon, head)?;
    }
    // Checked against the schema in force at commit, never an older one.
    if let Some(held) = &batch.schema {
        let version = super::app_schema::version(tx)?;
        if version != held.version {
            return Err(StoreError::SchemaChanged {
                version,
                batch: Some(Box::new(batch)),
            });
        }
    }

    if let Some(batch_id) = &batch.batch_id {
        let seen: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT applied, conflicts FROM batches
                 WHERE sid = ?1 AND client_id = ?2 AND batch_id = ?3 AND user_id IN (?4, '')
                 ORDER BY user_id DESC LIMIT 1",
            )?
            .query_row(
                params![
                    sid,
                    batch.client_id.as_str(),
                    batch_id.as_str(),
                    batch.user.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((applied, conflicts)) = seen {
            let conflicts: Vec<Conflict> =
                serde_json::from_str(&conflicts).map_err(|e| corrupt("conflicts", e))?;
            return Ok(PushOutcome {
                applied: applied.max(0) as u64,
                conflicts,
                reported: 0,
                head,
                replayed: true,
            });
        }
    }

    if let Some(cursor) = batch.cursor.filter(|c| *c > 0) {
        // The client stored every page up to its cursor, and the reports
        // they carried: those need not wait any longer.
        tx.prepare_cached(
            "DELETE FROM conflicts WHERE sid = ?1 AND client_id = ?2 AND user_id = ?3 AND seq <= ?4",
        )?
        .execute(params![sid, batch.client_id.as_str(), batch.user.as_str(), int(cursor)])?;
    }
    if batch.batch_id.is_some() {
        // The replica is its first pusher's (a replica syncs for one person).
        tx.prepare_cached(
            "INSERT INTO replicas (client_id, user_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (client_id) DO NOTHING",
        )?
        .execute(params![
            batch.client_id.as_str(),
            batch.user.as_str(),
            now_ms()
        ])?;
        let owner: String = tx
            .prepare_cached("SELECT user_id FROM replicas WHERE client_id = ?1")?
            .query_row([batch.client_id.as_str()], |r| r.get(0))?;
        if owner != batch.user.as_str() {
            return Err(StoreError::ReplicaOfAnother(batch.client_id.to_string()));
        }
    }

    // Read every record the batch touches, in one query, then merge.
    let mut plan = BatchPlan::new(&batch.changes);
    {
        let wanted: Vec<(&str, &str)> = plan
            .keys()
            .iter()
            .map(|(c, id)| (c.as_str(), id.as_str()))
            .collect();
        let wanted = to_json(&wanted)?;
        let mut stmt = tx.prepare_cached(READ_BATCH_SQL)?;
        let mut rows = stmt.query(params![sid, wanted])?;
        while let Some(row) = rows.next()? {
            let text = |i: usize| -> Result<&str, StoreError> {
                row.get_ref(i)?.as_str().map_err(|e| corrupt("record", e))
            };
            let deleted = row
                .get_ref(3)?
                .as_str_or_null()
                .map_err(|e| corrupt("record", e))?;
            let author = row
                .get_ref(4)?
                .as_str_or_null()
                .map_err(|e| corrupt("record", e))?;
            plan.load(text(0)?, text(1)?, text(2)?, deleted, author)?;
        }
    }
    let firsts = first_changes(&batch);
    let Merged {
        applied,
        conflicts,
        displaced,
        rows,
        states,
        head: seq,
    } = plan.merge(
        batch.changes,
        head,
        batch.schema.as_ref().and_then(|s| s.schema.as_ref()),
        batch.actor.as_ref(),
    )?;

    // The tables of mirrored collections, in this transaction.
    if let Some(schema) = batch.schema.as_ref().and_then(|s| s.schema.as_ref())
        && !firsts.is_empty()
    {
        let written = rows
            .iter()
            .zip(states)
            .map(|(r, state)| (r.collection.as_str(), r.id.as_str(), state));
        super::mirror::write(tx, space.as_str(), schema, written, &firsts)?;
    }
    if !rows.is_empty() {
        // One prepared upsert per row: in-process, a step costs less than
        // wrapping the rows' JSON in JSON for `json_each` to unwrap.
        let mut upsert = tx.prepare_cached(
            "INSERT INTO records
               (sid, collection, id, seq, fields, deleted, updated_at, author, writer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
             ON CONFLICT (sid, collection, id) DO UPDATE
             SET seq = excluded.seq, fields = excluded.fields, deleted = excluded.deleted,
                 updated_at = excluded.updated_at, writer = excluded.writer",
        )?;
        let now = now_ms();
        for r in &rows {
            upsert.execute(params![
                sid,
                r.collection,
                r.id,
                int(r.seq),
                r.fields,
                r.deleted,
                now,
                batch.user.as_str()
            ])?;
        }
        tx.prepare_cached("UPDATE spaces SET seq = ?2 WHERE sid = ?1")?
            .execute(params![sid, seq as i64])?;
    }
    let mut reported = 0;
    if !displaced.is_empty() {
        // Addressed to the replica and to its user; a replica no user
        // pushed from (a node's REST writes) has no one to tell.
        let mut report = tx.prepare_cached(
            "INSERT INTO conflicts (sid, client_id, user_id, seq, collection, conflict, created_at)
             SELECT ?1, ?2, r.user_id, ?3, ?4, ?5, ?6 FROM replicas r WHERE r.client_id = ?2",
        )?;
        let now = now_ms();
        for r in delivery::rows(&displaced)? {
            reported += report.execute(params![
                sid,
                r.client_id,
                int(r.seq),
                r.collection,
                r.conflict,
                now
            ])? as u64;
        }
    }
    if let Some(batch_id) = &batch.batch_id {
        tx.prepare_cached(
            "INSERT INTO batches
                 (sid, client_id, batch_id, user_id, applied, conflicts, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            sid,
            batch.client_id.as_str(),
            batch_id.as_str(),
            batch.user.as_str(),
            applied as i64,
            to_json(&conflicts)?,
            now_ms()
        ])?;
    }
    Ok(PushOutcome {
        applied,
        conflicts,
        reported,
        head: seq,
        replayed: false,
    })
}

fn record_row(row: &rusqlite::Row<'_>) -> Result<RecordRow, StoreError> {
    let fields: String = row.get(3)?;
    Ok(RecordRow {
        collection: row.get(0)?,
        id: row.get(1)?,
        seq: row.get::<_, i64>(2)?.max(0) as u64,
        fields: RawValue::from_string(fields).map_err(|e| corrupt("fields", e))?,
        deleted: row.get(4)?,
        author: row.get(5)?,
    })
}

const RECORD_COLUMNS: &str = "collection, id, seq, fields, deleted, author";

/// A page of a pull: `?1` space, `?2` cursor, `?3` JSON array of
/// collections or NULL, `?4` limit.
fn pull_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM records
         WHERE sid = ?1 AND seq > ?2
           AND (?3 IS NULL OR collection IN (SELECT value FROM json_each(?3)))
         ORDER BY seq LIMIT ?4"
    )
}

pub fn pull(c: &mut Connection, space: &SpaceId, q: &PullQuery) -> Result<PullPage, StoreError> {
    // One read transaction, so the head and the page are the same snapshot.
    let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let (sid, head, horizon) = space_row(&tx, space)?;
    check_cursor(q.cursor, horizon, head)?;
    let collections = q
        .collections
        .as_ref()
        .map(|cs| to_json(&cs.iter().map(Collection::as_str).collect::<Vec<_>>()))
        .transpose()?;
    let sql = pull_sql();
    let mut page = PageFill::new(q.limit);
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        // Rows are read one at a time: those past the page are never read.
        let mut rows = stmt.query(params![
            sid,
            q.cursor as i64,
            collections,
            i64::from(q.limit) + 1
        ])?;
        while let Some(row) = rows.next()? {
            if !page.wants_next() {
                break;
            }
            page.push(record_row(row)?);
        }
    }
    let mut page = PullPage::finish(page, q, head);
    if let Some(to) = &q.conflicts {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, conflict FROM conflicts
             WHERE sid = ?1 AND client_id = ?2 AND user_id = ?3
               AND seq > ?4 AND seq <= ?5
               AND (?6 IS NULL OR collection IN (SELECT value FROM json_each(?6)))
             ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![
            sid,
            to.client_id.as_str(),
            to.user.as_str(),
            int(to.after),
            int(page.cursor),
            collections
        ])?;
        let mut delivery = Delivery::default();
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)?.max(0) as u64;
            let text = row
                .get_ref(1)?
                .as_str()
                .map_err(|e| corrupt("conflict", e))?;
            if !delivery.offer(seq, text)? {
                break;
            }
        }
        delivery.finish(&mut page);
    }
    tx.commit()?;
    Ok(page)
}

pub fn record(
    c: &mut Connection,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
) -> Result<Option<RecordRow>, StoreError> {
    let (sid, _, _) = space_row(c, space)?;
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE sid = ?1 AND collection = ?2 AND id = ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![sid, collection.as_str(), id.as_str()])?;
    rows.next()?.map(record_row).transpose()
}

pub fn list(
    c: &mut Connection,
    space: &SpaceId,
    collection: &Collection,
    after: Option<&RecordId>,
    limit: u32,
) -> Result<PageFill, StoreError> {
    let (sid, _, _) = space_row(c, space)?;
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records
         WHERE sid = ?1 AND collection = ?2 AND deleted IS NULL AND id > ?3
         ORDER BY id LIMIT ?4"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        sid,
        collection.as_str(),
        after.map_or("", RecordId::as_str),
        i64::from(limit) + 1
    ])?;
    let mut page = PageFill::new(limit);
    while let Some(row) = rows.next()? {
        if !page.wants_next() {
            break;
        }
        page.push(record_row(row)?);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one line per step.
    fn plan(sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_batch_read_is_one_index_lookup_per_key() {
        let steps = plan(READ_BATCH_SQL, params![1, "[]"]);
        // Not `(sid=?)` alone, which would walk the whole space per key.
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("SEARCH r")
                    && s.contains("(sid=? AND collection=? AND id=?)")),
            "{steps:?}"
        );
    }

    #[test]
    fn a_pull_walks_the_seq_index() {
        let steps = plan(&pull_sql(), params![1, 0, Option::<String>::None, 10]);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING INDEX records_by_seq")),
            "{steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.contains("TEMP B-TREE")),
            "no sort: {steps:?}"
        );
    }
}
