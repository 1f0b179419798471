//! Collections mirrored into tables of Ferry's SQLite file (docs/tables.md,
//! "On SQLite"): each a real table an app on the same machine reads with
//! any SQLite client, made by `ferry schema apply` and filled with the
//! records the collection already holds, then written in each push's
//! transaction, so it is never behind what clients were told.
//!
//! SQLite has one schema per file and no `NOTIFY`: a table takes only a
//! name no other object of the file has, and Ferry keeps the names it made
//! in `mirrored_tables`, with the collection each holds.

use std::collections::HashMap;

use ferry_core::schema::Schema;
use ferry_core::schema::row::{sortable_timestamp, sortable_timestamp_ms};
use ferry_core::schema::table::{DEFAULT_TABLE_SCHEMA, Mirror};
use ferry_core::schema::{Rule, Violation};
use ferry_core::{Collection, RecordId, RecordState};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::mirror_triggers::{OPS, marked, trigger, triggers};
use crate::store::StoreError;
use crate::store::stored::{corrupt, now_ms};

/// `name` quoted as an SQLite identifier (Ferry's names never hold `"`).
pub(super) fn q(name: &str) -> String {
    format!("\"{name}\"")
}

/// The SQLite type of a column Ferry would make `sql_type` in PostgreSQL.
fn column_type(sql_type: &str) -> &'static str {
    match sql_type {
        "text" => "TEXT",
        "bigint" | "boolean" => "INTEGER",
        "double precision" => "REAL",
        // Timestamps as sortable text; JSON and arrays as JSON text.
        _ => "TEXT",
    }
}

/// A field's value as its column holds it: text, integers and reals as
/// themselves, a boolean as 1 or 0, a timestamp as sortable UTC text, JSON
/// and arrays as JSON text (timestamps in an array made sortable too).
fn cell(sql_type: &str, value: Option<&Value>) -> Sql {
    let Some(value) = value else {
        return Sql::Null;
    };
    let text = |s: Option<String>| s.map_or(Sql::Null, Sql::Text);
    match sql_type {
        "text" => text(value.as_str().map(str::to_owned)),
        "bigint" => value.as_i64().map_or(Sql::Null, Sql::Integer),
        "double precision" => value.as_f64().map_or(Sql::Null, Sql::Real),
        "boolean" => value
            .as_bool()
            .map_or(Sql::Null, |b| Sql::Integer(b.into())),
        "timestamptz" => text(value.as_str().and_then(sortable_timestamp)),
        "timestamptz[]" => {
            let items: Option<Vec<Value>> = value.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| {
                        let at = item.as_str().and_then(sortable_timestamp);
                        at.map_or(Value::Null, Value::from)
                    })
                    .collect()
            });
            text(items.map(|items| Value::from(items).to_string()))
        }
        _ => Sql::Text(value.to_string()),
    }
}

/// Makes every mirrored table of `schema` ready inside the apply's
/// transaction: creates a table that does not exist, adds the columns of
/// fields it lacks, and writes the row of every record of a collection
/// newly mirrored or mirrored differently than `before`. A name another
/// object of the file has, or a table made for another collection, is
/// refused, naming it.
pub fn settle(tx: &Connection, before: Option<&Schema>, schema: &Schema) -> Result<(), StoreError> {
    // Tables no longer mirrored keep their rows and lose their triggers.
    for old in before
        .iter()
        .flat_map(|b| b.collections.values())
        .filter_map(|c| c.mirror())
    {
        let kept = schema
            .collections
            .values()
            .filter_map(|c| c.mirror())
            .any(|m| m.table == old.table);
        if !kept {
            for op in OPS {
                tx.execute_batch(&format!(
                    "DROP TRIGGER IF EXISTS {}",
                    q(&trigger(op, old.table))
                ))?;
            }
        }
    }
    for (collection, held) in &schema.collections {
        let Some(mirror) = held.mirror() else {
            continue;
        };
        let at = |why: String| StoreError::Conflict(format!("{collection}: {why}"));
        if mirror.table_schema != DEFAULT_TABLE_SCHEMA {
            return Err(at(format!(
                "table_schema = {:?} names a PostgreSQL schema; Ferry's SQLite file has none: \
                 leave table_schema out",
                mirror.table_schema
            )));
        }
        if mirror.table.starts_with("sqlite_") {
            return Err(at(format!(
                "SQLite keeps names starting with sqlite_ for itself: {} cannot be a table",
                mirror.table
            )));
        }
        let owner: Option<String> = tx
            .prepare_cached("SELECT collection FROM mirrored_tables WHERE name = ?1")?
            .query_row([mirror.table], |r| r.get(0))
            .optional()?;
        let kind: Option<String> = tx
            .prepare_cached("SELECT type FROM sqlite_schema WHERE name = ?1")?
            .query_row([mirror.table], |r| r.get(0))
            .optional()?;
        match (kind, owner) {
            (Some(kind), None) => {
                return Err(at(format!(
                    "Ferry's database file already has a {kind} named {}: name another table",
                    mirror.table
                )));
            }
            (_, Some(owner)) if owner != collection.as_str() => {
                return Err(at(format!(
                    "the table {} was made for the collection {owner}: name another table",
                    mirror.table
                )));
            }
            (None, _) => create(tx, collection, &mirror)?,
            (Some(_), Some(_)) => complete(tx, collection, &mirror)?,
        }
        tx.execute_batch(&triggers(collection, &mirror))?;
        let was = before
            .and_then(|b| b.collections.get(collection))
            .and_then(|c| c.mirror());
        if was.as_ref().map(shape) != Some(shape(&mirror)) {
            marked(tx, || fill(tx, collection, &mirror))?;
        }
    }
    Ok(())
}

