//! API tokens in SQLite (only their hashes).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::StoreError;
use crate::store::api_tokens::{self, ApiToken, COLUMNS, Row};
use crate::store::stored::int;

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

pub fn create(
    c: &mut Connection,
    t: &ApiToken,
    hash: &str,
    max_live: u64,
) -> Result<bool, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let live: i64 = tx.query_row(
        "SELECT count(*) FROM api_tokens WHERE user_id = ?1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > ?2)",
        params![t.user.as_str(), int(t.created_at)],
        |r| r.get(0),
    )?;
    if live >= int(max_live) {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO api_tokens
         (id, user_id, name, hash, spaces, access, server_fields, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            t.id,
            t.user.as_str(),
            t.name,
            hash,
            api_tokens::spaces_text(&t.spaces)?,
            t.access.as_str(),
            t.server_fields,
            int(t.created_at),
            t.expires_at.map(int),
        ],
    )?;
    tx.commit()?;
    Ok(true)
}

pub fn list(c: &mut Connection, user: &str) -> Result<Vec<ApiToken>, StoreError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE user_id = ?1 AND revoked_at IS NULL
         ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt.query_map([user], row)?;
    rows.map(|r| api_tokens::from_row(r?)).collect()
}

pub fn revoke(c: &mut Connection, user: &str, id: &str, now: u64) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE api_tokens SET revoked_at = ?3 WHERE user_id = ?1 AND id = ?2 AND revoked_at IS NULL",
        params![user, id, int(now)],
    )? == 1)
}

/// The live token with this hash at `now`.
pub fn find(c: &mut Connection, hash: &str, now: u64) -> Result<Option<ApiToken>, StoreError> {
    c.query_row(
        &format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE hash = ?1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > ?2)"
        ),
        params![hash, int(now)],
        row,
    )
    .optional()?
    .map(api_tokens::from_row)
    .transpose()
}

pub fn touch(c: &mut Connection, id: &str, now: u64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
        params![id, int(now)],
    )?;
    Ok(())
}
