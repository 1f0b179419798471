//! The app's backend writes to mirrored tables, applied (docs/tables.md):
//! the capture trigger queued each in `captured`, in the app's own
//! transaction; a node takes the oldest space with queued writes, locks it
//! as a push does (so one node at a time applies a space's writes, in the
//! order they were queued), turns its writes into one server batch stamped
//! with the node's clock, pushes it through the same code as any push
//! (merge, schema, conflicts, seq, the table written back), and removes
//! what it applied, all in one transaction. A crash anywhere leaves the
//! writes queued for the next drain.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::schema::Schema;
use ferry_core::schema::row::RowWrite;
use ferry_core::{
    Change, ClientId, Collection, FieldValue, Fields, Hlc, RecordId, RecordState, SpaceId, UserId,
    apply_change,
};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

use super::adopt::{ADOPT, current_rows};
use crate::clock::ServerClock;
use crate::store::stored::{corrupt, count};
use crate::store::{AppSchema, Batch, Drained, StoreError};

/// The most queued writes one drain applies in one transaction.
pub const MAX_TAKEN: i64 = 1000;
/// The most bytes of queued rows one drain reads.
pub(super) const MAX_TAKEN_BYTES: i64 = 8 << 20;
/// The largest queued row taken: a record's limit, with room for the old
/// row beside the new one and for JSON's keys.
pub(super) const MAX_ROW_BYTES: usize = 2 * ferry_core::protocol::MAX_RECORD_BYTES + 64 * 1024;
/// What a queued row takes as the text Ferry reads (not as stored: a
/// compressed value would hide its size).
const ROW_BYTES: &str =
    "coalesce(octet_length(new_row::text), 0) + coalesce(octet_length(old_row::text), 0)";

/// The user a captured write is made by.
pub const BACKEND_USER: &str = "backend";

/// One queued write.
pub struct Queued {
    /// Its place in the queue.
    pub id: i64,
    /// The collection its table mirrors.
    pub collection: String,
    /// `INSERT`, `UPDATE`, `DELETE`, or [`ADOPT`].
    pub op: String,
    /// The row after it (its key alone for an adoption, until read).
    pub new_row: Option<Map<String, Value>>,
    /// The row before it.
    pub old_row: Option<Map<String, Value>>,
}

fn object(text: Option<String>) -> Result<Option<Map<String, Value>>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt("captured row", e)))
        .transpose()
}

