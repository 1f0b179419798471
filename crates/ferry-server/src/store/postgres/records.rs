//! Pushing and pulling records in PostgreSQL.

use ferry_core::{Collection, Conflict, RecordId, SpaceId};
use futures_util::TryStreamExt;
use serde_json::value::RawValue;

use super::mirror_rows::{KeyCache, Written};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::store::batch::{BatchPlan, Merged, check_cursor, check_push_cursor, first_changes};
use crate::store::delivery::{self, Delivery};
use crate::store::stored::{corrupt, count};
use crate::store::stored::{int, now_ms};
use crate::store::{
    Batch, MAX_PAGE_BYTES, PageFill, PullPage, PullQuery, PushOutcome, RecordRow, StoreError,
};

/// What a push reads under its space's lock, in one statement (see
/// [`push_in`]): `$1` sid, `$2`/`$3` the collections and ids touched, `$4`
/// client id, `$5` user, `$6` batch id, `$7` the cursor the client
/// confirmed, `$8` now.
///
/// Its two writes run whatever it finds, a replayed batch too (PostgreSQL
/// runs every data-modifying `WITH`): the reports the cursor confirms are
/// dropped (the client stored them, whichever push says so) and the
/// replica is taken for the pusher if nobody has it (a replay is by the
/// batch's own user, who took it when the batch first came).
pub(crate) const PUSH_READ: &str = r#"WITH gone AS (
         DELETE FROM conflicts
         WHERE $7::bigint IS NOT NULL AND sid = $1 AND client_id = $4 AND user_id = $5
           AND seq <= $7
     ), taken AS (
         INSERT INTO replicas (client_id, user_id, created_at)
         SELECT $4, $5, $8 WHERE $6::text IS NOT NULL
         ON CONFLICT (client_id) DO NOTHING RETURNING user_id
     )
     SELECT 0, NULL, NULL, conflicts COLLATE "C", NULL, NULL, applied
     FROM (SELECT applied, conflicts FROM batches
           WHERE $6::text IS NOT NULL AND sid = $1 AND client_id = $4 AND batch_id = $6
             AND user_id IN ($5, '')
           ORDER BY user_id DESC LIMIT 1) b
     UNION ALL
     SELECT 1, NULL, NULL, NULL, NULL, o.user_id COLLATE "C", NULL
     FROM (SELECT user_id FROM taken UNION ALL
           SELECT user_id FROM replicas WHERE $6::text IS NOT NULL AND client_id = $4
           LIMIT 1) o
     UNION ALL
     SELECT 2, r.collection COLLATE "C", r.id COLLATE "C", r.fields COLLATE "C",
            r.deleted COLLATE "C", r.author COLLATE "C", NULL
     FROM UNNEST($2::text[], $3::text[]) AS k (collection, id)
     CROSS JOIN LATERAL (
         SELECT collection, id, fields, deleted, author FROM records
         WHERE sid = $1 AND collection = k.collection AND id = k.id
         LIMIT 1
     ) r
     UNION ALL
     SELECT 3, NULL, NULL, NULL, NULL, NULL, (SELECT coalesce(max(version), 0) FROM app_schemas)"#;

