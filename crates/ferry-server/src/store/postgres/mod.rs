//! The PostgreSQL backend, for many stateless server nodes on one database.
//!
//! Commits in one space are serialized by locking the space's row
//! (`SELECT ... FOR UPDATE`) for the push transaction and taking `seq` from
//! its counter inside it, so `seq` order is commit order; pushes to
//! different spaces run in parallel. A push is a constant number of
//! statements: the batch's rows are read in one query (`UNNEST` of the
//! keys) and written back in one multi-row upsert (`UNNEST` of the columns).
//!
//! The pool is bounded and every wait is too: acquiring a connection gives
//! up after [`ACQUIRE_TIMEOUT`], statements after 30 s, lock waits after
//! 10 s. A database that is down answers `Unavailable` (503) quickly, and
//! the pool reconnects by itself when it is back.

mod adopt;
mod api_tokens;
mod app_schema;
#[cfg(test)]
pub(crate) use app_schema::APPLY_LOCK;
#[cfg(test)]
pub(crate) use records::PUSH_READ;
mod billing;
mod capture;
mod capture_functions;
mod compact;
mod feed;
mod files;
mod mirror;
mod mirror_cells;
mod mirror_rows;
pub(crate) mod namespace;
mod records;
mod schema;
mod tokens;
mod users;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::protocol::{Member, SpaceInfo};
use ferry_core::{ClientId, Collection, RecordId, Role, SpaceId, UserId};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use self::feed::PgFeed;
use super::api_tokens::ApiToken;
use super::feed::Feed;
use super::stored::int;
use super::{
    AppSchema, Batch, BillingEvent, CompactReport, Drained, EventOutcome, PageFill, PoolState,
    PullPage, PullQuery, PushOutcome, RecordRow, RefreshToken, Rotation, Store, StoreError,
    StoredEntitlement, StoredKey, User,
};

