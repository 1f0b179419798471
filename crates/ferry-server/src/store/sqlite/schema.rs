//! The SQLite schema, applied in numbered steps recorded in `user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    private_pkcs8 BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT UNIQUE,
    created_at INTEGER NOT NULL
);
-- `sid` is the compact key the other tables use; `id` is the public one.
CREATE TABLE spaces (
    sid        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    seq        INTEGER NOT NULL DEFAULT 0,
    horizon    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE members (
    sid     INTEGER NOT NULL REFERENCES spaces (sid),
    user_id TEXT NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (sid, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id);
-- `fields` is the JSON object of {name: {value, hlc}}; '{}' on a tombstone.
CREATE TABLE records (
    sid        INTEGER NOT NULL REFERENCES spaces (sid),
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    fields     TEXT NOT NULL,
    deleted    TEXT,
    UNIQUE (sid, collection, id)
);
CREATE INDEX records_by_seq ON records (sid, seq);
-- One row per applied batch: the answer to replay on a retry.
CREATE TABLE batches (
    sid        INTEGER NOT NULL REFERENCES spaces (sid),
    client_id  TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    applied    INTEGER NOT NULL,
    conflicts  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sid, client_id, batch_id)
) WITHOUT ROWID;
"#,
    // Server time of each record's last write, for tombstone compaction.
    r#"
ALTER TABLE records ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX records_tombstones ON records (updated_at) WHERE deleted IS NOT NULL;
CREATE INDEX batches_by_age ON batches (created_at);
"#,
    // Sign-in: magic link tokens and refresh tokens, stored as hashes.
    r#"
CREATE TABLE login_tokens (
    hash       TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
"#,
    // Users of external identity providers: each (issuer, subject) is one user.
    r#"
CREATE TABLE identities (
    issuer  TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (issuer, subject)
) WITHOUT ROWID;
"#,
    // Billing: each user's entitlement, and the events already applied.
    r#"
CREATE TABLE entitlements (
    user_id     TEXT PRIMARY KEY REFERENCES users (id),
    plan        TEXT NOT NULL,
    status      TEXT NOT NULL,
    period_end  INTEGER,
    provider    TEXT NOT NULL,
    customer_id TEXT,
    stamp       INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX entitlements_by_customer ON entitlements (provider, customer_id);
CREATE TABLE billing_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
) WITHOUT ROWID;
"#,
    // Each subscription on its own (a user may hold several; access is
    // their union), and unmatched ones kept until a checkout links them.
    // Entitlements kept so far become one subscription each, renamed to
    // the first subscription id their customer reports.
    r#"
CREATE TABLE subscriptions (
    provider        TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    user_id         TEXT REFERENCES users (id),
    plan            TEXT NOT NULL,
    status          TEXT NOT NULL,
    period_end      INTEGER,
    customer_id     TEXT,
    stamp           INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (provider, subscription_id)
) WITHOUT ROWID;
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
CREATE TABLE batches_by_user (
    sid        INTEGER NOT NULL REFERENCES spaces (sid),
    client_id  TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    applied    INTEGER NOT NULL,
    conflicts  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sid, client_id, batch_id, user_id)
) WITHOUT ROWID;
INSERT INTO batches_by_user
    SELECT sid, client_id, batch_id, '', applied, conflicts, created_at FROM batches;
DROP TABLE batches;
ALTER TABLE batches_by_user RENAME TO batches;
CREATE INDEX batches_by_age ON batches (created_at);
"#,
];

/// Brings the schema up to date, in one transaction per step.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while this one waited.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now as usize > i {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
