//! The PostgreSQL schema, applied in numbered steps recorded in
//! `ferry_schema`, under an advisory lock so that nodes starting together
//! migrate once.

use sqlx::PgPool;

use crate::store::StoreError;
use crate::store::stored::now_ms;

/// Each entry moves the schema from version `i` to `i + 1`. Append only.
/// Ids use the "C" collation so that they order byte-wise, as in SQLite and
/// in the protocol's cursors.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE signing_keys (
    kid           text PRIMARY KEY,
    private_pkcs8 bytea NOT NULL,
    created_at    bigint NOT NULL
);
CREATE TABLE users (
    id         text COLLATE "C" PRIMARY KEY,
    email      text UNIQUE,
    created_at bigint NOT NULL
);
CREATE TABLE spaces (
    sid        bigserial PRIMARY KEY,
    id         text COLLATE "C" NOT NULL UNIQUE,
    name       text NOT NULL,
    seq        bigint NOT NULL DEFAULT 0,
    horizon    bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL
);
CREATE TABLE members (
    sid     bigint NOT NULL REFERENCES spaces (sid),
    user_id text COLLATE "C" NOT NULL REFERENCES users (id),
    role    text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (sid, user_id)
);
CREATE INDEX members_by_user ON members (user_id);
CREATE TABLE records (
    sid        bigint NOT NULL REFERENCES spaces (sid),
    collection text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    fields     text NOT NULL,
    deleted    text,
    updated_at bigint NOT NULL,
    PRIMARY KEY (sid, collection, id)
);
CREATE INDEX records_by_seq ON records (sid, seq);
CREATE INDEX records_tombstones ON records (updated_at) WHERE deleted IS NOT NULL;
CREATE TABLE batches (
    sid        bigint NOT NULL REFERENCES spaces (sid),
    client_id  text NOT NULL,
    batch_id   text NOT NULL,
    applied    bigint NOT NULL,
    conflicts  text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (sid, client_id, batch_id)
);
CREATE INDEX batches_by_age ON batches (created_at);
"#,
    // Sign-in: magic link tokens and refresh tokens, stored as hashes.
    r#"
CREATE TABLE login_tokens (
    hash       text PRIMARY KEY,
    email      text NOT NULL,
    expires_at bigint NOT NULL,
    used_at    bigint
);
CREATE TABLE refresh_tokens (
    hash       text PRIMARY KEY,
    family     text NOT NULL,
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id),
    expires_at bigint NOT NULL,
    used_at    bigint,
    revoked_at bigint
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
"#,
    // Users of external identity providers: each (issuer, subject) is one user.
    r#"
CREATE TABLE identities (
    issuer  text NOT NULL,
    subject text NOT NULL,
    user_id text COLLATE "C" NOT NULL REFERENCES users (id),
    PRIMARY KEY (issuer, subject)
);
"#,
    // Billing: each user's entitlement, and the events already applied.
    r#"
CREATE TABLE entitlements (
    user_id     text COLLATE "C" PRIMARY KEY REFERENCES users (id),
    plan        text NOT NULL,
    status      text NOT NULL,
    period_end  bigint,
    provider    text NOT NULL,
    customer_id text,
    stamp       bigint NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE INDEX entitlements_by_customer ON entitlements (provider, customer_id);
CREATE TABLE billing_events (
    provider    text NOT NULL,
    event_id    text NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    outcome     text NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (provider, event_id)
);
"#,
    // Each subscription on its own (a user may hold several; access is
    // their union), and unmatched ones kept until a checkout links them.
    // Entitlements kept so far become one subscription each, renamed to
    // the first subscription id their customer reports.
    r#"
CREATE TABLE subscriptions (
    provider        text NOT NULL,
    subscription_id text NOT NULL,
    user_id         text COLLATE "C" REFERENCES users (id),
    plan            text NOT NULL,
    status          text NOT NULL,
    period_end      bigint,
    customer_id     text,
    stamp           bigint NOT NULL,
    updated_at      bigint NOT NULL,
    PRIMARY KEY (provider, subscription_id)
);
CREATE INDEX subscriptions_by_user ON subscriptions (user_id);
CREATE INDEX subscriptions_by_customer ON subscriptions (provider, customer_id);
INSERT INTO subscriptions
    SELECT provider,
           CASE provider WHEN 'admin' THEN 'grant:' ELSE 'legacy:' END || user_id,
           user_id, plan, status, period_end, customer_id, stamp, updated_at
    FROM entitlements;
DROP TABLE entitlements;
"#,
    // A batch is its user's: the same (client, batch) id pushed by another
    // user is another batch, never a replay of this one. Batches stored
    // before carry no user ('') and answer a replay to anyone, as they did.
    r#"
ALTER TABLE batches ADD COLUMN user_id text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE batches DROP CONSTRAINT batches_pkey;
ALTER TABLE batches ADD PRIMARY KEY (sid, client_id, batch_id, user_id);
"#,
];

/// An arbitrary constant naming Ferry's migration lock.
const MIGRATION_LOCK: i64 = 0x6665_7272_795f_6d69;

/// Brings the schema up to date, in one transaction.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS ferry_schema (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let current: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM ferry_schema")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0).max(0) as usize;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(step).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO ferry_schema (version, applied_at) VALUES ($1, $2)")
            .bind((i + 1) as i32)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