pub async fn push(
    pool: &PgPool,
    namespace: &str,
    keys: &KeyCache,
    space: &SpaceId,
    batch: Batch,
) -> Result<PushOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let outcome = push_in(&mut tx, namespace, keys, space, batch).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`push`] inside the transaction `tx`, which the caller commits: the
/// capture drain applies the app's backend writes this way, with the
/// removal of what it applied.
pub async fn push_in(
    tx: &mut sqlx::PgConnection,
    namespace: &str,
    keys: &KeyCache,
    space: &SpaceId,
    batch: Batch,
) -> Result<PushOutcome, StoreError> {
    // The space's row lock serializes its commits: `seq` is taken from its
    // counter under the lock and the lock is held until commit.
    // With it, a shared hold on the app schema's lock, which an apply takes
    // alone: no schema is applied while this push is under way, and one
    // applied before it is seen by its later statements (read below, with
    // the records), whatever this statement's snapshot saw.
    let row = sqlx::query(
        "SELECT sid, seq, horizon, pg_advisory_xact_lock_shared($2)
         FROM spaces WHERE id = $1 FOR UPDATE",
    )
    .bind(space.as_str())
    .bind(super::app_schema::APPLY_LOCK)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound("space"))?;
    let (sid, head, horizon): (i64, u64, u64) = (
        row.try_get(0)?,
        count(row.try_get(1)?),
        count(row.try_get(2)?),
    );
    if let Some(cursor) = batch.cursor {
        check_push_cursor(cursor, horizon, head)?;
    }

    // Everything the merge needs, in one statement (one round trip under
    // the lock, its snapshot taken after the lock was granted): the
    // batch's earlier answer if it was applied before; the reports the
    // client confirmed stored (every page up to its cursor) dropped; the
    // replica taken for its first pusher (a replica syncs for one person)
    // and its owner; every record the batch touches; the app schema's
    // newest version, read after this push's shared hold on the apply
    // lock (see above). Each row says which by its first column.
    let mut plan = BatchPlan::new(&batch.changes);
    let (collections, ids): (Vec<&str>, Vec<&str>) = plan
        .keys()
        .iter()
        .map(|(c, id)| (c.as_str(), id.as_str()))
        .unzip();
    let confirmed = batch.cursor.filter(|c| *c > 0);
    // Each record by one primary-key probe, whatever the statistics say:
    // the LATERAL subquery with LIMIT 1 is never flattened into a join, so
    // a cached generic plan cannot turn it into a scan of the whole table
    // (which it did as a space grew: milliseconds per batch).
    let stored = sqlx::query(PUSH_READ)
        .bind(sid)
        .bind(&collections)
        .bind(&ids)
        .bind(batch.client_id.as_str())
        .bind(batch.user.as_str())
        .bind(batch.batch_id.as_ref().map(|b| b.as_str()))
        .bind(confirmed.map(int))
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
    let mut version = 0;
    let mut owner: Option<&str> = None;
    for row in &stored {
        match row.try_get::<i32, _>(0)? {
            0 => {
                let conflicts: Vec<Conflict> =
                    serde_json::from_str(row.try_get(3)?).map_err(|e| corrupt("conflicts", e))?;
                return Ok(PushOutcome {
                    applied: count(row.try_get(6)?),
                    conflicts,
                    reported: 0,
                    head,
                    replayed: true,
                });
            }
            1 => owner = row.try_get(5)?,
            2 => plan.load(
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
            )?,
            _ => version = count(row.try_get(6)?),
        }
    }
    // None: another user's push took the replica in the same instant.
    if batch.batch_id.is_some() && owner != Some(batch.user.as_str()) {
        return Err(StoreError::ReplicaOfAnother(batch.client_id.to_string()));
    }
    if let Some(held) = &batch.schema
        && version != held.version
    {
        return Err(StoreError::SchemaChanged {
            version,
            batch: Some(Box::new(batch)),
        });
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
    let reported = if displaced.is_empty() {
        0
    } else {
        store_displaced(&mut *tx, sid, &displaced).await?
    };
    // The batch's record, its rows and the space's new head in one
    // statement (one round trip, under the lock taken above).
    let conflicts_json =
        serde_json::to_string(&conflicts).map_err(|e| StoreError::Internal(e.to_string()))?;
    let batch_id = batch.batch_id.as_ref().map(|b| b.as_str());
    if !rows.is_empty() {
        let mut cols = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for r in &rows {
            cols.0.push(r.collection.as_str());
            cols.1.push(r.id.as_str());
            cols.2.push(int(r.seq));
            cols.3.push(r.fields.as_str());
            cols.4.push(r.deleted.as_deref());
        }
        sqlx::query(
            "WITH written AS (
                 INSERT INTO records
                     (sid, collection, id, seq, fields, deleted, updated_at, author, writer)
                 SELECT $1, u.collection, u.id, u.seq, u.fields, u.deleted, $7, $13, $13
                 FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
                      AS u (collection, id, seq, fields, deleted)
                 ON CONFLICT (sid, collection, id) DO UPDATE
                 SET seq = EXCLUDED.seq, fields = EXCLUDED.fields, deleted = EXCLUDED.deleted,
                     updated_at = EXCLUDED.updated_at, writer = EXCLUDED.writer
             ), head AS (
                 UPDATE spaces SET seq = $8 WHERE sid = $1
             )
             INSERT INTO batches
                 (sid, client_id, batch_id, user_id, applied, conflicts, created_at)
             SELECT $1, $9, $10, $13, $11, $12, $7 WHERE $10::text IS NOT NULL",
        )
        .bind(sid)
        .bind(&cols.0)
        .bind(&cols.1)
        .bind(&cols.2)
        .bind(&cols.3)
        .bind(&cols.4)
        .bind(now_ms())
        .bind(int(seq))
        .bind(batch.client_id.as_str())
        .bind(batch_id)
        .bind(int(applied))
        .bind(&conflicts_json)
        .bind(batch.user.as_str())
        .execute(&mut *tx)
        .await?;
    } else if let Some(batch_id) = batch_id {
        sqlx::query(
            "INSERT INTO batches
                 (sid, client_id, batch_id, user_id, applied, conflicts, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sid)
        .bind(batch.client_id.as_str())
        .bind(batch_id)
        .bind(batch.user.as_str())
        .bind(int(applied))
        .bind(&conflicts_json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    // The app's own tables, for the collections mirrored into them, in
    // this transaction: never behind what clients are told. Last, since
    // the app's triggers on them run with the app's search path, which
    // then holds until the commit.
    if let Some(schema) = batch.schema.as_ref().and_then(|s| s.schema.as_ref()) {
        let index_of = |collection: &str, id: &str| {
            let key = (collection.to_owned(), id.to_owned());
            firsts.get(&key).copied().unwrap_or(0)
        };
        let written = rows
            .iter()
            .zip(states)
            .map(|(row, state)| Written {
                collection: &row.collection,
                id: &row.id,
                state,
            })
            .collect();
        super::mirror_rows::write(
            &mut *tx,
            namespace,
            space.as_str(),
            schema,
            written,
            &index_of,
            batch.schema.as_ref().map(|held| (keys, held.version)),
        )
        .await?;
    }

    Ok(PushOutcome {
        applied,
        conflicts,
        reported,
        head: seq,
        replayed: false,
    })
}

/// Stores the reports for the authors of writes the batch replaced unseen,
/// addressed to the replica and to its user; a replica no user pushed from
/// (a node's REST writes) has no one to tell.
async fn store_displaced(
    tx: &mut sqlx::PgConnection,
    sid: i64,
    displaced: &[(u64, ferry_core::Displaced)],
) -> Result<u64, StoreError> {
    let rows = delivery::rows(displaced)?;
    let seqs: Vec<i64> = rows.iter().map(|r| int(r.seq)).collect();
    let (clients, collections, reports): (Vec<String>, Vec<String>, Vec<String>) = rows
        .into_iter()
        .map(|r| (r.client_id, r.collection, r.conflict))
        .collect();
    let done = sqlx::query(
        "INSERT INTO conflicts (sid, client_id, user_id, seq, collection, conflict, created_at)
         SELECT $1, u.client_id, r.user_id, u.seq, u.collection, u.conflict, $6
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[])
              AS u (client_id, seq, collection, conflict)
         JOIN replicas r ON r.client_id = u.client_id",
    )
    .bind(sid)
    .bind(&clients)
    .bind(&seqs)
    .bind(&collections)
    .bind(&reports)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// The reports for `to` that `page` covers, into it; `horizon` is the
/// space's horizon when the page was read.
async fn deliver(
    pool: &PgPool,
    space: &SpaceId,
    to: &delivery::ConflictsFor,
    collections: Option<&[&str]>,
    (page, horizon): (&mut PullPage, u64),
) -> Result<(), StoreError> {
    if to.after >= page.cursor {
        return Ok(());
    }
    // Reports below the page's end were committed before the page was
    // read (commits are serialized in seq order), so a later snapshot
    // holds them all, unless a compaction removed some meanwhile: the
    // horizon, read with them, says so.
    let mut rows = sqlx::query(
        "SELECT s.horizon, c.seq, c.conflict FROM spaces s
         LEFT JOIN LATERAL (
             SELECT seq, conflict FROM conflicts
             WHERE sid = s.sid AND client_id = $2 AND user_id = $3
               AND seq > $4 AND seq <= $5
               AND ($6::text[] IS NULL OR collection = ANY ($6::text[]))
             ORDER BY seq
         ) c ON true
         WHERE s.id = $1",
    )
    .bind(space.as_str())
    .bind(to.client_id.as_str())
    .bind(to.user.as_str())
    .bind(int(to.after))
    .bind(int(page.cursor))
    .bind(collections)
    .fetch(pool);
    let mut delivery = Delivery::default();
    while let Some(row) = rows.try_next().await? {
        let now = count(row.try_get(0)?);
        if now > to.after && horizon <= to.after {
            return Err(StoreError::CursorExpired {
                cursor: to.after,
                horizon: now,
                head: page.cursor,
            });
        }
        let Some(seq) = row.try_get::<Option<i64>, _>(1)? else {
            break;
        };
        if !delivery.offer(count(seq), row.try_get(2)?)? {
            break;
        }
    }
    delivery.finish(page);
    Ok(())
}

/// A record from the columns `collection, id, seq, fields, deleted,
/// author` starting at `at`.
fn record_row(row: &PgRow, at: usize) -> Result<RecordRow, StoreError> {
    let fields: String = row.try_get(at + 3)?;
    Ok(RecordRow {
        collection: row.try_get(at)?,
        id: row.try_get(at + 1)?,
        seq: count(row.try_get(at + 2)?),
        fields: RawValue::from_string(fields).map_err(|e| corrupt("fields", e))?,
        deleted: row.try_get(at + 4)?,
        author: row.try_get(at + 5)?,
    })
}

/// `page`, a query of records `(collection, id, seq, fields, deleted,
/// author)`
/// sorted by `order` and limited, cut to what [`MAX_PAGE_BYTES`] allows,
/// in the database: each row says whether it fits (`wanted`), its fields
/// are sent only if so, and rows past the first that does not fit are not
/// sent at all. Fields are measured by `octet_length`, which reads the
/// size of a stored value without reading the value.
fn by_bytes(page: &str, order: &str) -> String {
    // One window over the page (both functions share it): `before`, the
    // bytes of the rows ahead of this one, and the length of the row just
    // ahead, so that `before - ahead` is where that row started.
    format!(
        "SELECT collection, id, seq,
                CASE WHEN before < {MAX_PAGE_BYTES} THEN fields ELSE '{{}}' END AS fields,
                deleted, author, before < {MAX_PAGE_BYTES} AS wanted
         FROM (
             SELECT collection, id, seq, fields, deleted, author,
                    sum(octet_length(fields)) OVER w - octet_length(fields) AS before,
                    lag(octet_length(fields), 1, 0) OVER w AS ahead
             FROM ({page}) page
             WINDOW w AS (ORDER BY {order} ROWS UNBOUNDED PRECEDING)
         ) sized
         WHERE before - ahead < {MAX_PAGE_BYTES}
         ORDER BY {order}"
    )
}

/// Fills a page from rows of [`by_bytes`] whose record starts at `at`
/// (its `wanted` six columns on).
fn fill(rows: &[PgRow], at: usize, limit: u32) -> Result<PageFill, StoreError> {
    let mut page = PageFill::new(limit);
    for row in rows {
        let Some(wanted) = row.try_get::<Option<bool>, _>(at + 6)? else {
            continue;
        };
        if !page.wants_next() {
            break;
        }
        if !wanted {
            page.more = true;
            break;
        }
        page.push(record_row(row, at)?);
    }
    Ok(page)
}

pub async fn pull(pool: &PgPool, space: &SpaceId, q: &PullQuery) -> Result<PullPage, StoreError> {
    // One statement is one snapshot: the head and the page agree.
    let collections: Option<Vec<&str>> = q
        .collections
        .as_ref()
        .map(|cs| cs.iter().map(Collection::as_str).collect());
    let page = by_bytes(
        "SELECT collection, id, seq, fields, deleted, author FROM records
         WHERE sid = s.sid AND seq > $2
           AND ($3::text[] IS NULL OR collection = ANY ($3::text[]))
         ORDER BY seq LIMIT $4",
        "seq",
    );
    let rows = sqlx::query(&format!(
        "SELECT s.seq, s.horizon, r.collection, r.id, r.seq, r.fields, r.deleted, r.author,
                r.wanted
         FROM spaces s
         LEFT JOIN LATERAL ({page}) r ON true
         WHERE s.id = $1"
    ))
    .bind(space.as_str())
    .bind(int(q.cursor))
    .bind(&collections)
    .bind(i64::from(q.limit) + 1)
    .fetch_all(pool)
    .await?;
    let first = rows.first().ok_or(StoreError::NotFound("space"))?;
    let (head, horizon) = (count(first.try_get(0)?), count(first.try_get(1)?));
    check_cursor(q.cursor, horizon, head)?;
    let mut page = PullPage::finish(fill(&rows, 2, q.limit)?, q, head);
    if let Some(to) = &q.conflicts {
        deliver(
            pool,
            space,
            to,
            collections.as_deref(),
            (&mut page, horizon),
        )
        .await?;
    }
    Ok(page)
}

const RECORD_COLUMNS: &str = "r.collection, r.id, r.seq, r.fields, r.deleted, r.author";

/// The space's key, or `NotFound`.
async fn sid(pool: &PgPool, space: &SpaceId) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT sid FROM spaces WHERE id = $1")
        .bind(space.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound("space"))
}

pub async fn record(
    pool: &PgPool,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
) -> Result<Option<RecordRow>, StoreError> {
    let sid = sid(pool, space).await?;
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records r WHERE r.sid = $1 AND r.collection = $2 AND r.id = $3"
    );
    let row = sqlx::query(&sql)
        .bind(sid)
        .bind(collection.as_str())
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(|r| record_row(&r, 0)).transpose()
}

pub async fn list(
    pool: &PgPool,
    space: &SpaceId,
    collection: &Collection,
    after: Option<&RecordId>,
    limit: u32,
) -> Result<PageFill, StoreError> {
    let sid = sid(pool, space).await?;
    let sql = by_bytes(
        "SELECT collection, id, seq, fields, deleted, author FROM records
         WHERE sid = $1 AND collection = $2 AND deleted IS NULL AND id > $3
         ORDER BY id LIMIT $4",
        "id",
    );
    let rows = sqlx::query(&sql)
        .bind(sid)
        .bind(collection.as_str())
        .bind(after.map_or("", RecordId::as_str))
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await?;
    fill(&rows, 0, limit)
}