/// At most this many connections per server node.
pub const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a connection before answering 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a pooled connection may sit idle before it is checked (a
/// round trip) on its way out of the pool.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// The PostgreSQL [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The `LISTEN/NOTIFY` channel of this deployment's nodes.
    channel: Arc<str>,
    /// The PostgreSQL schema of Ferry's own tables.
    namespace: Arc<str>,
    /// The key column casts of mirrored tables.
    keys: Arc<mirror_rows::KeyCache>,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(db) => match db.code().as_deref() {
                // Connection exceptions, shutdown, too many connections,
                // serialization failure, deadlock, lock or statement timeout:
                // all worth a retry.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || matches!(code, "53300" | "40001" | "40P01" | "55P03" | "57014") =>
                {
                    StoreError::Unavailable(e.to_string())
                }
                _ => StoreError::Internal(e.to_string()),
            },
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`), keeping
    /// Ferry's tables in the schema `ferry`, and brings them up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_in(url, namespace::DEFAULT_SCHEMA).await
    }

    /// The same, with Ferry's tables in the PostgreSQL schema `namespace`
    /// (created if needed; see [`namespace`]).
    pub async fn connect_in(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options, namespace).await
    }

    /// Connects with explicit options and brings the schema up to date.
    pub async fn connect_with(
        options: PgConnectOptions,
        namespace: &str,
    ) -> Result<Self, StoreError> {
        namespace::check_name(namespace)?;
        // Ferry's own schema alone: no query of Ferry's reaches a table of
        // the app's by name.
        let search_path = namespace::quoted(namespace);
        let options = options.application_name("ferry").options([
            ("search_path", search_path.as_str()),
            ("statement_timeout", "30s"),
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "60s"),
            // Every statement of Ferry's is prepared once per connection;
            // left to choose, PostgreSQL plans a statement again for its
            // values at each run whenever its generic plan looks costlier
            // (which the push's statements, over arrays, always do), and
            // that planning was 40% of the database's CPU under many
            // pushes. Ferry's statements are written to need no values to
            // plan well (primary-key probes, LATERAL ... LIMIT 1); a plan is
            // still made again when a table's statistics change. The test
            // `a_push_reads_by_key_with_the_generic_plan_every_connection_uses`
            // checks the push's read.
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        // One plain connection first: when the database is unreachable, its
        // error says why (refused, unknown host, bad password), where the
        // pool would only say it timed out.
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            // A connection is checked before it is handed out only when it
            // sat idle for a while (the database may have dropped it
            // meanwhile): checking every one cost a round trip per request
            // and a fifth of a busy node's CPU.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        schema::migrate(&pool, namespace).await?;
        Ok(PgStore {
            pool,
            channel: namespace::channel(namespace).into(),
            namespace: namespace.into(),
            keys: Arc::default(),
        })
    }

    /// Closes every connection; used when shutting down.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PgStore {
    fn pool_state(&self) -> PoolState {
        PoolState {
            connections: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: MAX_CONNECTIONS,
            // Each push is its own transaction here, in parallel across
            // spaces: there is no group to count.
            push_commits: 0,
            pushes_committed: 0,
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn signing_keys(&self, candidate: StoredKey) -> Result<Vec<StoredKey>, StoreError> {
        users::signing_keys(&self.pool, &candidate).await
    }

    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_pkcs8, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&key.kid)
        .bind(&key.private_pkcs8)
        .bind(int(key.created_at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ensure_user(&self, id: &UserId) -> Result<User, StoreError> {
        users::ensure_user(&self.pool, id).await
    }

    async fn user_by_email(&self, email: &str, new_id: &UserId) -> Result<User, StoreError> {
        users::user_by_email(&self.pool, email, new_id).await
    }

    async fn user_for_identity(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
        new_id: &UserId,
    ) -> Result<User, StoreError> {
        users::user_for_identity(&self.pool, issuer, subject, email, new_id).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        users::user(&self.pool, id).await
    }

    async fn spaces_of(&self, user: &UserId) -> Result<Vec<SpaceInfo>, StoreError> {
        users::spaces_of(&self.pool, user).await
    }

    async fn create_space(
        &self,
        id: &SpaceId,
        name: &str,
        owner: &UserId,
    ) -> Result<(), StoreError> {
        users::create_space(&self.pool, id, name, owner).await
    }

    async fn spaces_created_by(&self, user: &UserId) -> Result<u64, StoreError> {
        users::spaces_created_by(&self.pool, user).await
    }

    async fn role(&self, space: &SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
        users::role(&self.pool, space, user).await
    }

    async fn members(&self, space: &SpaceId) -> Result<Vec<Member>, StoreError> {
        users::members(&self.pool, space).await
    }

    async fn set_member(
        &self,
        space: &SpaceId,
        user: &UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        users::set_member(&self.pool, space, user, Some(role)).await
    }

    async fn remove_member(&self, space: &SpaceId, user: &UserId) -> Result<(), StoreError> {
        users::set_member(&self.pool, space, user, None).await
    }

    async fn member_heads(
        &self,
        user: &UserId,
        spaces: &[SpaceId],
    ) -> Result<Vec<(SpaceId, u64)>, StoreError> {
        users::heads(&self.pool, spaces, Some(user)).await
    }

    async fn heads(&self, spaces: &[SpaceId]) -> Result<Vec<(SpaceId, u64)>, StoreError> {
        users::heads(&self.pool, spaces, None).await
    }

    fn feed(&self) -> Option<Arc<dyn Feed>> {
        Some(Arc::new(PgFeed::new(
            self.pool.clone(),
            self.channel.clone(),
        )))
    }

    async fn push(&self, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError> {
        records::push(&self.pool, &self.namespace, &self.keys, space, batch).await
    }

    async fn space_ids(
        &self,
        after: Option<&SpaceId>,
        limit: u32,
    ) -> Result<Vec<SpaceId>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM spaces WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.map(SpaceId::as_str).unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        ids.into_iter()
            .map(|id| SpaceId::new(id).map_err(|e| crate::store::stored::corrupt("space id", e)))
            .collect()
    }

    async fn app_schema(&self) -> Result<(u64, Option<String>), StoreError> {
        app_schema::newest(&self.pool).await
    }

    async fn apply_app_schema(&self, json: &str, expected: u64) -> Result<u64, StoreError> {
        app_schema::apply(&self.pool, &self.namespace, json, expected).await
    }

    async fn app_schema_version_of(&self, json: &str) -> Result<Option<u64>, StoreError> {
        app_schema::version_of(&self.pool, json).await
    }

    async fn drain_captured(
        &self,
        schema: Arc<AppSchema>,
        clock: &Arc<crate::clock::ServerClock>,
        node: &ClientId,
    ) -> Result<Option<Drained>, StoreError> {
        capture::drain(&self.pool, &self.namespace, &self.keys, schema, clock, node).await
    }

    async fn fill_mirror(
        &self,
        schema: &ferry_core::schema::Schema,
        collection: &Collection,
    ) -> Result<(u64, Vec<String>), StoreError> {
        adopt::fill(&self.pool, &self.namespace, schema, collection).await
    }

    async fn queue_adoption(
        &self,
        schema: &ferry_core::schema::Schema,
        collection: &Collection,
        after: Option<&(String, String)>,
        limit: i64,
    ) -> Result<Option<((String, String), u64)>, StoreError> {
        adopt::queue(
            &self.pool,
            &self.namespace,
            schema,
            collection,
            after,
            limit,
        )
        .await
    }

    async fn adoption_left(&self, collection: &Collection) -> Result<(u64, u64), StoreError> {
        adopt::left(&self.pool, collection).await
    }

    async fn pull(&self, space: &SpaceId, query: PullQuery) -> Result<PullPage, StoreError> {
        records::pull(&self.pool, space, &query).await
    }

    async fn record(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
    ) -> Result<Option<RecordRow>, StoreError> {
        records::record(&self.pool, space, collection, id).await
    }

    async fn compact_with(
        &self,
        cutoff_ms: u64,
        reports_cutoff_ms: u64,
    ) -> Result<CompactReport, StoreError> {
        compact::compact(&self.pool, cutoff_ms, reports_cutoff_ms).await
    }

    async fn create_login_token(
        &self,
        hash: &str,
        email: &str,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        tokens::create_login(&self.pool, hash, email, expires_at_ms).await
    }

    async fn redeem_login_token(
        &self,
        hash: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        tokens::redeem_login(&self.pool, hash, now_ms).await
    }

    async fn create_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError> {
        tokens::create_refresh(&self.pool, token).await
    }

    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next_hash: &str,
        next_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        tokens::rotate_refresh(&self.pool, hash, next_hash, next_expires_at_ms, now_ms).await
    }

    async fn revoke_refresh_family(&self, hash: &str, now_ms: u64) -> Result<(), StoreError> {
        tokens::revoke_family(&self.pool, hash, now_ms).await
    }

    async fn create_api_token(
        &self,
        token: &ApiToken,
        hash: &str,
        max_live: u64,
    ) -> Result<bool, StoreError> {
        api_tokens::create(&self.pool, token, hash, max_live).await
    }

    async fn api_tokens(&self, user: &UserId) -> Result<Vec<ApiToken>, StoreError> {
        api_tokens::list(&self.pool, user.as_str()).await
    }

    async fn revoke_api_token(
        &self,
        user: &UserId,
        id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        api_tokens::revoke(&self.pool, user.as_str(), id, now_ms).await
    }

    async fn use_api_token(&self, hash: &str, now_ms: u64) -> Result<Option<ApiToken>, StoreError> {
        api_tokens::use_token(&self.pool, hash, now_ms).await
    }

    async fn list_records(
        &self,
        space: &SpaceId,
        collection: &Collection,
        after: Option<&RecordId>,
        limit: u32,
    ) -> Result<PageFill, StoreError> {
        records::list(&self.pool, space, collection, after, limit).await
    }

    async fn entitlements(&self, user: &UserId) -> Result<Vec<StoredEntitlement>, StoreError> {
        billing::entitlements(&self.pool, user).await
    }

    async fn subscription_owner(
        &self,
        provider: &str,
        subscription_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        billing::subscription_owner(&self.pool, provider, subscription_id).await
    }

    async fn user_by_customer(
        &self,
        provider: &str,
        customer_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        billing::user_by_customer(&self.pool, provider, customer_id).await
    }

    async fn apply_billing_event(&self, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
        billing::apply_event(&self.pool, event).await
    }

    async fn set_entitlement(
        &self,
        user: &UserId,
        entitlement: &StoredEntitlement,
    ) -> Result<(), StoreError> {
        billing::set_entitlement(&self.pool, user, entitlement).await
    }
}
