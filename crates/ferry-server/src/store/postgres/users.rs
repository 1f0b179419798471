//! Users, spaces, members and signing keys in PostgreSQL.

use ferry_core::protocol::{Member, SpaceInfo};
use ferry_core::{Role, SpaceId, UserId};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::store::stored::now_ms;
use crate::store::stored::{self, count, int};
use crate::store::{StoreError, StoredKey, User};

/// The display name of every personal space.
const PERSONAL_SPACE_NAME: &str = "Personal";

pub async fn signing_keys(
    pool: &PgPool,
    candidate: &StoredKey,
) -> Result<Vec<StoredKey>, StoreError> {
    let mut tx = pool.begin().await?;
    // Nodes starting together must agree on one first key.
    sqlx::query("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&mut *tx)
        .await?;
    if n == 0 {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_pkcs8, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&candidate.kid)
        .bind(&candidate.private_pkcs8)
        .bind(int(candidate.created_at_ms))
        .execute(&mut *tx)
        .await?;
    }
    let rows = sqlx::query(
        "SELECT kid, private_pkcs8, created_at FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(StoredKey {
                kid: r.try_get(0)?,
                private_pkcs8: r.try_get(1)?,
                created_at_ms: count(r.try_get(2)?),
            })
        })
        .collect()
}

/// Inserts a user and their personal space, inside the caller's transaction.
async fn insert_user(
    tx: &mut Transaction<'_, Postgres>,
    id: &UserId,
    email: Option<&str>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(email)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let space = id.personal_space();
    sqlx::query(
        "INSERT INTO spaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(space.as_str())
    .bind(PERSONAL_SPACE_NAME)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO members (sid, user_id, role)
         SELECT sid, $2, 'owner' FROM spaces WHERE id = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(space.as_str())
    .bind(id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

pub async fn user(pool: &PgPool, id: &UserId) -> Result<Option<User>, StoreError> {
    let email: Option<Option<String>> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(email.map(|email| User {
        id: id.clone(),
        email,
    }))
}

pub async fn ensure_user(pool: &PgPool, id: &UserId) -> Result<User, StoreError> {
    if let Some(user) = user(pool, id).await? {
        return Ok(user);
    }
    let mut tx = pool.begin().await?;
    insert_user(&mut tx, id, None).await?;
    tx.commit().await?;
    // Whoever inserted first, the user exists now.
    user(pool, id)
        .await?
        .ok_or_else(|| StoreError::Internal(format!("user {id} vanished")))
}

pub async fn user_by_email(
    pool: &PgPool,
    email: &str,
    new_id: &UserId,
) -> Result<User, StoreError> {
    let find = || async {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(pool)
            .await?;
        id.map(|id| {
            Ok::<_, StoreError>(User {
                id: stored::user_id(id)?,
                email: Some(email.to_owned()),
            })
        })
        .transpose()
    };
    if let Some(user) = find().await? {
        return Ok(user);
    }
    let mut tx = pool.begin().await?;
    insert_user(&mut tx, new_id, Some(email)).await?;
    tx.commit().await?;
    // A concurrent first sight of the same email may have won; either way
    // there is exactly one user with it now.
    find()
        .await?
        .ok_or_else(|| StoreError::Internal(format!("user {email} vanished")))
}

pub async fn spaces_of(pool: &PgPool, user: &UserId) -> Result<Vec<SpaceInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.id, s.name, m.role FROM members m JOIN spaces s ON s.sid = m.sid
         WHERE m.user_id = $1 ORDER BY s.id",
    )
    .bind(user.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SpaceInfo {
                id: stored::space_id(r.try_get(0)?)?,
                name: r.try_get(1)?,
                role: stored::role(r.try_get(2)?)?,
            })
        })
        .collect()
}

pub async fn create_space(
    pool: &PgPool,
    id: &SpaceId,
    name: &str,
    owner: &UserId,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let sid: Option<i64> = sqlx::query_scalar(
        "INSERT INTO spaces (id, name, created_at, created_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING RETURNING sid",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(now_ms())
    .bind(owner.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(sid) = sid else {
        return Err(StoreError::Conflict(format!("space {id} already exists")));
    };
    sqlx::query("INSERT INTO members (sid, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(sid)
        .bind(owner.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `NotFound` unless `user` exists, read in the caller's transaction.
pub async fn require_user(c: &mut sqlx::PgConnection, user: &UserId) -> Result<(), StoreError> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
        .bind(user.as_str())
        .fetch_optional(&mut *c)
        .await?;
    exists.map(|_| ()).ok_or(StoreError::NotFound("user"))
}

pub async fn spaces_created_by(pool: &PgPool, user: &UserId) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM spaces WHERE created_by = $1")
        .bind(user.as_str())
        .fetch_one(pool)
        .await?;
    Ok(count(n))
}

pub async fn role(
    pool: &PgPool,
    space: &SpaceId,
    user: &UserId,
) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT m.role FROM members m JOIN spaces s ON s.sid = m.sid
         WHERE s.id = $1 AND m.user_id = $2",
    )
    .bind(space.as_str())
    .bind(user.as_str())
    .fetch_optional(pool)
    .await?;
    role.as_deref().map(stored::role).transpose()
}

pub async fn members(pool: &PgPool, space: &SpaceId) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.user_id, u.email, m.role FROM members m
         JOIN spaces s ON s.sid = m.sid JOIN users u ON u.id = m.user_id
         WHERE s.id = $1 ORDER BY m.user_id",
    )
    .bind(space.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                user_id: stored::user_id(r.try_get(0)?)?,
                email: r.try_get(1)?,
                role: stored::role(r.try_get(2)?)?,
            })
        })
        .collect()
}

