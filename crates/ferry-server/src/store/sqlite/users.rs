//! Users, spaces, members and signing keys in SQLite.

use ferry_core::protocol::{Member, SpaceInfo};
use ferry_core::{Role, SpaceId, UserId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::store::stored;
use crate::store::stored::now_ms;
use crate::store::{StoreError, StoredKey, User};

/// The display name of every personal space.
pub const PERSONAL_SPACE_NAME: &str = "Personal";

fn immediate(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

pub fn signing_keys(
    c: &mut Connection,
    candidate: &StoredKey,
) -> Result<Vec<StoredKey>, StoreError> {
    let tx = immediate(c)?;
    let count: i64 = tx.query_row("SELECT count(*) FROM signing_keys", [], |r| r.get(0))?;
    if count == 0 {
        tx.execute(
            "INSERT INTO signing_keys (kid, private_pkcs8, created_at) VALUES (?1, ?2, ?3)",
            params![
                candidate.kid,
                candidate.private_pkcs8,
                candidate.created_at_ms as i64
            ],
        )?;
    }
    let keys = {
        let mut stmt = tx.prepare(
            "SELECT kid, private_pkcs8, created_at FROM signing_keys ORDER BY created_at DESC, kid",
        )?;
        stmt.query_map([], |r| {
            Ok(StoredKey {
                kid: r.get(0)?,
                private_pkcs8: r.get(1)?,
                created_at_ms: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    Ok(keys)
}

/// Inserts a user and their personal space, inside the caller's transaction.
fn insert_user(tx: &Transaction<'_>, id: &UserId, email: Option<&str>) -> Result<(), StoreError> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO users (id, email, created_at) VALUES (?1, ?2, ?3)",
        params![id.as_str(), email, now],
    )?;
    let space = id.personal_space();
    // The personal space id is reserved (no one else can create a `user:`
    // space), so it is free unless this user existed before.
    tx.execute(
        "INSERT INTO spaces (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
        params![space.as_str(), PERSONAL_SPACE_NAME, now],
    )?;
    tx.execute(
        "INSERT INTO members (sid, user_id, role)
         SELECT sid, ?2, 'owner' FROM spaces WHERE id = ?1
         ON CONFLICT DO NOTHING",
        params![space.as_str(), id.as_str()],
    )?;
    Ok(())
}

fn find_user(c: &Connection, id: &UserId) -> Result<Option<User>, StoreError> {
    let email: Option<Option<String>> = c
        .query_row(
            "SELECT email FROM users WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(email.map(|email| User {
        id: id.clone(),
        email,
    }))
}

pub fn user(c: &mut Connection, id: &UserId) -> Result<Option<User>, StoreError> {
    find_user(c, id)
}

pub fn ensure_user(c: &mut Connection, id: &UserId) -> Result<User, StoreError> {
    if let Some(user) = find_user(c, id)? {
        return Ok(user);
    }
    let tx = immediate(c)?;
    let user = match find_user(&tx, id)? {
        Some(user) => user,
        None => {
            insert_user(&tx, id, None)?;
            User {
                id: id.clone(),
                email: None,
            }
        }
    };
    tx.commit()?;
    Ok(user)
}

pub fn user_by_email(c: &mut Connection, email: &str, new_id: &UserId) -> Result<User, StoreError> {
    let tx = immediate(c)?;
    let found: Option<String> = tx
        .query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
            r.get(0)
        })
        .optional()?;
    let user = match found {
        Some(id) => User {
            id: stored::user_id(id)?,
            email: Some(email.to_owned()),
        },
        None => {
            insert_user(&tx, new_id, Some(email))?;
            User {
                id: new_id.clone(),
                email: Some(email.to_owned()),
            }
        }
    };
    tx.commit()?;
    Ok(user)
}

pub fn spaces_of(c: &mut Connection, user: &UserId) -> Result<Vec<SpaceInfo>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT s.id, s.name, m.role FROM members m JOIN spaces s ON s.sid = m.sid
         WHERE m.user_id = ?1 ORDER BY s.id",
    )?;
    let rows = stmt
        .query_map([user.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, name, role)| {
            Ok(SpaceInfo {
                id: stored::space_id(id)?,
                name,
                role: stored::role(&role)?,
            })
        })
        .collect()
}

