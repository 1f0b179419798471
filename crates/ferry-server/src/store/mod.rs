//! Storage: the [`Store`] trait every backend implements, and its types.
//!
//! The trait speaks the domain (spaces, members, batches, pages), not SQL.
//! Each backend enforces PROTOCOL.md's invariants itself: a batch, its `seq`
//! bumps and its idempotency record commit together or not at all; commits
//! in one space are serialized so `seq` order is commit order; tombstones
//! keep no field values. Merging happens in Rust with ferry-core, so every
//! backend behaves the same.

pub mod api_tokens;
pub mod batch;
pub mod billing;
pub mod captured;
pub mod delivery;
mod error;
pub mod feed;
pub mod files;
mod page;
mod postgres;
mod sqlite;
mod stored;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::protocol::{BatchId, Member, SpaceInfo};
use ferry_core::{Change, ClientId, Collection, Conflict, RecordId, Role, SpaceId, UserId};

pub use billing::{BillingEvent, EventOutcome, StoredEntitlement};
pub use error::StoreError;
pub use page::{MAX_PAGE_BYTES, PageFill, PullPage, PullQuery, RecordRow};
pub use postgres::namespace::DEFAULT_SCHEMA as DEFAULT_POSTGRES_SCHEMA;
pub use postgres::{MAX_CONNECTIONS as POSTGRES_MAX_CONNECTIONS, PgStore};
pub use sqlite::SqliteStore;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Ferry's id for the user.
    pub id: UserId,
    /// The email, when known.
    pub email: Option<String>,
}

/// A signing key of the server's own token issuer.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id, the JWT header's `kid`.
    pub kid: String,
    /// The Ed25519 private key as PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// When it was created (ms since the epoch); the newest signs.
    pub created_at_ms: u64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// A batch of changes to apply to one space.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The user who sent it: a batch id is the key of a retry only for the
    /// user who first sent it.
    pub user: UserId,
    /// The replica that sent it.
    pub client_id: ClientId,
    /// Its id; with the client id and space, the key of idempotent retry.
    /// `None` for writes that are not retried by id (REST writes).
    pub batch_id: Option<BatchId>,
    /// The client's cursor, when it sent one: checked in the same
    /// transaction, so a batch whose pull would answer `cursor_expired` is
    /// not applied either.
    pub cursor: Option<u64>,
    /// The changes, already validated.
    pub changes: Vec<Change>,
    /// The app's schema the node holds, which every change is checked
    /// against in the push's transaction (a newer one stored meanwhile
    /// fails the push with [`StoreError::SchemaChanged`], to be loaded and
    /// tried again). `None` only for tools and tests that write below the
    /// API.
    pub schema: Option<Arc<AppSchema>>,
    /// Who writes, for the schema's permissions (judged in the push's
    /// transaction, against the stored records and their authors). `None`
    /// for the server's own writes (the app's backend through a mirrored
    /// table), which no permission limits.
    pub actor: Option<ferry_core::schema::Actor>,
}

/// The app's schema of its collections (docs/schema.md) as a node holds
/// it: its version (0 when none was applied) and the schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppSchema {
    /// The version stored with it: 1, 2, ...; 0 for none.
    pub version: u64,
    /// The schema; `None` for version 0.
    pub schema: Option<ferry_core::schema::Schema>,
}

/// What one drain of captured writes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// The space whose writes were taken; `None` for writes naming no
    /// space id.
    pub space: Option<SpaceId>,
    /// How many queued writes were taken off the queue.
    pub taken: u64,
    /// How many of them were refused (kept in `capture_refused`).
    pub refused: u64,
    /// The commit of the rest, if anything was left to apply.
    pub outcome: Option<PushOutcome>,
}

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// How many changes altered stored state.
    pub applied: u64,
    /// The writes that lost.
    pub conflicts: Vec<Conflict>,
    /// How many reports were stored for the authors of writes the batch
    /// replaced unseen.
    pub reported: u64,
    /// The space's `seq` after the batch.
    pub head: u64,
    /// Whether this was a retry of a batch applied before (nothing was
    /// applied now; `applied` and `conflicts` are the first answer's).
    pub replayed: bool,
}

