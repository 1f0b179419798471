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
    // An entitlement kept so far cannot be told which subscription it was:
    // it becomes a grant to the end of its paid period (45 days when it
    // named none), by which the provider's next event of the real
    // subscription (a renewal, found by its customer) has made its own.
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
           user_id, plan,
           CASE WHEN status IN ('active', 'trialing') THEN 'granted' ELSE status END,
           CASE WHEN status IN ('active', 'trialing')
                THEN coalesce(period_end, CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 45 * 86400000)
                ELSE period_end END,
           customer_id, stamp, updated_at
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
-- Who created each space, for the creation quota.
ALTER TABLE spaces ADD COLUMN created_by TEXT;
CREATE INDEX spaces_by_creator ON spaces (created_by);
"#,
    // Conflict reports for replicas whose stored writes a concurrent write
    // replaced (see store::delivery): under the seq of that commit.
    r#"
CREATE TABLE conflicts (
    sid        INTEGER NOT NULL REFERENCES spaces (sid),
    client_id  TEXT NOT NULL,
    user_id    TEXT,
    seq        INTEGER NOT NULL,
    collection TEXT NOT NULL,
    conflict   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX conflicts_by_client ON conflicts (sid, client_id, seq);
CREATE INDEX conflicts_by_age ON conflicts (created_at);
-- Each client id belongs to the first user who pushed under it: its
-- reports go to that user, and no one else may push under it. Client ids
-- used before are given to the user who last pushed under them.
CREATE TABLE replicas (
    client_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO replicas
    SELECT client_id, user_id, max(created_at) FROM batches WHERE user_id <> ''
    GROUP BY client_id;
"#,
    // The app's schema of its collections (docs/schema.md): every version
    // applied, the newest in force.
    r#"
CREATE TABLE app_schemas (
    version    INTEGER PRIMARY KEY,
    body       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
"#,
    // The tables Ferry made for mirrored collections (docs/tables.md), with
    // the collection each holds: no other object of the file is taken for
    // one.
    r#"
CREATE TABLE mirrored_tables (
    name       TEXT PRIMARY KEY,
    collection TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // Writes of other processes to mirrored tables, queued by each table's
    // triggers for a node to apply, and the ones Ferry refused, with why
    // (docs/tables.md). `ferry_writing` holds a row only inside Ferry's
    // own writes to the tables (never committed): the triggers let those by.
    r#"
CREATE TABLE captured (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    collection  TEXT NOT NULL,
    space       TEXT,
    op          TEXT NOT NULL,
    new_row     TEXT,
    old_row     TEXT,
    captured_at INTEGER NOT NULL
);
CREATE INDEX captured_by_space ON captured (space, id);
CREATE TABLE capture_refused (
    id          INTEGER PRIMARY KEY,
    collection  TEXT NOT NULL,
    space       TEXT,
    op          TEXT NOT NULL,
    new_row     TEXT,
    old_row     TEXT,
    captured_at INTEGER NOT NULL,
    reason      TEXT NOT NULL
);
CREATE TABLE ferry_writing (busy INTEGER);
"#,
    // API tokens (docs/server-rules.md): only their hashes.
    r#"
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    spaces        TEXT,
    access        TEXT NOT NULL CHECK (access IN ('read', 'write')),
    server_fields INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
"#,
    // Who created each record (permissions: author-only rules) and who
    // last changed it (webhooks); NULL for records stored before.
    r#"
ALTER TABLE records ADD COLUMN author TEXT;
ALTER TABLE records ADD COLUMN writer TEXT;
"#,
    // Webhooks (docs/server-rules.md#webhooks): endpoints, a cursor per
    // endpoint and space, dead letters.
    r#"
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    secrets     TEXT NOT NULL,
    spaces      TEXT,
    collections TEXT,
    created_at  INTEGER NOT NULL
);
CREATE TABLE webhook_cursors (
    endpoint        TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    sid             INTEGER NOT NULL REFERENCES spaces (sid),
    seq             INTEGER NOT NULL,
    pending_to      INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_failed_at INTEGER,
    next_at         INTEGER NOT NULL DEFAULT 0,
    lease_node      TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (endpoint, sid)
) WITHOUT ROWID;
CREATE TABLE webhook_dead (
    id        INTEGER PRIMARY KEY,
    endpoint  TEXT NOT NULL,
    space     TEXT NOT NULL,
    delivery  TEXT NOT NULL,
    payload   TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    replay    INTEGER NOT NULL DEFAULT 0
);
"#,
    // 13: the files each space holds (docs/files.md §3).
    r#"
CREATE TABLE files (
    sid                INTEGER NOT NULL REFERENCES spaces (sid),
    sha256             TEXT NOT NULL,
    size               INTEGER NOT NULL,
    media_type         TEXT NOT NULL,
    name               TEXT,
    object             TEXT NOT NULL,
    uploaded_by        TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    unreferenced_since INTEGER,
    PRIMARY KEY (sid, sha256)
) WITHOUT ROWID;
CREATE INDEX files_by_uploader ON files (uploaded_by);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entitlements_and_batches_of_before_survive_the_move() {
        let mut conn = Connection::open_in_memory().unwrap();
        // The schema as it was before subscriptions and batches per user.
        // The steps before it (later steps are added after these).
        let before = 5;
        for step in &MIGRATIONS[..before] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, email, created_at) VALUES ('u1', 'a@x', 0), ('u2', 'b@x', 0), ('u3', NULL, 0);
             INSERT INTO spaces (sid, id, name, created_at) VALUES (1, 'team', 'Team', 0);
             INSERT INTO entitlements VALUES
               ('u1', 'pro', 'active', NULL, 'stripe', 'cus_1', 10, 0),
               ('u2', 'pro', 'canceled', 5000, 'lemonsqueezy', '42', 20, 0),
               ('u3', 'pro', 'granted', 9000, 'admin', NULL, 30, 0);
             INSERT INTO batches VALUES (1, 'laptop', 'b-1', 2, '[]', 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, String, String, String, Option<i64>)> = conn
            .prepare("SELECT provider, subscription_id, user_id, status, period_end FROM subscriptions ORDER BY user_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // An active entitlement keeps granting for a while, no longer for
        // good; the others are as they were.
        assert_eq!(
            (rows[0].1.as_str(), rows[0].3.as_str()),
            ("legacy:u1", "granted")
        );
        let now = crate::store::stored::now_ms();
        let end = rows[0].4.unwrap();
        assert!(
            end > now + 44 * 86_400_000 && end < now + 46 * 86_400_000,
            "{end}"
        );
        assert_eq!(
            rows[1],
            (
                "lemonsqueezy".into(),
                "legacy:u2".into(),
                "u2".into(),
                "canceled".into(),
                Some(5000)
            )
        );
        assert_eq!(
            rows[2],
            (
                "admin".into(),
                "grant:u3".into(),
                "u3".into(),
                "granted".into(),
                Some(9000)
            )
        );
        let batch: (String, String, String, i64) = conn
            .query_row(
                "SELECT client_id, batch_id, user_id, applied FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(batch, ("laptop".into(), "b-1".into(), String::new(), 2));
    }
}