/// Applies the queued writes of the space with the oldest one, if any is
/// queued. `None` when the queue is empty.
pub async fn drain(
    pool: &PgPool,
    namespace: &str,
    schema: Arc<AppSchema>,
    clock: &ServerClock,
    node: &ClientId,
) -> Result<Option<Drained>, StoreError> {
    let oldest: Option<Option<String>> =
        sqlx::query_scalar("SELECT space FROM captured ORDER BY id LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let Some(space) = oldest else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    let space = match space.as_deref().map(SpaceId::new) {
        Some(Ok(space)) => space,
        _ => {
            let refused = refuse_where(
                &mut tx,
                "space IS NOT DISTINCT FROM $1",
                space.as_deref(),
                "its space column holds no space id",
            )
            .await?;
            tx.commit().await?;
            return Ok(Some(Drained {
                space: None,
                taken: refused,
                refused,
                outcome: None,
            }));
        }
    };
    // As a push: the space's lock, and a shared hold on the schema's.
    let locked = sqlx::query(
        "SELECT sid, pg_advisory_xact_lock_shared($2) FROM spaces WHERE id = $1 FOR UPDATE",
    )
    .bind(space.as_str())
    .bind(super::app_schema::APPLY_LOCK)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(locked) = locked else {
        let refused = refuse_where(
            &mut tx,
            "space = $1",
            Some(space.as_str()),
            "Ferry has no space by the id in its space column: create the space first",
        )
        .await?;
        tx.commit().await?;
        return Ok(Some(Drained {
            space: Some(space),
            taken: refused,
            refused,
            outcome: None,
        }));
    };
    let sid: i64 = locked.try_get(0)?;
    // Judged by the schema in force: a node that has not loaded the one
    // just applied (a collection newly mirrored) loads it first.
    let version: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM app_schemas")
        .fetch_one(&mut *tx)
        .await?;
    if count(version) != schema.version {
        return Err(StoreError::SchemaChanged {
            version: count(version),
            batch: None,
        });
    }
    // The space's lock keeps every other drain off these rows. A row
    // larger than a record may be is refused unread; the rest are taken
    // in order, up to MAX_TAKEN rows or MAX_TAKEN_BYTES (the first row
    // always).
    refuse_where(
        &mut tx,
        &format!(
            "id IN (SELECT id FROM captured WHERE space = $1 ORDER BY id LIMIT {MAX_TAKEN}) \
             AND {ROW_BYTES} > {MAX_ROW_BYTES}"
        ),
        Some(space.as_str()),
        "the row is larger than a record may be",
    )
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT id, collection, op, new_row, old_row FROM (
             SELECT id, collection, op, new_row::text, old_row::text,
                    sum({ROW_BYTES}) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto,
                    row_number() OVER (ORDER BY id) AS n
             FROM (SELECT * FROM captured WHERE space = $1 ORDER BY id LIMIT $2) queued
         ) sized
         WHERE upto <= $3 OR n = 1
         ORDER BY id"
    ))
    .bind(space.as_str())
    .bind(MAX_TAKEN)
    .bind(MAX_TAKEN_BYTES)
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = Vec::with_capacity(rows.len());
    for row in rows {
        queued.push(Queued {
            id: row.try_get(0)?,
            collection: row.try_get(1)?,
            op: row.try_get(2)?,
            new_row: object(row.try_get(3)?)?,
            old_row: object(row.try_get(4)?)?,
        });
    }
    let held = schema.schema.clone().unwrap_or_default();
    // Adoptions are read from the table now, within the same budget.
    let mut refusals = current_rows(&mut tx, &held, &space, &mut queued, MAX_TAKEN_BYTES).await?;
    let taken: Vec<i64> = queued.iter().map(|q| q.id).collect();
    let mut states = stored_states(&mut tx, sid, &held, &queued).await?;
    let mut changes: Vec<(i64, Change)> = Vec::new();
    for q in &queued {
        match change_of(&held, q, &mut states, clock) {
            Ok(Some(change)) => changes.push((q.id, change)),
            Ok(None) => {}
            Err(why) => refusals.push((q.id, why)),
        }
    }
    // A write the schema refuses is set aside with the reason and the rest
    // applied: the batch is merged again without it.
    let outcome = loop {
        if changes.is_empty() {
            break None;
        }
        let batch = Batch {
            user: UserId::new(BACKEND_USER).map_err(|e| StoreError::Internal(e.to_string()))?,
            client_id: node.clone(),
            batch_id: None,
            cursor: None,
            changes: changes.iter().map(|(_, c)| c.clone()).collect(),
            schema: Some(schema.clone()),
        };
        // A refusal may come after statements that did their part (the
        // app's table refusing the row): each attempt is undone alone.
        sqlx::query("SAVEPOINT ferry_drain")
            .execute(&mut *tx)
            .await?;
        let pushed = super::records::push_in(&mut tx, namespace, &space, batch).await;
        if matches!(
            pushed,
            Err(StoreError::Invalid { .. } | StoreError::RecordTooLarge { .. })
        ) {
            sqlx::query("ROLLBACK TO SAVEPOINT ferry_drain")
                .execute(&mut *tx)
                .await?;
        }
        match pushed {
            Err(StoreError::Invalid { index, violation }) if index < changes.len() => {
                let (id, _) = changes.remove(index);
                refusals.push((id, violation.to_string()));
            }
            Err(StoreError::RecordTooLarge {
                collection,
                id,
                bytes,
            }) => {
                let why = format!(
                    "record {collection}/{id} would hold {bytes} bytes of fields, past the limit"
                );
                let before = changes.len();
                changes.retain(|(captured, change)| {
                    let named =
                        change.collection().as_str() == collection && change.id().as_str() == id;
                    if named {
                        refusals.push((*captured, why.clone()));
                    }
                    !named
                });
                if changes.len() == before {
                    return Err(StoreError::Internal(why));
                }
            }
            Err(StoreError::SchemaChanged { version, .. }) => {
                return Err(StoreError::SchemaChanged {
                    version,
                    batch: None,
                });
            }
            other => break Some(other?),
        }
    };
    for (id, why) in &refusals {
        tracing::warn!(captured = id, reason = %why, %space, "refused a write to a mirrored table");
        refuse_where(&mut tx, "id = $1::bigint", Some(&id.to_string()), why).await?;
    }
    sqlx::query("DELETE FROM captured WHERE id = ANY ($1)")
        .bind(&taken)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Drained {
        space: Some(space),
        taken: taken.len() as u64,
        refused: refusals.len() as u64,
        outcome,
    }))
}

/// Moves the queued writes matching `filter` (one parameter, `$1`) to
/// `capture_refused` with `reason`; how many.
async fn refuse_where(
    tx: &mut PgConnection,
    filter: &str,
    value: Option<&str>,
    reason: &str,
) -> Result<u64, StoreError> {
    let moved = sqlx::query(&format!(
        "WITH gone AS (DELETE FROM captured WHERE {filter} RETURNING *)
         INSERT INTO capture_refused
             (id, collection, space, op, new_row, old_row, captured_at, reason)
         SELECT id, collection, space, op, new_row, old_row, captured_at, $2 FROM gone"
    ))
    .bind(value)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(moved.rows_affected())
}

