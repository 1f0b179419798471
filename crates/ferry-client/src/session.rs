//! Who uses the replica: anonymous at first, then a signed-in user.
//!
//! - Before sign-in the app writes to [`ANONYMOUS_SPACE`], a space that
//!   never leaves the device (ids starting with `local:` are never synced).
//! - Signing in (a magic link's token, or an external provider's access
//!   token) stores the session in the replica and, the first time, moves
//!   the anonymous records into the user's personal space `user:{id}`,
//!   pending writes included, so they sync as the user's.
//! - [`Session`] is the [`Credentials`] of a signed-in replica: it sends the
//!   stored access token and, on `401`, rotates the refresh token. Several
//!   processes may share the replica, so a refresh happens under a file
//!   lock and re-reads the stored tokens first: a refresh token is never
//!   presented twice (which would revoke the whole session).
//! - Signing out either keeps the local data or wipes it, leaving nothing
//!   of the user in the file (the default for shared devices).

use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_core::{SpaceId, UserId, merge_states};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::remote::{Credentials, Remote, send};
use crate::replica::{Replica, corrupt, meta, read_state, set_meta, write_state};

/// Where the app writes before anyone signs in; never synced.
pub const ANONYMOUS_SPACE: &str = "local:anonymous";

/// Whether `space` stays on the device.
pub fn is_local(space: &SpaceId) -> bool {
    space.as_str().starts_with("local:")
}

/// The signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Ferry's id for them.
    pub id: UserId,
    /// Their email, when known.
    pub email: Option<String>,
}

/// What signing out does to local data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOut {
    /// Delete every record, pending change and conflict, and scrub the
    /// file, so the next person on the device finds nothing.
    Wipe,
    /// Keep the data (a personal device); the next sign-in of another user
    /// still starts clean of this user's spaces only if the app wipes then.
    Keep,
}

#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    user: UserInfo,
}

#[derive(Debug, Deserialize)]
struct UserInfo {
    id: UserId,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Me {
    user: UserInfo,
}

/// Asks the server at `base` to mail a sign-in link to `email`.
pub async fn request_magic_link(base: &str, email: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/auth/magic-link", base.trim_end_matches('/'));
    let _: serde_json::Value = send(http.post(url).json(&json!({ "email": email }))).await?;
    Ok(())
}

impl Replica {
    /// The signed-in user, if any.
    pub fn user(&self) -> Result<Option<User>> {
        let conn = self.conn();
        let Some(id) = meta(&conn, "user_id")? else {
            return Ok(None);
        };
        Ok(Some(User {
            id: UserId::new(id).map_err(|e| corrupt("user id", e))?,
            email: meta(&conn, "email")?,
        }))
    }

    /// Where the app keeps the person's own data: `user:{id}` once signed
    /// in, [`ANONYMOUS_SPACE`] before.
    pub fn personal_space(&self) -> Result<SpaceId> {
        let space = match self.user()? {
            Some(user) => format!("user:{}", user.id),
            None => ANONYMOUS_SPACE.to_owned(),
        };
        Ok(SpaceId::new(space)?)
    }

    /// The server this replica signed in to, if it did.
    pub fn server(&self) -> Result<Option<String>> {
        Ok(meta(&self.conn(), "server")?)
    }

    /// Signs in with the token of a magic link, claiming the anonymous
    /// data into the user's personal space.
    pub async fn sign_in_with_link(&self, base: &str, token: &str) -> Result<User> {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/auth/verify", base.trim_end_matches('/'));
        let tokens: Tokens = send(http.post(url).json(&json!({ "token": token }))).await?;
        self.start_session(
            base,
            &tokens.user,
            &tokens.access_token,
            Some(&tokens.refresh_token),
        )
    }

    /// Signs in with an access token Ferry accepts (an external identity
    /// provider's): the server says whose it is. Such a session cannot
    /// refresh; give the replica a fresh token with this call again.
    pub async fn sign_in_with_token(&self, base: &str, access_token: &str) -> Result<User> {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/me", base.trim_end_matches('/'));
        let me: Me = send(http.get(url).bearer_auth(access_token)).await?;
        self.start_session(base, &me.user, access_token, None)
    }

    fn start_session(
        &self,
        base: &str,
        user: &UserInfo,
        access: &str,
        refresh: Option<&str>,
    ) -> Result<User> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(other) = meta(&tx, "user_id")?.filter(|id| id != user.id.as_str()) {
            return Err(Error::Invalid(format!(
                "user {other} is signed in on this replica; sign them out first"
            )));
        }
        set_meta(&tx, "user_id", user.id.as_str())?;
        set_meta(&tx, "server", base.trim_end_matches('/'))?;
        match &user.email {
            Some(email) => set_meta(&tx, "email", email)?,
            None => {
                tx.execute("DELETE FROM meta WHERE key = 'email'", [])?;
            }
        }
        set_meta(&tx, "access_token", access)?;
        match refresh {
            Some(token) => set_meta(&tx, "refresh_token", token)?,
            None => {
                tx.execute("DELETE FROM meta WHERE key = 'refresh_token'", [])?;
            }
        }
        let personal = SpaceId::new(format!("user:{}", user.id))?;
        claim(&tx, &SpaceId::new(ANONYMOUS_SPACE)?, &personal)?;
        tx.execute(
            "INSERT INTO spaces (space) VALUES (?1) ON CONFLICT (space) DO NOTHING",
            [personal.as_str()],
        )?;
        tx.commit()?;
        Ok(User {
            id: user.id.clone(),
            email: user.email.clone(),
        })
    }