/// What compaction removed from one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceCompaction {
    /// The space.
    pub space: SpaceId,
    /// How many tombstones were deleted.
    pub tombstones: u64,
    /// The space's horizon afterwards: cursors below it (but 0) expire.
    pub horizon: u64,
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The spaces that lost tombstones.
    pub spaces: Vec<SpaceCompaction>,
    /// How many idempotency records of old batches were deleted.
    pub batches: u64,
    /// How many undelivered conflict reports of that age were deleted.
    pub conflicts: u64,
}

/// A refresh token as stored: only its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// The family: every token rotated from one sign-in shares it.
    pub family: String,
    /// Whose it is.
    pub user: UserId,
    /// When it stops working (ms since the epoch).
    pub expires_at_ms: u64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: it is used now, and its successor is stored.
    Rotated {
        /// Whose it is.
        user: UserId,
    },
    /// It had been used before: a sign of theft, so its whole family is
    /// revoked now.
    Reused,
    /// Its session was signed out (or revoked after a reuse) before it
    /// was ever used.
    Revoked,
    /// Unknown or expired.
    Invalid,
}

/// The database connections a node holds, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Open connections.
    pub connections: u32,
    /// Of those, the ones waiting for work.
    pub idle: u32,
    /// The most the node will open.
    pub max: u32,
    /// Transactions that committed pushes, since the node started (SQLite:
    /// one per group of pushes; 0 where the backend does not count them).
    pub push_commits: u64,
    /// The pushes those transactions committed: over `push_commits`, the
    /// mean size of a group.
    pub pushes_committed: u64,
}