/// What a table's rows hold, by column: the rows are written again when
/// it changes (not for a field's other rules).
fn shape<'m>(m: &'m Mirror<'_>) -> Vec<(&'m str, &'static str)> {
    let mut columns = vec![
        (m.table, ""),
        (m.space_column, ""),
        (m.id_column, ""),
        (m.soft_delete_column, ""),
        (m.updated_column, ""),
    ];
    columns.extend(m.columns.iter().map(|c| (c.column, c.sql_type)));
    columns
}

fn create(tx: &Connection, collection: &Collection, m: &Mirror<'_>) -> Result<(), StoreError> {
    let mut columns = vec![
        format!("{} TEXT NOT NULL", q(m.space_column)),
        format!("{} TEXT NOT NULL", q(m.id_column)),
    ];
    columns.extend(
        m.columns
            .iter()
            .map(|c| format!("{} {}", q(c.column), column_type(c.sql_type))),
    );
    columns.push(format!("{} TEXT", q(m.soft_delete_column)));
    // The app's own inserts need not set it.
    columns.push(format!(
        "{} TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        q(m.updated_column)
    ));
    columns.push(format!(
        "PRIMARY KEY ({}, {})",
        q(m.space_column),
        q(m.id_column)
    ));
    tx.execute_batch(&format!(
        "CREATE TABLE {} ({})",
        q(m.table),
        columns.join(", ")
    ))?;
    tx.prepare_cached(
        "INSERT INTO mirrored_tables (name, collection) VALUES (?1, ?2)
         ON CONFLICT (name) DO NOTHING",
    )?
    .execute([m.table, collection.as_str()])?;
    Ok(())
}

/// Adds the columns a table Ferry made lacks (a field declared since, or
/// another soft-delete or updated-at column, which has no default); a
/// different space or id column is refused (the rows are keyed by them).
fn complete(tx: &Connection, collection: &Collection, m: &Mirror<'_>) -> Result<(), StoreError> {
    // Each column, and its place in the primary key (0: not in it).
    let mut found: Vec<(String, i64)> = Vec::new();
    {
        let mut stmt = tx.prepare(&format!("PRAGMA table_info({})", q(m.table)))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            found.push((row.get(1)?, row.get(5)?));
        }
    }
    let mut key: Vec<&str> = found
        .iter()
        .filter(|(_, pk)| *pk > 0)
        .map(|(name, _)| name.as_str())
        .collect();
    key.sort_unstable();
    let mut wanted_key = vec![m.space_column, m.id_column];
    wanted_key.sort_unstable();
    if key != wanted_key {
        return Err(StoreError::Conflict(format!(
            "{collection}: the table {} is keyed by ({}), not ({}, {}); its rows are keyed by \
             the columns it was made with: mirror into a new table",
            m.table,
            key.join(", "),
            m.space_column,
            m.id_column
        )));
    }
    let found: Vec<String> = found.into_iter().map(|(name, _)| name).collect();
    let wanted = m
        .columns
        .iter()
        .map(|c| (c.column, column_type(c.sql_type)))
        .chain([(m.soft_delete_column, "TEXT"), (m.updated_column, "TEXT")]);
    for (column, kind) in wanted {
        if !found.iter().any(|f| f == column) {
            tx.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {} {kind}",
                q(m.table),
                q(column)
            ))?;
        }
    }
    Ok(())
}

