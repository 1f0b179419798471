//! The embedded SQLite backend.
//!
//! One writer connection behind a mutex serializes every write, which is
//! what makes `seq` order commit order here; readers use their own
//! connections and, with WAL, never wait for the writer. rusqlite is
//! synchronous, so every call runs on tokio's blocking pool. The writer's
//! mutex is tokio's and is taken before going to that pool, so writes queued
//! behind the current one wait as tasks, not as parked blocking threads.
//! Reads are the same: at most [`READERS`] run at once, each on a connection
//! kept for the next read (opened when first needed), and the rest wait as
//! tasks for a turn; the idle readers sit behind a std mutex held only to
//! push or pop one.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit is on disk before
//! the server answers.

mod api_tokens;
mod app_schema;
mod billing;
mod capture;
mod compact;
mod files;
mod group;
mod mirror;
mod mirror_triggers;
mod records;
mod schema;
mod tokens;
mod users;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ferry_core::protocol::{Member, SpaceInfo};
use ferry_core::{ClientId, Collection, RecordId, Role, SpaceId, UserId};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::api_tokens::ApiToken;
use super::{
    AppSchema, Batch, BillingEvent, CompactReport, Drained, EventOutcome, PageFill, PoolState,
    PullPage, PullQuery, PushOutcome, RecordRow, RefreshToken, Rotation, Store, StoreError,
    StoredEntitlement, StoredKey, User,
};

/// How many reads run at once, each on a reader connection of its own that
/// is kept for the next. Before this bound, a burst of concurrent requests
/// opened a connection for each read past the eighth and closed it after
/// (its setup and its statements compiled again: a fifth of a busy node's
/// CPU), and a flood of reads could open as many connections as the
/// blocking pool has threads.
const READERS: usize = 8;

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<Connection>>,
    /// The writer may be set not to flush: see `write_unflushed`.
    unflushed: AtomicBool,
    readers: Mutex<Vec<Connection>>,
    /// A turn to read: [`READERS`] of them.
    reading: Arc<tokio::sync::Semaphore>,
    /// Reader connections opened so far.
    readers_opened: AtomicU64,
    /// Pushes waiting to share the writer's next transaction.
    pushes: group::Queue,
    /// Transactions that committed pushes, and the pushes they committed.
    push_commits: AtomicU64,
    pushes_committed: AtomicU64,
}