    /// The server at `base`, with this replica's session as credentials.
    pub fn remote(&self, base: &str) -> Result<Remote> {
        Remote::new(
            base,
            Arc::new(Session {
                replica: self.clone(),
            }),
        )
    }

    /// Signs out: ends the session on the server (best effort: offline,
    /// it ends locally anyway) and keeps or wipes the local data. Returns
    /// how many pending local changes a wipe discarded (sync first to lose
    /// none).
    pub async fn sign_out(&self, remote: &Remote, policy: SignOut) -> Result<u64> {
        let refresh = meta(&self.conn(), "refresh_token")?;
        if let Some(token) = refresh {
            let url = format!("{}/v1/auth/logout", remote.base());
            let logout = remote
                .http()
                .post(url)
                .json(&json!({ "refresh_token": token }))
                .send()
                .await;
            if let Err(e) = logout {
                tracing::debug!(error = %e, "could not end the session on the server");
            }
        }
        let mut conn = self.conn();
        let discarded = {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM meta WHERE key IN ('user_id', 'email', 'access_token', 'refresh_token')",
                [],
            )?;
            let (discarded, renewed) = match policy {
                SignOut::Keep => (0, None),
                SignOut::Wipe => (wipe(&tx)?, Some(self.renew_client_id(&tx)?)),
            };
            tx.commit()?;
            if let Some(id) = renewed {
                self.use_client_id(id);
            }
            discarded
        };
        if policy == SignOut::Wipe {
            let scrubbed = scrub(&conn);
            drop(conn);
            // The files go whatever the scrub did.
            self.wipe_files()?;
            scrubbed?;
        }
        Ok(discarded)
    }
}

/// Moves the records and pending changes of `from` into `to`, merging
/// records present in both.
fn claim(tx: &Connection, from: &SpaceId, to: &SpaceId) -> Result<()> {
    let ids: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT collection, id FROM records WHERE space = ?1")?;
        let rows = stmt.query_map([from.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (collection, id) in ids {
        let collection =
            ferry_core::Collection::new(collection).map_err(|e| corrupt("collection", e))?;
        let id = ferry_core::RecordId::new(id).map_err(|e| corrupt("record id", e))?;
        let theirs = read_state(tx, from, &collection, &id)?;
        let ours = read_state(tx, to, &collection, &id)?;
        write_state(tx, to, &collection, &id, &merge_states(ours, &theirs))?;
    }
    tx.execute("DELETE FROM records WHERE space = ?1", [from.as_str()])?;
    tx.execute(
        "UPDATE outbox SET space = ?2 WHERE space = ?1",
        params![from.as_str(), to.as_str()],
    )?;
    // Files attached before signing in upload to the user's space.
    for table in ["uploads", "missing"] {
        tx.execute(
            &format!("UPDATE OR IGNORE {table} SET space = ?2 WHERE space = ?1"),
            params![from.as_str(), to.as_str()],
        )?;
        tx.execute(
            &format!("DELETE FROM {table} WHERE space = ?1"),
            [from.as_str()],
        )?;
    }
    tx.execute("DELETE FROM spaces WHERE space = ?1", [from.as_str()])?;
    Ok(())
}

/// Deletes every record, pending change, conflict and cursor.
fn wipe(tx: &Connection) -> Result<u64> {
    let pending: i64 = tx.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
    tx.execute_batch(
        "DELETE FROM records; DELETE FROM outbox; DELETE FROM conflicts; DELETE FROM spaces;
         DELETE FROM files; DELETE FROM uploads; DELETE FROM missing;",
    )?;
    Ok(pending.max(0) as u64)
}

/// Leaves no deleted data in the file: rewrites the database and empties
/// the write-ahead log.
fn scrub(conn: &Connection) -> Result<()> {
    conn.execute_batch("VACUUM;")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// The credentials of a signed-in replica.
#[derive(Debug)]
pub struct Session {
    replica: Replica,
}

impl Session {
    fn lock_file(&self) -> Result<File> {
        let mut path = self.replica.path().as_os_str().to_owned();
        path.push(".session-lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::Invalid(format!("cannot open the session lock: {e}")))
    }

    async fn refresh_tokens(&self, remote: &Remote, stale: Option<String>) -> Result<bool> {
        let lock = self.lock_file()?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| Error::Invalid(format!("session lock: {e}")))?
            .map_err(|e| Error::Invalid(format!("session lock: {e}")))?;
        let (access, refresh) = {
            let conn = self.replica.conn();
            (meta(&conn, "access_token")?, meta(&conn, "refresh_token")?)
        };
        // Another process refreshed while this one waited.
        if access.is_some() && access != stale {
            return Ok(true);
        }
        let Some(refresh) = refresh else {
            return Ok(false);
        };
        let url = format!("{}/v1/auth/refresh", remote.base());
        let answer: Result<Tokens> = send(
            remote
                .http()
                .post(url)
                .json(&json!({ "refresh_token": refresh })),
        )
        .await;
        let result = match answer {
            Ok(tokens) => {
                let conn = self.replica.conn();
                let tx = conn.unchecked_transaction()?;
                set_meta(&tx, "access_token", &tokens.access_token)?;
                set_meta(&tx, "refresh_token", &tokens.refresh_token)?;
                tx.commit()?;
                Ok(true)
            }
            Err(e) if e.status() == Some(401) => Ok(false),
            Err(e) => Err(e),
        };
        drop(lock);
        result
    }
}

impl Credentials for Session {
    fn token(&self) -> Option<String> {
        meta(&self.replica.conn(), "access_token").ok().flatten()
    }

    fn refresh<'a>(
        &'a self,
        remote: &'a Remote,
    ) -> Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>> {
        let stale = self.token();
        Box::pin(self.refresh_tokens(remote, stale))
    }
}