/// Writes the row of every record `collection` holds.
fn fill(tx: &Connection, collection: &Collection, m: &Mirror<'_>) -> Result<(), StoreError> {
    let mut stmt = tx.prepare(
        "SELECT s.id, r.id, r.fields, r.deleted FROM records r JOIN spaces s ON s.sid = r.sid
         WHERE r.collection = ?1",
    )?;
    let mut rows = stmt.query([collection.as_str()])?;
    while let Some(row) = rows.next()? {
        let (space, id): (String, String) = (row.get(0)?, row.get(1)?);
        let state = state_of(&row.get::<_, String>(2)?, row.get(3)?)?;
        write_row(tx, m, &space, &id, &state)?;
    }
    Ok(())
}

pub(super) fn state_of(fields: &str, deleted: Option<String>) -> Result<RecordState, StoreError> {
    Ok(RecordState {
        fields: serde_json::from_str(fields).map_err(|e| corrupt("fields", e))?,
        deleted: deleted
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt("hlc", e))?,
    })
}

/// Writes one record's row: every column of a live record (the upsert),
/// or the soft-delete column of a deleted one that has a row (which keeps
/// its last values).
fn write_row(
    tx: &Connection,
    m: &Mirror<'_>,
    space: &str,
    id: &str,
    state: &RecordState,
) -> rusqlite::Result<()> {
    let (table, s, i) = (q(m.table), q(m.space_column), q(m.id_column));
    let (deleted, updated) = (q(m.soft_delete_column), q(m.updated_column));
    let now = sortable_timestamp_ms(now_ms()).unwrap_or_default();
    if state.deleted.is_some() {
        let at = Mirror::deleted_at(state).and_then(|at| sortable_timestamp(&at));
        tx.prepare_cached(&format!(
            "UPDATE {table} SET {deleted} = coalesce({deleted}, ?3), {updated} = ?4
             WHERE {s} = ?1 AND {i} = ?2"
        ))?
        .execute(params![space, id, at.unwrap_or_else(|| now.clone()), now])?;
        return Ok(());
    }
    let mut names = vec![s.clone(), i.clone(), deleted.clone(), updated.clone()];
    names.extend(m.columns.iter().map(|c| q(c.column)));
    let marks: Vec<String> = (1..=names.len()).map(|n| format!("?{n}")).collect();
    let set: Vec<String> = names[2..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let mut values = vec![
        Sql::Text(space.to_owned()),
        Sql::Text(id.to_owned()),
        Sql::Null,
        Sql::Text(now),
    ];
    values.extend(
        m.columns
            .iter()
            .zip(m.cells(state))
            .map(|(c, value)| cell(c.sql_type, value)),
    );
    tx.prepare_cached(&format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({s}, {i}) DO UPDATE SET {}",
        names.join(", "),
        marks.join(", "),
        set.join(", ")
    ))?
    .execute(params_from_iter(values))?;
    Ok(())
}

/// Writes the rows of the records a push changed, for every collection of
/// `schema` mirrored into a table, in the push's transaction. A row the
/// table refuses (a unique index or a trigger the app added) is the
/// change's `422`, rule `column`, at the index `firsts` gives the record.
pub fn write<'a>(
    tx: &Connection,
    space: &str,
    schema: &Schema,
    written: impl Iterator<Item = (&'a str, &'a str, RecordState)>,
    firsts: &HashMap<(String, String), usize>,
) -> Result<(), StoreError> {
    marked(tx, || write_marked(tx, space, schema, written, firsts))
}

fn write_marked<'a>(
    tx: &Connection,
    space: &str,
    schema: &Schema,
    written: impl Iterator<Item = (&'a str, &'a str, RecordState)>,
    firsts: &HashMap<(String, String), usize>,
) -> Result<(), StoreError> {
    for (collection, id, state) in written {
        let Some(mirror) = schema.mirror_of(collection) else {
            continue;
        };
        let Err(e) = write_row(tx, &mirror, space, id, &state) else {
            continue;
        };
        if e.sqlite_error_code() != Some(ErrorCode::ConstraintViolation) {
            tracing::error!(table = mirror.table, error = %e, "writing a mirrored table failed");
            return Err(StoreError::Unavailable(format!(
                "writing the mirrored table {}: {e}",
                mirror.table
            )));
        }
        tracing::info!(table = mirror.table, id, error = %e, "a mirrored table refused a row");
        let index = firsts
            .get(&(collection.to_owned(), id.to_owned()))
            .copied()
            .unwrap_or(0);
        let (Ok(collection), Ok(id)) = (Collection::new(collection), RecordId::new(id)) else {
            return Err(StoreError::Internal("a stored record's name".into()));
        };
        return Err(StoreError::Invalid {
            index,
            violation: Box::new(Violation {
                collection,
                id,
                field: None,
                rule: Rule::Column,
                message: format!("the table {} refuses it: {e}", mirror.table),
            }),
        });
    }
    Ok(())
}