impl Inner {
    /// Puts the writer `conn` back to flushing every commit, if a
    /// bookkeeping write left it not to (see `write_unflushed`).
    fn flushing(&self, conn: &mut Connection) -> Result<(), StoreError> {
        if self.unflushed.load(Ordering::SeqCst) {
            conn.pragma_update(None, "synchronous", "FULL")?;
            self.unflushed.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

fn open_connection(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Plans that do not change with the values bound: otherwise a cached
    // statement whose plan could depend on a bound value (a `LIMIT ?`, a
    // comparison the planner can fold) is compiled again each time it is
    // bound anew, which was a fifth of a push's CPU. Every statement here
    // is written for its index, whatever the values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        tokio::task::spawn_blocking(move || {
            let mut writer = open_connection(&path, true).map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
            })?;
            schema::migrate(&mut writer)?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    path,
                    writer: Arc::new(tokio::sync::Mutex::new(writer)),
                    unflushed: AtomicBool::new(false),
                    readers: Mutex::new(Vec::new()),
                    reading: Arc::new(tokio::sync::Semaphore::new(READERS)),
                    readers_opened: AtomicU64::new(0),
                    pushes: group::Queue::default(),
                    push_commits: AtomicU64::new(0),
                    pushes_committed: AtomicU64::new(0),
                }),
            })
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Runs `f` on the writer connection. Every write goes through here, one
    /// at a time.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let mut conn = self.inner.writer.clone().lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.flushing(&mut conn)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Pushes `batch`, in the writer's next group of pushes (see `group`):
    /// waits for its answer, or for the writer to lead a group itself.
    async fn push_grouped(&self, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError> {
        let mut told = self.inner.pushes.add(space.clone(), batch);
        loop {
            tokio::select! {
                biased;
                answer = &mut told => {
                    return answer.map_err(|_| {
                        StoreError::Internal("a group of pushes ended without an answer".into())
                    })?;
                }
                mut conn = self.inner.writer.clone().lock_owned() => {
                    let inner = self.inner.clone();
                    let led = tokio::task::spawn_blocking(move || {
                        // Taken first: whatever happens next, each push
                        // taken is answered here and no later group
                        // applies it after its caller was told otherwise.
                        let group = inner.pushes.take();
                        if let Err(e) = inner.flushing(&mut conn) {
                            group::fail(group, &e);
                            return;
                        }
                        let committed = group::commit(&mut conn, group);
                        if committed > 0 {
                            inner.push_commits.fetch_add(1, Ordering::Relaxed);
                            inner.pushes_committed.fetch_add(committed as u64, Ordering::Relaxed);
                        }
                    })
                    .await;
                    if let Err(e) = led {
                        tracing::error!(error = %e, "a group of pushes failed");
                    }
                    // Answered (its answer decides, even after a failure
                    // above), unless the group was full before this push:
                    // then wait again.
                }
            }
        }
    }

    /// Runs `f` on the writer connection without flushing its commit to
    /// disk (`synchronous = NORMAL`), for bookkeeping that a power cut may
    /// roll back without breaking a promise: webhook leases and cursors,
    /// whose loss means a delivery is sent again (webhooks are at least
    /// once). The next ordinary commit flushes it with everything before it
    /// (the WAL is one file, written in order), and a crash of the process
    /// loses nothing. A flush is what a commit costs here; a busy node's
    /// webhook rounds would otherwise take two from the pushes. The writer
    /// itself, not a connection of its own, so that its cache of pages
    /// stays valid (another connection's commit would make it read them
    /// again); `unflushed` says it must be put back to flushing, which
    /// [`Self::write`] does before anything else if this could not.
    async fn write_unflushed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        self.write(move |c| {
            inner.unflushed.store(true, Ordering::SeqCst);
            c.pragma_update(None, "synchronous", "NORMAL")?;
            let result = f(c);
            // If this fails, the mark stays and the next write puts the
            // writer back first; what `f` committed is still its answer.
            if c.pragma_update(None, "synchronous", "FULL").is_ok() {
                inner.unflushed.store(false, Ordering::SeqCst);
            }
            result
        })
        .await
    }

    /// Runs `f` on a reader connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        // The semaphore is never closed.
        let turn = inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(c) => c,
                None => {
                    inner.readers_opened.fetch_add(1, Ordering::Relaxed);
                    open_connection(&inner.path, false)?
                }
            };
            let result = f(&mut conn);
            // Held by this read's turn: never more than READERS are kept.
            inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            drop(turn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn pool_state(&self) -> PoolState {
        // The writer, the readers kept between reads and those reading.
        let idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u32;
        let reading = (READERS - self.inner.reading.available_permits()) as u32;
        PoolState {
            // A turn taken before its connection is popped, or a
            // connection pushed back before its turn ends, counts twice
            // for an instant.
            connections: (1 + idle + reading).min(1 + READERS as u32),
            idle,
            max: 1 + READERS as u32,
            push_commits: self.inner.push_commits.load(Ordering::Relaxed),
            pushes_committed: self.inner.pushes_committed.load(Ordering::Relaxed),
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(drop)
    }

    async fn signing_keys(&self, candidate: StoredKey) -> Result<Vec<StoredKey>, StoreError> {
        self.write(move |c| users::signing_keys(c, &candidate))
            .await
    }

    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO signing_keys (kid, private_pkcs8, created_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![key.kid, key.private_pkcs8, key.created_at_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn ensure_user(&self, id: &UserId) -> Result<User, StoreError> {
        let id = id.clone();
        self.write(move |c| users::ensure_user(c, &id)).await
    }

    async fn user_by_email(&self, email: &str, new_id: &UserId) -> Result<User, StoreError> {
        let (email, new_id) = (email.to_owned(), new_id.clone());
        self.write(move |c| users::user_by_email(c, &email, &new_id))
            .await
    }

    async fn user_for_identity(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
        new_id: &UserId,
    ) -> Result<User, StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        let (email, new_id) = (email.map(str::to_owned), new_id.clone());
        self.write(move |c| {
            users::user_for_identity(c, &issuer, &subject, email.as_deref(), &new_id)
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let id = id.clone();
        self.read(move |c| users::user(c, &id)).await
    }

    async fn spaces_of(&self, user: &UserId) -> Result<Vec<SpaceInfo>, StoreError> {
        let user = user.clone();
        self.read(move |c| users::spaces_of(c, &user)).await
    }

    async fn create_space(
        &self,
        id: &SpaceId,
        name: &str,
        owner: &UserId,
    ) -> Result<(), StoreError> {
        let (id, name, owner) = (id.clone(), name.to_owned(), owner.clone());
        self.write(move |c| users::create_space(c, &id, &name, &owner))
            .await
    }

    async fn spaces_created_by(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.clone();
        self.read(move |c| users::spaces_created_by(c, &user)).await
    }

    async fn role(&self, space: &SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
        let (space, user) = (space.clone(), user.clone());
        self.read(move |c| users::role(c, &space, &user)).await
    }

    async fn members(&self, space: &SpaceId) -> Result<Vec<Member>, StoreError> {
        let space = space.clone();
        self.read(move |c| users::members(c, &space)).await
    }

    async fn set_member(
        &self,
        space: &SpaceId,
        user: &UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        let (space, user) = (space.clone(), user.clone());
        self.write(move |c| users::set_member(c, &space, &user, Some(role)))
            .await
    }

    async fn remove_member(&self, space: &SpaceId, user: &UserId) -> Result<(), StoreError> {
        let (space, user) = (space.clone(), user.clone());
        self.write(move |c| users::set_member(c, &space, &user, None))
            .await
    }

    async fn member_heads(
        &self,
        user: &UserId,
        spaces: &[SpaceId],
    ) -> Result<Vec<(SpaceId, u64)>, StoreError> {
        let (user, spaces) = (user.clone(), spaces.to_vec());
        self.read(move |c| users::heads(c, &spaces, Some(&user)))
            .await
    }

    async fn heads(&self, spaces: &[SpaceId]) -> Result<Vec<(SpaceId, u64)>, StoreError> {
        let spaces = spaces.to_vec();
        self.read(move |c| users::heads(c, &spaces, None)).await
    }

    async fn push(&self, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError> {
        self.push_grouped(space, batch).await
    }

    async fn space_ids(
        &self,
        after: Option<&SpaceId>,
        limit: u32,
    ) -> Result<Vec<SpaceId>, StoreError> {
        let after = after.map(|s| s.to_string()).unwrap_or_default();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT id FROM spaces WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let ids = stmt.query_map(rusqlite::params![after, i64::from(limit)], |r| {
                r.get::<_, String>(0)
            })?;
            ids.map(|id| {
                SpaceId::new(id?).map_err(|e| crate::store::stored::corrupt("space id", e))
            })
            .collect()
        })
        .await
    }

    async fn app_schema(&self) -> Result<(u64, Option<String>), StoreError> {
        self.read(|c| app_schema::newest(c)).await
    }

    async fn apply_app_schema(&self, json: &str, expected: u64) -> Result<u64, StoreError> {
        let json = json.to_owned();
        self.write(move |c| app_schema::apply(c, &json, expected))
            .await
    }

    fn capture_poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(100)
    }

    async fn drain_captured(
        &self,
        schema: Arc<AppSchema>,
        clock: &Arc<crate::clock::ServerClock>,
        node: &ClientId,
    ) -> Result<Option<Drained>, StoreError> {
        // Looked at without the writer, which pushes need.
        if !self.read(|c| capture::any_queued(c)).await? {
            return Ok(None);
        }
        let (clock, node) = (clock.clone(), node.clone());
        self.write(move |c| capture::drain(c, schema, &clock, &node))
            .await
    }

    async fn app_schema_version_of(&self, json: &str) -> Result<Option<u64>, StoreError> {
        let json = json.to_owned();
        self.read(move |c| app_schema::version_of(c, &json)).await
    }

    async fn pull(&self, space: &SpaceId, query: PullQuery) -> Result<PullPage, StoreError> {
        let space = space.clone();
        self.read(move |c| records::pull(c, &space, &query)).await
    }

    async fn record(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
    ) -> Result<Option<RecordRow>, StoreError> {
        let (space, collection, id) = (space.clone(), collection.clone(), id.clone());
        self.read(move |c| records::record(c, &space, &collection, &id))
            .await
    }

    async fn compact_with(
        &self,
        cutoff_ms: u64,
        reports_cutoff_ms: u64,
    ) -> Result<CompactReport, StoreError> {
        self.write(move |c| compact::compact(c, cutoff_ms, reports_cutoff_ms))
            .await
    }

    async fn create_login_token(
        &self,
        hash: &str,
        email: &str,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let (hash, email) = (hash.to_owned(), email.to_owned());
        self.write(move |c| tokens::create_login(c, &hash, &email, expires_at_ms))
            .await
    }

    async fn redeem_login_token(
        &self,
        hash: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let hash = hash.to_owned();
        self.write(move |c| tokens::redeem_login(c, &hash, now_ms))
            .await
    }

    async fn create_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.write(move |c| tokens::create_refresh(c, &token)).await
    }

    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next_hash: &str,
        next_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        let (hash, next) = (hash.to_owned(), next_hash.to_owned());
        self.write(move |c| tokens::rotate_refresh(c, &hash, &next, next_expires_at_ms, now_ms))
            .await
    }

    async fn revoke_refresh_family(&self, hash: &str, now_ms: u64) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.write(move |c| tokens::revoke_family(c, &hash, now_ms))
            .await
    }

    async fn create_api_token(
        &self,
        token: &ApiToken,
        hash: &str,
        max_live: u64,
    ) -> Result<bool, StoreError> {
        let (token, hash) = (token.clone(), hash.to_owned());
        self.write(move |c| api_tokens::create(c, &token, &hash, max_live))
            .await
    }

    async fn api_tokens(&self, user: &UserId) -> Result<Vec<ApiToken>, StoreError> {
        let user = user.to_string();
        self.read(move |c| api_tokens::list(c, &user)).await
    }

    async fn revoke_api_token(
        &self,
        user: &UserId,
        id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (user, id) = (user.to_string(), id.to_owned());
        self.write(move |c| api_tokens::revoke(c, &user, &id, now_ms))
            .await
    }

    async fn use_api_token(&self, hash: &str, now_ms: u64) -> Result<Option<ApiToken>, StoreError> {
        let hash = hash.to_owned();
        let found = self
            .read(move |c| api_tokens::find(c, &hash, now_ms))
            .await?;
        if let Some(token) = found.as_ref().filter(|t| t.last_use_stale(now_ms)) {
            let id = token.id.clone();
            self.write(move |c| api_tokens::touch(c, &id, now_ms))
                .await?;
        }
        Ok(found)
    }

    async fn list_records(
        &self,
        space: &SpaceId,
        collection: &Collection,
        after: Option<&RecordId>,
        limit: u32,
    ) -> Result<PageFill, StoreError> {
        let (space, collection) = (space.clone(), collection.clone());
        let after = after.cloned();
        self.read(move |c| records::list(c, &space, &collection, after.as_ref(), limit))
            .await
    }

    async fn entitlements(&self, user: &UserId) -> Result<Vec<StoredEntitlement>, StoreError> {
        let user = user.clone();
        self.read(move |c| billing::entitlements(c, &user)).await
    }

    async fn subscription_owner(
        &self,
        provider: &str,
        subscription_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let (provider, id) = (provider.to_owned(), subscription_id.to_owned());
        self.read(move |c| billing::subscription_owner(c, &provider, &id))
            .await
    }

    async fn user_by_customer(
        &self,
        provider: &str,
        customer_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let (provider, customer_id) = (provider.to_owned(), customer_id.to_owned());
        self.read(move |c| billing::user_by_customer(c, &provider, &customer_id))
            .await
    }

    async fn apply_billing_event(&self, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
        let event = event.clone();
        self.write(move |c| billing::apply_event(c, &event)).await
    }

    async fn set_entitlement(
        &self,
        user: &UserId,
        entitlement: &StoredEntitlement,
    ) -> Result<(), StoreError> {
        let (user, entitlement) = (user.clone(), entitlement.clone());
        self.write(move |c| billing::set_entitlement(c, &user, &entitlement))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(c: &Connection) -> Result<i64, StoreError> {
        Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    #[tokio::test]
    async fn only_bookkeeping_goes_unflushed_and_the_writer_flushes_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("ferry.db"))
            .await
            .unwrap();
        // 1 is NORMAL, 2 FULL.
        assert_eq!(store.write(|c| synchronous(c)).await.unwrap(), 2);
        assert_eq!(store.write_unflushed(|c| synchronous(c)).await.unwrap(), 1);
        assert_eq!(store.write(|c| synchronous(c)).await.unwrap(), 2);
        // Bookkeeping that fails still gives the writer back flushing.
        let failed = store
            .write_unflushed(|_| Err::<(), _>(StoreError::Internal("refused".into())))
            .await;
        assert!(failed.is_err());
        assert_eq!(store.write(|c| synchronous(c)).await.unwrap(), 2);
        // And if putting it back had failed (the writer left unflushed,
        // the mark left set), the next write puts it back first.
        store
            .write(|c| Ok(c.pragma_update(None, "synchronous", "NORMAL")?))
            .await
            .unwrap();
        store.inner.unflushed.store(true, Ordering::SeqCst);
        assert_eq!(store.write(|c| synchronous(c)).await.unwrap(), 2);
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod connection_tests;
