//! Sign-in and refresh tokens in PostgreSQL (only their hashes).

use sqlx::{PgPool, Row};

use crate::store::stored::int;
use crate::store::stored::{self, count};
use crate::store::{RefreshToken, Rotation, StoreError};

pub async fn create_login(
    pool: &PgPool,
    hash: &str,
    email: &str,
    expires: u64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO login_tokens (hash, email, expires_at) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(email)
        .bind(int(expires))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn redeem_login(
    pool: &PgPool,
    hash: &str,
    now: u64,
) -> Result<Option<String>, StoreError> {
    // The row lock of the UPDATE lets exactly one concurrent redemption match.
    Ok(sqlx::query_scalar(
        "UPDATE login_tokens SET used_at = $2
         WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING email",
    )
    .bind(hash)
    .bind(int(now))
    .fetch_optional(pool)
    .await?)
}

pub async fn create_refresh(pool: &PgPool, t: &RefreshToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&t.hash)
    .bind(&t.family)
    .bind(t.user.as_str())
    .bind(int(t.expires_at_ms))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn rotate_refresh(
    pool: &PgPool,
    hash: &str,
    next_hash: &str,
    next_expires: u64,
    now: u64,
) -> Result<Rotation, StoreError> {
    let mut tx = pool.begin().await?;
    let found = sqlx::query(
        "SELECT family, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
         WHERE hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = found else {
        return Ok(Rotation::Invalid);
    };
    let family: String = row.try_get(0)?;
    let user: String = row.try_get(1)?;
    let expires: i64 = row.try_get(2)?;
    let used: Option<i64> = row.try_get(3)?;
    let revoked: Option<i64> = row.try_get(4)?;
    if used.is_some() || revoked.is_some() {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(&family)
        .bind(int(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(if used.is_some() {
            Rotation::Reused
        } else {
            Rotation::Revoked
        });
    }
    if count(expires) <= now {
        return Ok(Rotation::Invalid);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1")
        .bind(hash)
        .bind(int(now))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(next_hash)
    .bind(&family)
    .bind(&user)
    .bind(int(next_expires))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        user: stored::user_id(user)?,
    })
}

pub async fn revoke_family(pool: &PgPool, hash: &str, now: u64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2
         WHERE family = (SELECT family FROM refresh_tokens WHERE hash = $1) AND revoked_at IS NULL",
    )
    .bind(hash)
    .bind(int(now))
    .execute(pool)
    .await?;
    Ok(())
}
