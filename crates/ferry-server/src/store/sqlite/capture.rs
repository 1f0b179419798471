//! Other processes' writes to mirrored tables of Ferry's SQLite file,
//! applied (docs/tables.md, "On SQLite"): each table's triggers queued
//! them in `captured`, in the writer's own transaction; the node takes the
//! space with the oldest, turns its writes into one server batch stamped
//! with the node's clock, pushes it through the same code as any push, and
//! removes what it applied, all in one write transaction (SQLite's one
//! writer orders it with every push). A crash leaves the writes queued.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::schema::Schema;
use ferry_core::schema::row::sortable_timestamp;
use ferry_core::schema::table::Mirror;
use ferry_core::{ClientId, RecordState, SpaceId};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use crate::clock::ServerClock;
use crate::store::captured::{
    Key, MAX_ROW_BYTES, MAX_TAKEN, MAX_TAKEN_BYTES, Queued, backend_batch, changes_of, object,
    queued_keys, set_aside,
};
use crate::store::{AppSchema, Drained, StoreError};

/// What a queued row takes, in bytes.
const ROW_BYTES: &str =
    "coalesce(length(CAST(new_row AS BLOB)), 0) + coalesce(length(CAST(old_row AS BLOB)), 0)";

/// Whether any write is queued (read without the writer).
pub fn any_queued(c: &Connection) -> Result<bool, StoreError> {
    Ok(c.prepare_cached("SELECT 1 FROM captured LIMIT 1")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Applies the queued writes of the space with the oldest one, if any is
/// queued. `None` when the queue is empty.
pub fn drain(
    c: &mut Connection,
    schema: Arc<AppSchema>,
    clock: &ServerClock,
    node: &ClientId,
) -> Result<Option<Drained>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let oldest: Option<(i64, Option<String>)> = tx
        .prepare_cached("SELECT id, space FROM captured ORDER BY id LIMIT 1")?
        .query_row([], |r| {
            // Any process that writes the file can write the queue: a
            // space that is not text is no space, never the drain's error.
            let space = match r.get_ref(1)? {
                ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_owned),
                _ => None,
            };
            Ok((r.get(0)?, space))
        })
        .optional()?;
    let Some((oldest, space)) = oldest else {
        return Ok(None);
    };
    let none = |space: Option<SpaceId>, refused: u64| Drained {
        space,
        taken: refused,
        refused,
        outcome: None,
    };
    let Some(Ok(space)) = space.as_deref().map(SpaceId::new) else {
        let why = "its space column holds no space id";
        let refused = refuse_where(
            &tx,
            "id = CAST(?1 AS INTEGER)",
            Some(&oldest.to_string()),
            why,
        )?;
        tx.commit()?;
        return Ok(Some(none(None, refused)));
    };
    let sid: Option<i64> = tx
        .prepare_cached("SELECT sid FROM spaces WHERE id = ?1")?
        .query_row([space.as_str()], |r| r.get(0))
        .optional()?;
    let Some(sid) = sid else {
        let why = "Ferry has no space by the id in its space column: create the space first";
        let refused = refuse_where(&tx, "space = ?1", Some(space.as_str()), why)?;
        tx.commit()?;
        return Ok(Some(none(Some(space), refused)));
    };
    // Judged by the schema in force.
    let version = super::app_schema::version(&tx)?;
    if version != schema.version {
        return Err(StoreError::SchemaChanged {
            version,
            batch: None,
        });
    }
    refuse_where(
        &tx,
        &format!(
            "id IN (SELECT id FROM captured WHERE space = ?1 ORDER BY id LIMIT {MAX_TAKEN}) \
             AND {ROW_BYTES} > {MAX_ROW_BYTES}"
        ),
        Some(space.as_str()),
        "the row is larger than a record may be",
    )?;
    let held = schema.schema.clone().unwrap_or_default();
    // Any process that writes the file can write the queue: a row that is
    // not what the triggers write is refused, never the drain's error.
    let mut queued = Vec::new();
    let mut refusals = Vec::new();
    // Every row read, applied or refused: all leave the queue.
    let mut taken = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT id, collection, op, new_row, old_row FROM (
                 SELECT id, collection, op, new_row, old_row,
                        sum({ROW_BYTES}) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto,
                        row_number() OVER (ORDER BY id) AS n
                 FROM (SELECT * FROM captured WHERE space = ?1 ORDER BY id LIMIT ?2)
             ) WHERE upto <= ?3 OR n = 1 ORDER BY id"
        ))?;
        let mut rows = stmt.query(params![space.as_str(), MAX_TAKEN, MAX_TAKEN_BYTES])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            taken.push(id);
            match queued_row(row, &held) {
                Ok(q) => queued.push(q),
                Err(why) => refusals.push((id, why)),
            }
        }
    }
    let mut states = stored_states(&tx, sid, &held, &queued)?;
    let mut changes = changes_of(&held, &mut queued, &mut states, clock, &mut refusals, true);
    // A write the push refuses is set aside with the reason, and the rest
    // pushed again; each attempt is undone alone.
    let outcome = loop {
        if changes.is_empty() {
            break None;
        }
        let batch = backend_batch(&changes, node, &schema)?;
        tx.execute_batch("SAVEPOINT ferry_drain")?;
        let pushed = super::records::push_in(&tx, &space, batch);
        if pushed.is_err() {
            tx.execute_batch("ROLLBACK TO ferry_drain")?;
        }
        tx.execute_batch("RELEASE ferry_drain")?;
        if let Some(outcome) = set_aside(pushed, &mut changes, &mut refusals)? {
            break Some(outcome);
        }
    };
    for (id, why) in &refusals {
        tracing::warn!(captured = id, reason = %why, %space, "refused a write to a mirrored table");
        refuse_where(&tx, "id = CAST(?1 AS INTEGER)", Some(&id.to_string()), why)?;
    }
    let taken_json =
        serde_json::to_string(&taken).map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.prepare_cached("DELETE FROM captured WHERE id IN (SELECT value FROM json_each(?1))")?
        .execute([taken_json])?;
    tx.commit()?;
    Ok(Some(Drained {
        space: Some(space),
        taken: taken.len() as u64,
        refused: refusals.len() as u64,
        outcome,
    }))
}