/// Sets `user`'s role in `space`, or removes them when `role` is `None`.
/// The space's row is locked, so two owners leaving at once cannot leave
/// it without one.
pub async fn set_member(
    pool: &PgPool,
    space: &SpaceId,
    user: &UserId,
    role: Option<Role>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let sid: i64 = sqlx::query_scalar("SELECT sid FROM spaces WHERE id = $1 FOR UPDATE")
        .bind(space.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("space"))?;
    if role.is_some() {
        require_user(&mut tx, user).await?;
    }
    let current: Option<String> =
        sqlx::query_scalar("SELECT role FROM members WHERE sid = $1 AND user_id = $2")
            .bind(sid)
            .bind(user.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.as_deref().map(stored::role).transpose()?;
    if role.is_none() && current.is_none() {
        return Err(StoreError::NotFound("member"));
    }
    if current == Some(Role::Owner) && role != Some(Role::Owner) {
        let owners: i64 =
            sqlx::query_scalar("SELECT count(*) FROM members WHERE sid = $1 AND role = 'owner'")
                .bind(sid)
                .fetch_one(&mut *tx)
                .await?;
        if owners <= 1 {
            return Err(StoreError::Conflict(
                "a space keeps at least one owner: add another owner first".into(),
            ));
        }
    }
    match role {
        Some(role) => {
            sqlx::query(
                "INSERT INTO members (sid, user_id, role) VALUES ($1, $2, $3)
                 ON CONFLICT (sid, user_id) DO UPDATE SET role = EXCLUDED.role",
            )
            .bind(sid)
            .bind(user.as_str())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM members WHERE sid = $1 AND user_id = $2")
                .bind(sid)
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?
        }
    };
    tx.commit().await?;
    Ok(())
}

pub async fn user_for_identity(
    pool: &PgPool,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    new_id: &UserId,
) -> Result<User, StoreError> {
    let find = || async {
        let id: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM identities WHERE issuer = $1 AND subject = $2")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(pool)
                .await?;
        match id {
            Some(id) => user(pool, &stored::user_id(id)?).await,
            None => Ok(None),
        }
    };
    if let Some(user) = find().await? {
        return Ok(user);
    }
    let mut tx = pool.begin().await?;
    let taken = match email {
        Some(e) => sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE email = $1")
            .bind(e)
            .fetch_optional(&mut *tx)
            .await?
            .is_some(),
        None => false,
    };
    let with_email = if taken { None } else { email };
    if !insert_user(&mut tx, new_id, with_email).await? {
        // The email was taken meanwhile; the new user goes without it.
        insert_user(&mut tx, new_id, None).await?;
    }
    let inserted = sqlx::query(
        "INSERT INTO identities (issuer, subject, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(issuer)
    .bind(subject)
    .bind(new_id.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // A concurrent first sight won; this transaction's user is dropped.
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    find()
        .await?
        .ok_or_else(|| StoreError::Internal(format!("identity {issuer} {subject} vanished")))
}

/// The heads of those of `spaces` that exist and, with `member`, that
/// `member` belongs to. One query whatever the number of spaces.
pub async fn heads(
    pool: &PgPool,
    spaces: &[SpaceId],
    member: Option<&UserId>,
) -> Result<Vec<(SpaceId, u64)>, StoreError> {
    let ids: Vec<&str> = spaces.iter().map(SpaceId::as_str).collect();
    let rows = sqlx::query(
        "SELECT s.id, s.seq FROM spaces s
         WHERE s.id = ANY($1)
           AND ($2::text IS NULL
                OR EXISTS (SELECT 1 FROM members m WHERE m.sid = s.sid AND m.user_id = $2))",
    )
    .bind(&ids)
    .bind(member.map(UserId::as_str))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((stored::space_id(r.try_get(0)?)?, count(r.try_get(1)?))))
        .collect()
}
