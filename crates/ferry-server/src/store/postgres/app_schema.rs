//! The app's schema of its collections in PostgreSQL: every version
//! applied, the newest in force. An apply holds [`APPLY_LOCK`] alone; every
//! push holds it shared from its first statement and reads the newest
//! version in a later one, so a push is checked against the version in
//! force when it commits, and two applies never take one number.

use ferry_core::schema::Schema;
use sqlx::{PgPool, Row};

use crate::store::StoreError;
use crate::store::stored::{count, int, now_ms};

/// An arbitrary constant naming the lock applies take alone and pushes
/// share.
pub const APPLY_LOCK: i64 = 0x6665_7272_795f_6170;

/// The newest version and its JSON.
pub async fn newest(pool: &PgPool) -> Result<(u64, Option<String>), StoreError> {
    let row = sqlx::query("SELECT version, body FROM app_schemas ORDER BY version DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => (count(row.try_get(0)?), Some(row.try_get(1)?)),
        None => (0, None),
    })
}

/// The newest version whose JSON is `json`, if any was.
pub async fn version_of(pool: &PgPool, json: &str) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM app_schemas WHERE body = $1")
            .bind(json)
            .fetch_one(pool)
            .await?;
    Ok(version.map(count))
}

/// Stores `json` as version `expected + 1`, if `expected` is the newest,
/// with the tables of the collections it mirrors made ready in the same
/// transaction (docs/tables.md): the version is in force only with them.
pub async fn apply(
    pool: &PgPool,
    namespace: &str,
    json: &str,
    expected: u64,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM app_schemas")
        .fetch_one(&mut *tx)
        .await?;
    let current = count(current);
    if current != expected {
        return Err(StoreError::Conflict(format!(
            "the schema is at version {current} now, not {expected}: another was applied meanwhile"
        )));
    }
    let schema = Schema::parse_served(json)
        .and_then(|s| s.check_tables().map(|()| s))
        .map_err(|e| StoreError::Conflict(format!("the schema: {e}")))?;
    let before: Option<String> =
        sqlx::query_scalar("SELECT body FROM app_schemas ORDER BY version DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let before = before.and_then(|b| Schema::parse_served(&b).ok());
    super::mirror::settle(&mut tx, namespace, before.as_ref(), &schema).await?;
    let next = current + 1;
    sqlx::query("INSERT INTO app_schemas (version, body, applied_at) VALUES ($1, $2, $3)")
        .bind(int(next))
        .bind(json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(next)
}
