//! The app's schema of its collections in SQLite: every version applied,
//! the newest in force. A push reads the newest version in its own
//! transaction; SQLite's one writer orders it with every apply.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::StoreError;
use ferry_core::schema::Schema;

use crate::store::stored::{corrupt, int, now_ms};

/// The newest version stored, 0 for none.
pub fn version(c: &Connection) -> Result<u64, StoreError> {
    let version: i64 = c
        .prepare_cached("SELECT coalesce(max(version), 0) FROM app_schemas")?
        .query_row([], |r| r.get(0))?;
    Ok(version.max(0) as u64)
}

/// The newest version and its JSON.
pub fn newest(c: &Connection) -> Result<(u64, Option<String>), StoreError> {
    let row: Option<(i64, String)> = c
        .prepare_cached("SELECT version, body FROM app_schemas ORDER BY version DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((version, body)) => (version.max(0) as u64, Some(body)),
        None => (0, None),
    })
}

/// The newest version whose JSON is `json`, if any was.
pub fn version_of(c: &Connection, json: &str) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> = c
        .prepare_cached("SELECT max(version) FROM app_schemas WHERE body = ?1")?
        .query_row([json], |r| r.get(0))?;
    Ok(version.map(|v| v.max(0) as u64))
}

/// Stores `json` as version `expected + 1`, if `expected` is the newest.
pub fn apply(c: &mut Connection, json: &str, expected: u64) -> Result<u64, StoreError> {
    let schema = Schema::parse_served(json)
        .and_then(|s| s.check_tables().map(|()| s))
        .map_err(|e| StoreError::Conflict(format!("the schema: {e}")))?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = version(&tx)?;
    if current != expected {
        return Err(StoreError::Conflict(format!(
            "the schema is at version {current} now, not {expected}: another was applied meanwhile"
        )));
    }
    // Its tables are made and filled in the same transaction: a version is
    // never in force without them.
    let before = match newest(&tx)?.1 {
        Some(body) => Some(Schema::parse_served(&body).map_err(|e| corrupt("app schema", e))?),
        None => None,
    };
    super::mirror::settle(&tx, before.as_ref(), &schema)?;
    let next = current + 1;
    tx.execute(
        "INSERT INTO app_schemas (version, body, applied_at) VALUES (?1, ?2, ?3)",
        params![int(next), json, now_ms()],
    )?;
    tx.commit()?;
    Ok(next)
}