/// Ferry's storage. Every method is one transaction.
#[async_trait]
pub trait Store: webhooks::WebhookStore + files::FileRows + Send + Sync + 'static {
    /// The node's connections to the database.
    fn pool_state(&self) -> PoolState;

    /// Whether the database answers.
    async fn health(&self) -> Result<(), StoreError>;

    /// The issuer's signing keys, newest first. When there are none yet,
    /// `candidate` is stored first, so that every node sharing the database
    /// ends up with the same key whichever starts first.
    async fn signing_keys(&self, candidate: StoredKey) -> Result<Vec<StoredKey>, StoreError>;

    /// Adds a signing key; being the newest, it signs from now on (key
    /// rotation). Older keys keep verifying the tokens they signed.
    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError>;

    /// The user with this id, created (with the personal space) if new.
    async fn ensure_user(&self, id: &UserId) -> Result<User, StoreError>;

    /// The user with this email (compared in lower case), created (with an
    /// id of `new_id` and the personal space) if new.
    async fn user_by_email(&self, email: &str, new_id: &UserId) -> Result<User, StoreError>;

    /// The user an external identity provider's `(issuer, subject)` maps to,
    /// created (with id `new_id` and the personal space) on first sight.
    /// `email` is recorded for a new user unless another user has it.
    async fn user_for_identity(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
        new_id: &UserId,
    ) -> Result<User, StoreError>;

    /// The user with this id, if any.
    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError>;

    /// The spaces `user` is a member of, with the role.
    async fn spaces_of(&self, user: &UserId) -> Result<Vec<SpaceInfo>, StoreError>;

    /// Creates a space owned by `owner`; `Conflict` if the id exists.
    async fn create_space(
        &self,
        id: &SpaceId,
        name: &str,
        owner: &UserId,
    ) -> Result<(), StoreError>;

    /// How many spaces `user` created (personal spaces, and spaces created
    /// before this was recorded, not counted): what their quota counts,
    /// whatever others made them owner of.
    async fn spaces_created_by(&self, user: &UserId) -> Result<u64, StoreError>;

    /// `user`'s role in `space`, `None` when not a member or no such space.
    async fn role(&self, space: &SpaceId, user: &UserId) -> Result<Option<Role>, StoreError>;

    /// The members of `space`.
    async fn members(&self, space: &SpaceId) -> Result<Vec<Member>, StoreError>;

    /// Adds `user` to `space` or changes their role. `NotFound` for an
    /// unknown user; `Conflict` when it would leave the space without owner.
    async fn set_member(
        &self,
        space: &SpaceId,
        user: &UserId,
        role: Role,
    ) -> Result<(), StoreError>;

    /// Removes `user` from `space`. `NotFound` when not a member; `Conflict`
    /// when it would leave the space without owner.
    async fn remove_member(&self, space: &SpaceId, user: &UserId) -> Result<(), StoreError>;

    /// The current `seq` of each of `spaces` that `user` is a member of (the
    /// others are left out): what a realtime subscription may follow, and
    /// where it starts.
    async fn member_heads(
        &self,
        user: &UserId,
        spaces: &[SpaceId],
    ) -> Result<Vec<(SpaceId, u64)>, StoreError>;

    /// The current `seq` of each of `spaces` that exists.
    async fn heads(&self, spaces: &[SpaceId]) -> Result<Vec<(SpaceId, u64)>, StoreError>;

    /// The ids of every space, in order, after `after`, at most `limit`:
    /// for tools that walk the whole database (`ferry schema check`).
    async fn space_ids(
        &self,
        after: Option<&SpaceId>,
        limit: u32,
    ) -> Result<Vec<SpaceId>, StoreError>;

    /// How this node hears about commits and membership changes made by
    /// other nodes sharing the database: `None` when no other node can share
    /// it (SQLite).
    fn feed(&self) -> Option<std::sync::Arc<dyn feed::Feed>> {
        None
    }

    /// Applies a batch to `space` in one transaction.
    async fn push(&self, space: &SpaceId, batch: Batch) -> Result<PushOutcome, StoreError>;

    /// The newest app schema stored: its version and JSON; `(0, None)`
    /// when none was applied.
    async fn app_schema(&self) -> Result<(u64, Option<String>), StoreError>;

    /// Stores `json` as the next version of the app schema if the newest
    /// is still `expected` (else [`StoreError::Conflict`]: someone applied
    /// another meanwhile). Returns the new version.
    async fn apply_app_schema(&self, json: &str, expected: u64) -> Result<u64, StoreError>;

    /// The newest version whose JSON is `json`, if one ever was (so that a
    /// schema superseded since is not applied again by mistake).
    async fn app_schema_version_of(&self, json: &str) -> Result<Option<u64>, StoreError>;

    /// How often a node looks for the app's queued writes to mirrored
    /// tables when it heard of none: PostgreSQL's trigger notifies, so
    /// only writes queued while no node listened wait for this; SQLite has
    /// no notification, so every write does.
    fn capture_poll(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    /// Applies the app's backend writes to mirrored tables queued for the
    /// space with the oldest one (docs/tables.md), checked against
    /// `schema` and stamped by `clock` as node `node`'s; `None` when none
    /// is queued.
    async fn drain_captured(
        &self,
        _schema: Arc<AppSchema>,
        _clock: &Arc<crate::clock::ServerClock>,
        _node: &ClientId,
    ) -> Result<Option<Drained>, StoreError> {
        Ok(None)
    }

    /// Gives `collection`'s table (mirrored by `schema`) the rows of the
    /// records it lacks, a space at a time under the space's lock; how many
    /// rows were written, and each record whose row the table refused, for
    /// a person (`ferry adopt`). Only PostgreSQL mirrors tables.
    async fn fill_mirror(
        &self,
        _schema: &ferry_core::schema::Schema,
        _collection: &Collection,
    ) -> Result<(u64, Vec<String>), StoreError> {
        Err(mirrors_need_postgres())
    }

    /// Queues, by key, up to `limit` rows of `collection`'s table after
    /// the key `after` (space, id) to be taken in as records by the
    /// capture drain, as each row is when applied (`ferry adopt`); the last
    /// key queued and how many, `None` when no row is left.
    async fn queue_adoption(
        &self,
        _schema: &ferry_core::schema::Schema,
        _collection: &Collection,
        _after: Option<&(String, String)>,
        _limit: i64,
    ) -> Result<Option<((String, String), u64)>, StoreError> {
        Err(mirrors_need_postgres())
    }

    /// How many rows of `collection` queued by [`Store::queue_adoption`]
    /// wait to be applied, and how many were ever refused.
    async fn adoption_left(&self, _collection: &Collection) -> Result<(u64, u64), StoreError> {
        Err(mirrors_need_postgres())
    }

    /// A page of the records of `space` changed after the query's cursor.
    async fn pull(&self, space: &SpaceId, query: PullQuery) -> Result<PullPage, StoreError>;

    /// One record, tombstones included.
    async fn record(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
    ) -> Result<Option<RecordRow>, StoreError>;

    /// Deletes the tombstones last written before `cutoff_ms` (server wall
    /// time), and the conflict reports stored before it, and raises each
    /// affected space's horizon to the highest `seq` it deleted, so that
    /// clients whose cursor is below it resync (PROTOCOL.md §4). Also deletes the idempotency records of batches older than the
    /// cutoff: a batch retried after that is merged again, where its writes
    /// already there change nothing (and its cursor, if older than the
    /// horizon, answers `cursor_expired` first).
    async fn compact(&self, cutoff_ms: u64) -> Result<CompactReport, StoreError> {
        self.compact_with(cutoff_ms, cutoff_ms).await
    }

    /// [`Store::compact`], with conflict reports stored before
    /// `reports_cutoff_ms` deleted (and the horizon raised over them)
    /// rather than those before `cutoff_ms`: reports kept longer than
    /// tombstones still reach a client that resyncs after its cursor
    /// expired.
    async fn compact_with(
        &self,
        cutoff_ms: u64,
        reports_cutoff_ms: u64,
    ) -> Result<CompactReport, StoreError>;

    /// Stores a sign-in (magic link) token, by its hash, for `email`.
    async fn create_login_token(
        &self,
        hash: &str,
        email: &str,
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Marks the sign-in token with this hash used and returns its email,
    /// if it exists, was unused and is unexpired at `now_ms`. Of concurrent
    /// redemptions of one token, exactly one gets the email.
    async fn redeem_login_token(
        &self,
        hash: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a refresh token (the first of a family, at sign-in).
    async fn create_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError>;

    /// Presents the refresh token with hash `hash` at `now_ms`: a current one
    /// is marked used and `next` (same family) stored; a used or revoked one
    /// revokes its whole family. One transaction.
    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next_hash: &str,
        next_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes the family of the refresh token with this hash (logout).
    async fn revoke_refresh_family(&self, hash: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Stores a new API token by its hash, unless its owner already holds
    /// `max_live` live ones (then `false`, nothing stored). One
    /// transaction: concurrent creations cannot pass the limit together.
    async fn create_api_token(
        &self,
        token: &api_tokens::ApiToken,
        hash: &str,
        max_live: u64,
    ) -> Result<bool, StoreError>;

    /// The user's API tokens that are not revoked, newest first.
    async fn api_tokens(&self, user: &UserId) -> Result<Vec<api_tokens::ApiToken>, StoreError>;

    /// Revokes the user's token `id`; `false` when they hold no such
    /// unrevoked token.
    async fn revoke_api_token(
        &self,
        user: &UserId,
        id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The token with this hash, if it is neither revoked nor expired at
    /// `now_ms`; its last use is recorded (at most once a minute).
    async fn use_api_token(
        &self,
        hash: &str,
        now_ms: u64,
    ) -> Result<Option<api_tokens::ApiToken>, StoreError>;

    /// Live records of one collection ordered by id, after `after`: a page
    /// of at most `limit` records and about [`MAX_PAGE_BYTES`], and
    /// whether more follow.
    async fn list_records(
        &self,
        space: &SpaceId,
        collection: &Collection,
        after: Option<&RecordId>,
        limit: u32,
    ) -> Result<PageFill, StoreError>;

    /// The user's subscriptions (and grants), oldest state first; what
    /// they may do is the union of these.
    async fn entitlements(&self, user: &UserId) -> Result<Vec<StoredEntitlement>, StoreError>;

    /// A user one of whose subscriptions carries this provider's customer
    /// id.
    async fn user_by_customer(
        &self,
        provider: &str,
        customer_id: &str,
    ) -> Result<Option<UserId>, StoreError>;

    /// The user this provider's subscription is linked to, if any.
    async fn subscription_owner(
        &self,
        provider: &str,
        subscription_id: &str,
    ) -> Result<Option<UserId>, StoreError>;

    /// Applies a billing event to its subscription, in one transaction with
    /// the record of its id: a duplicate changes nothing, and an event
    /// older than the stored state changes no state
    /// ([`BillingEvent::over`]). A subscription linked to a user stays
    /// linked to that user. `NotFound` when the event names a user who
    /// does not exist.
    async fn apply_billing_event(&self, event: &BillingEvent) -> Result<EventOutcome, StoreError>;

    /// Sets one of the user's subscriptions outright, by its provider and
    /// subscription id (support staff's grant).
    async fn set_entitlement(
        &self,
        user: &UserId,
        entitlement: &StoredEntitlement,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests;

fn mirrors_need_postgres() -> StoreError {
    StoreError::Conflict(
        "adopting the rows of an app's table needs PostgreSQL (--database-url postgres://...); \
         in Ferry's SQLite file a mirrored table is Ferry's own, and `ferry schema apply` \
         fills it with the records held"
            .to_owned(),
    )
}
