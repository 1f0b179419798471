//! The triggers that queue another process's writes to a mirrored table
//! of Ferry's SQLite file (docs/tables.md, "On SQLite"), and the mark
//! Ferry's own writes carry so that the triggers let them by.

use ferry_core::Collection;
use ferry_core::schema::table::Mirror;
use rusqlite::Connection;

use super::mirror::q;
use crate::store::StoreError;

/// The row events a table's triggers queue.
pub(super) const OPS: [&str; 3] = ["INSERT", "UPDATE", "DELETE"];

pub(super) fn trigger(op: &str, table: &str) -> String {
    format!("ferry_{}_{table}", op.to_ascii_lowercase())
}

/// The triggers that queue another process's writes to the table: each
/// row event as the row's mirrored columns in a JSON object, old and new,
/// unless Ferry itself is writing (`ferry_writing`). Only SQL that SQLite
/// 3.38 and later run everywhere: they run in the app's own SQLite.
pub(super) fn triggers(collection: &Collection, m: &Mirror<'_>) -> String {
    let columns: Vec<&str> = [m.space_column, m.id_column, m.soft_delete_column]
        .into_iter()
        .chain(m.columns.iter().map(|c| c.column))
        .collect();
    // At most 30 columns per json_object (SQLite before 3.48 takes at
    // most 127 arguments), merged by json_patch.
    let object = |row: &str| {
        let parts: Vec<String> = columns
            .chunks(30)
            .map(|chunk| {
                let pairs: Vec<String> = chunk
                    .iter()
                    .map(|c| format!("'{c}', {row}.{}", q(c)))
                    .collect();
                format!("json_object({})", pairs.join(", "))
            })
            .collect();
        parts
            .into_iter()
            .reduce(|all, part| format!("json_patch({all}, {part})"))
            .unwrap_or_else(|| "json_object()".to_owned())
    };
    let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    let (table, s) = (q(m.table), q(m.space_column));
    let mut sql = String::new();
    for op in OPS {
        let (space, new, old) = match op {
            "INSERT" => (format!("NEW.{s}"), object("NEW"), "NULL".to_owned()),
            "UPDATE" => (format!("NEW.{s}"), object("NEW"), object("OLD")),
            _ => (format!("OLD.{s}"), "NULL".to_owned(), object("OLD")),
        };
        let name = q(&trigger(op, m.table));
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {name};
             CREATE TRIGGER {name} AFTER {op} ON {table}
             WHEN NOT EXISTS (SELECT 1 FROM ferry_writing)
             BEGIN
                 INSERT INTO captured (collection, space, op, new_row, old_row, captured_at)
                 VALUES ('{collection}', {space}, '{op}', {new}, {old}, {now});
             END;"
        ));
    }
    sql
}

/// Runs `f`, Ferry's own writes to mirrored tables, marked so that their
/// triggers let them by (the mark is gone before the transaction ends).
pub(super) fn marked<T>(
    tx: &Connection,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.prepare_cached("INSERT INTO ferry_writing (busy) VALUES (1)")?
        .execute([])?;
    let done = f()?;
    tx.prepare_cached("DELETE FROM ferry_writing")?
        .execute([])?;
    Ok(done)
}