type Key = (String, String);

/// The stored state of every record the queued writes name, keyed by
/// collection and id; the clock is moved past every HLC they hold, so the
/// writes are stamped after what they replace.
async fn stored_states(
    tx: &mut PgConnection,
    sid: i64,
    schema: &Schema,
    queued: &[Queued],
) -> Result<HashMap<Key, RecordState>, StoreError> {
    let mut keys: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for q in queued {
        let Some(mirror) = Collection::new(q.collection.as_str())
            .ok()
            .and_then(|c| schema.collection(&c))
            .and_then(|c| c.mirror())
        else {
            continue;
        };
        let row = q.new_row.as_ref().or(q.old_row.as_ref());
        if let Some(Value::String(id)) = row.and_then(|r| r.get(mirror.id_column)) {
            keys.0.push(q.collection.clone());
            keys.1.push(id.clone());
        }
    }
    let rows = sqlx::query(
        "SELECT r.collection, r.id, r.fields, r.deleted FROM records r
         JOIN UNNEST($2::text[], $3::text[]) AS k (collection, id)
           ON r.collection = k.collection AND r.id = k.id
         WHERE r.sid = $1",
    )
    .bind(sid)
    .bind(&keys.0)
    .bind(&keys.1)
    .fetch_all(&mut *tx)
    .await?;
    let mut states = HashMap::new();
    for row in rows {
        let fields: Fields =
            serde_json::from_str(row.try_get(2)?).map_err(|e| corrupt("fields", e))?;
        let deleted: Option<Hlc> = row
            .try_get::<Option<&str>, _>(3)?
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt("hlc", e))?;
        states.insert(
            (row.try_get(0)?, row.try_get(1)?),
            RecordState { fields, deleted },
        );
    }
    Ok(states)
}

/// The change one queued write makes, stamped by `clock` after what its
/// record holds; `None` when it changes nothing Ferry mirrors; why not,
/// when it is not a write Ferry can make. `states` follows the changes.
fn change_of(
    schema: &Schema,
    q: &Queued,
    states: &mut HashMap<Key, RecordState>,
    clock: &ServerClock,
) -> Result<Option<Change>, String> {
    let collection = Collection::new(q.collection.as_str()).map_err(|e| e.to_string())?;
    let mirror = schema
        .collection(&collection)
        .and_then(|c| c.mirror())
        .ok_or_else(|| format!("the collection {collection} is no longer mirrored"))?;
    let write = if q.op == ADOPT {
        // Taken in as the row is now, against the record as it is.
        let Some(row) = q.new_row.as_ref() else {
            return Ok(None);
        };
        let id = row.get(mirror.id_column).and_then(Value::as_str);
        let held = id.and_then(|id| states.get(&(q.collection.clone(), id.to_owned())));
        mirror.adopt(row, held)?
    } else {
        mirror.write_of(&q.op, q.new_row.as_ref(), q.old_row.as_ref())?
    };
    let Some(write) = write else {
        return Ok(None);
    };
    let id = RecordId::new(write.id.as_str())
        .map_err(|e| format!("its {} is not a record id: {e}", mirror.id_column))?;
    let key = (q.collection.clone(), write.id.clone());
    let stored = states.get(&key).cloned().unwrap_or_default();
    // An adoption saw the record as Ferry holds it: no one is told of a
    // loss. Any other write saw the row before it.
    let seen = (q.op == ADOPT).then(|| mirror.row(&write.space, &write.id, &stored));
    let old = if q.op == ADOPT {
        seen.as_ref()
    } else {
        q.old_row.as_ref()
    };
    for held in stored
        .fields
        .values()
        .map(|f| &f.hlc)
        .chain(&stored.deleted)
    {
        clock.observe(held);
    }
    let hlc = clock.tick();
    let change = match write.write {
        RowWrite::Fields(values) => {
            let base = mirror.bases(&values, &stored, old);
            let fields = values
                .into_iter()
                .map(|(name, value)| {
                    let hlc = hlc.clone();
                    (name, FieldValue { value, hlc })
                })
                .collect();
            Change::Upsert {
                collection,
                id,
                fields,
                base: Some(base),
            }
        }
        RowWrite::Delete => {
            let values = stored
                .fields
                .iter()
                .map(|(name, held)| (name.clone(), held.value.clone()))
                .collect();
            let mut base = mirror.bases(&values, &stored, old);
            // Fields the table does not show were not the backend's to see.
            for (name, held) in &stored.fields {
                if !mirror.columns.iter().any(|c| c.field == name) {
                    base.insert(name.clone(), Some(held.hlc.clone()));
                }
            }
            Change::Delete {
                collection,
                id,
                hlc,
                base: Some(base),
            }
        }
    };
    let after = apply_change(stored, change.clone()).state;
    states.insert(key, after);
    Ok(Some(change))
}
