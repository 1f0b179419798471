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
use ferry_core::{ClientId, Fields, Hlc, RecordState, SpaceId};
use sqlx::{PgConnection, PgPool, Row};

use super::adopt::current_rows;
use crate::clock::ServerClock;
use crate::store::captured::{
    Key, MAX_ROW_BYTES, MAX_TAKEN, MAX_TAKEN_BYTES, Queued, backend_batch, changes_of, object,
    queued_keys, set_aside,
};
use crate::store::stored::{corrupt, count};
use crate::store::{AppSchema, Drained, StoreError};

/// What a queued row takes as the text Ferry reads (not as stored: a
/// compressed value would hide its size).
const ROW_BYTES: &str =
    "coalesce(octet_length(new_row::text), 0) + coalesce(octet_length(old_row::text), 0)";

/// Applies the queued writes of the space with the oldest one, if any is
/// queued. `None` when the queue is empty.
pub async fn drain(
    pool: &PgPool,
    namespace: &str,
    keys: &super::mirror_rows::KeyCache,
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
    // A row that is not what the trigger writes (one written into the
    // queue by hand) is refused, never the drain's error.
    let mut unread = Vec::new();
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let (Ok(new_row), Ok(old_row)) = (object(row.try_get(3)?), object(row.try_get(4)?)) else {
            unread.push((id, "the queued row is not a JSON object".to_owned()));
            continue;
        };
        queued.push(Queued {
            id,
            collection: row.try_get(1)?,
            op: row.try_get(2)?,
            new_row,
            old_row,
        });
    }
    let held = schema.schema.clone().unwrap_or_default();
    // Adoptions are read from the table now, within the same budget.
    let mut refusals = current_rows(&mut tx, &held, &space, &mut queued, MAX_TAKEN_BYTES).await?;
    // Every row read, applied or refused: all leave the queue.
    let mut taken: Vec<i64> = queued.iter().map(|q| q.id).collect();
    taken.extend(unread.iter().map(|(id, _)| *id));
    refusals.extend(unread);
    let mut states = stored_states(&mut tx, sid, &held, &queued).await?;
    let mut changes = changes_of(&held, &mut queued, &mut states, clock, &mut refusals, false);
    // A write the schema refuses is set aside with the reason and the rest
    // applied: the batch is merged again without it.
    let outcome = loop {
        if changes.is_empty() {
            break None;
        }
        let batch = backend_batch(&changes, node, &schema)?;
        // A refusal may come after statements that did their part (the
        // app's table refusing the row): each attempt is undone alone.
        sqlx::query("SAVEPOINT ferry_drain")
            .execute(&mut *tx)
            .await?;
        let pushed = super::records::push_in(&mut tx, namespace, keys, &space, batch).await;
        if matches!(
            pushed,
            Err(StoreError::Invalid { .. } | StoreError::RecordTooLarge { .. })
        ) {
            sqlx::query("ROLLBACK TO SAVEPOINT ferry_drain")
                .execute(&mut *tx)
                .await?;
        }
        match set_aside(pushed, &mut changes, &mut refusals)? {
            Some(outcome) => break Some(outcome),
            None => continue,
        }
    };
    // The app's search path, which its triggers ran with in the table's
    // writes, ends here: the rest is Ferry's own.
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(super::namespace::quoted(namespace))
        .execute(&mut *tx)
        .await?;
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

/// The stored state of every record the queued writes name, keyed by
/// collection and id; the clock is moved past every HLC they hold, so the
/// writes are stamped after what they replace.
async fn stored_states(
    tx: &mut PgConnection,
    sid: i64,
    schema: &Schema,
    queued: &[Queued],
) -> Result<HashMap<Key, RecordState>, StoreError> {
    let (collections, ids): (Vec<&str>, Vec<&str>) =
        queued_keys(schema, queued).into_iter().unzip();
    let rows = sqlx::query(
        "SELECT r.collection, r.id, r.fields, r.deleted FROM records r
         JOIN UNNEST($2::text[], $3::text[]) AS k (collection, id)
           ON r.collection = k.collection AND r.id = k.id
         WHERE r.sid = $1",
    )
    .bind(sid)
    .bind(&collections)
    .bind(&ids)
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
