//! API tokens in PostgreSQL (only their hashes).

use sqlx::PgPool;

use crate::store::StoreError;
use crate::store::api_tokens::{self, ApiToken, COLUMNS, Row};
use crate::store::stored::int;

pub async fn create(
    pool: &PgPool,
    t: &ApiToken,
    hash: &str,
    max_live: u64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // One owner's creations in turn, so that the count holds.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(t.user.as_str())
        .execute(&mut *tx)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(t.user.as_str())
    .bind(int(t.created_at))
    .fetch_one(&mut *tx)
    .await?;
    if live >= int(max_live) {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO api_tokens
         (id, user_id, name, hash, spaces, access, server_fields, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&t.id)
    .bind(t.user.as_str())
    .bind(&t.name)
    .bind(hash)
    .bind(api_tokens::spaces_text(&t.spaces)?)
    .bind(t.access.as_str())
    .bind(t.server_fields)
    .bind(int(t.created_at))
    .bind(t.expires_at.map(int))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn list(pool: &PgPool, user: &str) -> Result<Vec<ApiToken>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY created_at DESC, id"
    ))
    .bind(user)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(api_tokens::from_row).collect()
}

pub async fn revoke(pool: &PgPool, user: &str, id: &str, now: u64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $3 WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(id)
    .bind(int(now))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The live token with this hash at `now`; its last use recorded when the
/// one stored is a minute old.
pub async fn use_token(
    pool: &PgPool,
    hash: &str,
    now: u64,
) -> Result<Option<ApiToken>, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > $2)"
    ))
    .bind(hash)
    .bind(int(now))
    .fetch_optional(pool)
    .await?;
    let Some(token) = row.map(api_tokens::from_row).transpose()? else {
        return Ok(None);
    };
    if token.last_use_stale(now) {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(&token.id)
            .bind(int(now))
            .execute(pool)
            .await?;
    }
    Ok(Some(token))
}