pub fn create_space(
    c: &mut Connection,
    id: &SpaceId,
    name: &str,
    owner: &UserId,
) -> Result<(), StoreError> {
    let tx = immediate(c)?;
    let inserted = tx.execute(
        "INSERT INTO spaces (id, name, created_at, created_by) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO NOTHING",
        params![id.as_str(), name, now_ms(), owner.as_str()],
    )?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("space {id} already exists")));
    }
    tx.execute(
        "INSERT INTO members (sid, user_id, role) VALUES (last_insert_rowid(), ?1, 'owner')",
        [owner.as_str()],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn spaces_created_by(c: &mut Connection, user: &UserId) -> Result<u64, StoreError> {
    let n: i64 = c
        .prepare_cached("SELECT count(*) FROM spaces WHERE created_by = ?1")?
        .query_row([user.as_str()], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

pub fn role(
    c: &mut Connection,
    space: &SpaceId,
    user: &UserId,
) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = c
        .prepare_cached(
            "SELECT m.role FROM members m JOIN spaces s ON s.sid = m.sid
             WHERE s.id = ?1 AND m.user_id = ?2",
        )?
        .query_row([space.as_str(), user.as_str()], |r| r.get(0))
        .optional()?;
    role.as_deref().map(stored::role).transpose()
}

pub fn members(c: &mut Connection, space: &SpaceId) -> Result<Vec<Member>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT m.user_id, u.email, m.role FROM members m
         JOIN spaces s ON s.sid = m.sid JOIN users u ON u.id = m.user_id
         WHERE s.id = ?1 ORDER BY m.user_id",
    )?;
    let rows = stmt
        .query_map([space.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(user_id_text, email, role)| {
            Ok(Member {
                user_id: stored::user_id(user_id_text)?,
                email,
                role: stored::role(&role)?,
            })
        })
        .collect()
}

/// Sets `user`'s role in `space`, or removes them when `role` is `None`.
pub fn set_member(
    c: &mut Connection,
    space: &SpaceId,
    user: &UserId,
    role: Option<Role>,
) -> Result<(), StoreError> {
    let tx = immediate(c)?;
    let sid: i64 = tx
        .query_row(
            "SELECT sid FROM spaces WHERE id = ?1",
            [space.as_str()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NotFound("space"))?;
    if role.is_some() && find_user(&tx, user)?.is_none() {
        return Err(StoreError::NotFound("user"));
    }
    let current: Option<String> = tx
        .query_row(
            "SELECT role FROM members WHERE sid = ?1 AND user_id = ?2",
            params![sid, user.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let current = current.as_deref().map(stored::role).transpose()?;
    if role.is_none() && current.is_none() {
        return Err(StoreError::NotFound("member"));
    }
    if current == Some(Role::Owner) && role != Some(Role::Owner) {
        let owners: i64 = tx.query_row(
            "SELECT count(*) FROM members WHERE sid = ?1 AND role = 'owner'",
            [sid],
            |r| r.get(0),
        )?;
        if owners <= 1 {
            return Err(StoreError::Conflict(
                "a space keeps at least one owner: add another owner first".into(),
            ));
        }
    }
    match role {
        Some(role) => tx.execute(
            "INSERT INTO members (sid, user_id, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (sid, user_id) DO UPDATE SET role = excluded.role",
            params![sid, user.as_str(), role.as_str()],
        )?,
        None => tx.execute(
            "DELETE FROM members WHERE sid = ?1 AND user_id = ?2",
            params![sid, user.as_str()],
        )?,
    };
    tx.commit()?;
    Ok(())
}

pub fn user_for_identity(
    c: &mut Connection,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    new_id: &UserId,
) -> Result<User, StoreError> {
    // Known identities are read without taking the write lock.
    let known: Option<String> = c
        .query_row(
            "SELECT user_id FROM identities WHERE issuer = ?1 AND subject = ?2",
            params![issuer, subject],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = known {
        let id = stored::user_id(id)?;
        return find_user(c, &id)?
            .ok_or_else(|| StoreError::Internal(format!("user {id} vanished")));
    }
    let tx = immediate(c)?;
    let known: Option<String> = tx
        .query_row(
            "SELECT user_id FROM identities WHERE issuer = ?1 AND subject = ?2",
            params![issuer, subject],
            |r| r.get(0),
        )
        .optional()?;
    let id = match known {
        Some(id) => stored::user_id(id)?,
        None => {
            let taken = match email {
                Some(e) => tx
                    .query_row("SELECT 1 FROM users WHERE email = ?1", [e], |_| Ok(()))
                    .optional()?
                    .is_some(),
                None => false,
            };
            insert_user(&tx, new_id, if taken { None } else { email })?;
            tx.execute(
                "INSERT INTO identities (issuer, subject, user_id) VALUES (?1, ?2, ?3)",
                params![issuer, subject, new_id.as_str()],
            )?;
            new_id.clone()
        }
    };
    let user =
        find_user(&tx, &id)?.ok_or_else(|| StoreError::Internal(format!("user {id} vanished")))?;
    tx.commit()?;
    Ok(user)
}

/// The heads of those of `spaces` that exist and, with `member`, that
/// `member` belongs to. One query whatever the number of spaces.
pub fn heads(
    c: &mut Connection,
    spaces: &[SpaceId],
    member: Option<&UserId>,
) -> Result<Vec<(SpaceId, u64)>, StoreError> {
    let ids = serde_json::to_string(spaces).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut stmt = c.prepare_cached(
        "SELECT s.id, s.seq FROM json_each(?1) j CROSS JOIN spaces s ON s.id = j.value
         WHERE ?2 IS NULL
            OR EXISTS (SELECT 1 FROM members m WHERE m.sid = s.sid AND m.user_id = ?2)",
    )?;
    let rows = stmt.query_map(params![ids, member.map(UserId::as_str)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    rows.map(|row| {
        let (id, seq) = row?;
        Ok((stored::space_id(id)?, stored::count(seq)))
    })
    .collect()
}
