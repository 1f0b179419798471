//! Sign-in and refresh tokens in SQLite (only their hashes).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::stored::{self, count, int};
use crate::store::{RefreshToken, Rotation, StoreError};

pub fn create_login(
    c: &mut Connection,
    hash: &str,
    email: &str,
    expires: u64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO login_tokens (hash, email, expires_at) VALUES (?1, ?2, ?3)",
        params![hash, email, int(expires)],
    )?;
    Ok(())
}

pub fn redeem_login(
    c: &mut Connection,
    hash: &str,
    now: u64,
) -> Result<Option<String>, StoreError> {
    // One statement: the writer lock makes it the only redemption.
    Ok(c.query_row(
        "UPDATE login_tokens SET used_at = ?2
         WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING email",
        params![hash, int(now)],
        |r| r.get(0),
    )
    .optional()?)
}

pub fn create_refresh(c: &mut Connection, t: &RefreshToken) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO refresh_tokens (hash, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![t.hash, t.family, t.user.as_str(), int(t.expires_at_ms)],
    )?;
    Ok(())
}

/// `(family, user_id, expires_at, used_at, revoked_at)`.
type StoredRefresh = (String, String, i64, Option<i64>, Option<i64>);

pub fn rotate_refresh(
    c: &mut Connection,
    hash: &str,
    next_hash: &str,
    next_expires: u64,
    now: u64,
) -> Result<Rotation, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<StoredRefresh> = tx
        .query_row(
            "SELECT family, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
             WHERE hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((family, user, expires, used, revoked)) = found else {
        return Ok(Rotation::Invalid);
    };
    if used.is_some() || revoked.is_some() {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
            params![family, int(now)],
        )?;
        tx.commit()?;
        return Ok(if used.is_some() {
            Rotation::Reused
        } else {
            Rotation::Revoked
        });
    }
    if count(expires) <= now {
        return Ok(Rotation::Invalid);
    }
    tx.execute(
        "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1",
        params![hash, int(now)],
    )?;
    tx.execute(
        "INSERT INTO refresh_tokens (hash, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![next_hash, family, user, int(next_expires)],
    )?;
    tx.commit()?;
    Ok(Rotation::Rotated {
        user: stored::user_id(user)?,
    })
}

pub fn revoke_family(c: &mut Connection, hash: &str, now: u64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE refresh_tokens SET revoked_at = ?2
         WHERE family = (SELECT family FROM refresh_tokens WHERE hash = ?1) AND revoked_at IS NULL",
        params![hash, int(now)],
    )?;
    Ok(())
}