/// A queued row as the triggers write one: text where text is, and the
/// rows JSON objects; why not, otherwise.
fn queued_row(row: &rusqlite::Row<'_>, held: &Schema) -> Result<Queued, String> {
    let text = |i: usize| -> Result<Option<String>, String> {
        match row.get_ref(i).map_err(|e| e.to_string())? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
            _ => Err("the queued row is not one Ferry's triggers write".to_owned()),
        }
    };
    let collection = text(1)?.unwrap_or_default();
    let mirror = held.mirror_of(&collection);
    let read = |i: usize| -> Result<Option<Map<String, Value>>, String> {
        let row = object(text(i)?).map_err(|_| "the queued row is not a JSON object".to_owned())?;
        Ok(row.map(|row| match &mirror {
            Some(m) => as_written(m, row),
            None => row,
        }))
    };
    Ok(Queued {
        id: row.get(0).map_err(|e| e.to_string())?,
        op: text(2)?.unwrap_or_default(),
        new_row: read(3)?,
        old_row: read(4)?,
        collection,
    })
}

/// A row as the triggers queued it, its values as a PostgreSQL row's
/// (what the core reads): a boolean column's 1 and 0 as true and false,
/// a JSON or array column's text as the JSON it holds, and a timestamp
/// as SQLite writes one (`datetime('now')`, `CURRENT_TIMESTAMP`: UTC,
/// no offset) as RFC 3339. Anything else is left for the schema to
/// judge.
fn as_written(m: &Mirror<'_>, mut row: Map<String, Value>) -> Map<String, Value> {
    for column in &m.columns {
        let Some(value) = row.get_mut(column.column) else {
            continue;
        };
        let json = column.sql_type == "jsonb" || column.sql_type.ends_with("[]");
        let read = match &*value {
            Value::Number(n) if column.sql_type == "boolean" => match n.as_i64() {
                Some(1) => Some(Value::Bool(true)),
                Some(0) => Some(Value::Bool(false)),
                _ => None,
            },
            Value::String(s) if column.sql_type == "timestamptz" => {
                sqlite_time(s).map(Value::String)
            }
            Value::String(s) if json => serde_json::from_str(s).ok(),
            _ => None,
        };
        if let Some(read) = read {
            *value = read;
        }
    }
    row
}

/// SQLite's own text for a UTC time (`2026-12-03 09:10:00`, with or
/// without a fraction) as RFC 3339; `None` for anything else.
fn sqlite_time(s: &str) -> Option<String> {
    let plain = s.len() >= 19
        && s.as_bytes().get(10) == Some(&b' ')
        && s.is_char_boundary(19)
        && s[19..].bytes().all(|c| c == b'.' || c.is_ascii_digit());
    if !plain || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return None;
    }
    let rfc = format!("{}T{}Z", &s[..10], &s[11..]);
    sortable_timestamp(&rfc).map(|_| rfc)
}

/// Moves the queued writes matching `filter` (one parameter, `?1`) to
/// `capture_refused` with `reason`; how many.
fn refuse_where(
    tx: &Connection,
    filter: &str,
    value: Option<&str>,
    reason: &str,
) -> Result<u64, StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO capture_refused
             (id, collection, space, op, new_row, old_row, captured_at, reason)
         SELECT id, collection, space, op, new_row, old_row, captured_at, ?2
         FROM captured WHERE {filter}"
    ))?
    .execute(params![value, reason])?;
    let moved = tx
        .prepare_cached(&format!("DELETE FROM captured WHERE {filter}"))?
        .execute([value])?;
    Ok(moved as u64)
}

/// The stored state of every record the queued writes name; the clock is
/// moved past them by [`change_of`].
fn stored_states(
    tx: &Connection,
    sid: i64,
    schema: &Schema,
    queued: &[Queued],
) -> Result<HashMap<Key, RecordState>, StoreError> {
    let keys = queued_keys(schema, queued);
    let keys = serde_json::to_string(&keys).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut stmt = tx.prepare_cached(super::records::READ_BATCH_SQL)?;
    let mut rows = stmt.query(params![sid, keys])?;
    let mut states = HashMap::new();
    while let Some(row) = rows.next()? {
        let (collection, id, fields): (String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let deleted: Option<String> = row.get(3)?;
        states.insert((collection, id), super::mirror::state_of(&fields, deleted)?);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_s_own_times_read_as_rfc_3339() {
        assert_eq!(
            sqlite_time("2026-12-03 09:10:00").as_deref(),
            Some("2026-12-03T09:10:00Z")
        );
        assert_eq!(
            sqlite_time("2026-12-03 09:10:00.250").as_deref(),
            Some("2026-12-03T09:10:00.250Z")
        );
        assert_eq!(sqlite_time("2026-12-03T09:10:00Z"), None);
        assert_eq!(sqlite_time("2026-12-03 09:10:00+02:00"), None);
        assert_eq!(sqlite_time("soon"), None);
    }
}
