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
    // An entitlement kept so far cannot be told which subscription it was:
    // it becomes a grant to the end of its paid period (45 days when it
    // named none), by which the provider's next event of the real
    // subscription (a renewal, found by its customer) has made its own.
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
           user_id, plan,
           CASE WHEN status IN ('active', 'trialing') THEN 'granted' ELSE status END,
           CASE WHEN status IN ('active', 'trialing')
                THEN coalesce(period_end, (extract(epoch FROM now()) * 1000)::bigint + 45 * 86400000::bigint)
                ELSE period_end END,
           customer_id, stamp, updated_at
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
-- Who created each space, for the creation quota.
ALTER TABLE spaces ADD COLUMN created_by text COLLATE "C";
CREATE INDEX spaces_by_creator ON spaces (created_by);
"#,
    // Conflict reports for replicas whose stored writes a concurrent write
    // replaced (see store::delivery): under the seq of that commit.
    r#"
CREATE TABLE conflicts (
    sid        bigint NOT NULL REFERENCES spaces (sid),
    client_id  text COLLATE "C" NOT NULL,
    user_id    text COLLATE "C",
    seq        bigint NOT NULL,
    collection text COLLATE "C" NOT NULL,
    conflict   text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX conflicts_by_client ON conflicts (sid, client_id, seq);
CREATE INDEX conflicts_by_age ON conflicts (created_at);
-- Each client id belongs to the first user who pushed under it: its
-- reports go to that user, and no one else may push under it. Client ids
-- used before are given to the user who last pushed under them.
CREATE TABLE replicas (
    client_id  text COLLATE "C" PRIMARY KEY,
    user_id    text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL
);
INSERT INTO replicas
    SELECT DISTINCT ON (client_id) client_id, user_id, created_at FROM batches
    WHERE user_id <> '' ORDER BY client_id, created_at DESC;
"#,
    // The app's schema of its collections (docs/schema.md): every version
    // applied, the newest in force.
    r#"
CREATE TABLE app_schemas (
    version    bigint PRIMARY KEY,
    body       text NOT NULL,
    applied_at bigint NOT NULL
);
"#,
    // Writes of the app's backend to mirrored tables (docs/tables.md),
    // queued by the capture trigger in the app's own transaction until a
    // node turns them into commits; those that break the schema are kept
    // aside with the reason.
    r#"
CREATE TABLE captured (
    id          bigserial PRIMARY KEY,
    collection  text NOT NULL,
    space       text,
    op          text NOT NULL,
    new_row     jsonb,
    old_row     jsonb,
    captured_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX captured_by_space ON captured (space, id);
CREATE TABLE capture_refused (
    id          bigint PRIMARY KEY,
    collection  text NOT NULL,
    space       text,
    op          text NOT NULL,
    new_row     jsonb,
    old_row     jsonb,
    captured_at timestamptz NOT NULL,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL
);
"#,
    // API tokens (docs/server-rules.md): only their hashes.
    r#"
CREATE TABLE api_tokens (
    id            text PRIMARY KEY,
    user_id       text COLLATE "C" NOT NULL REFERENCES users (id),
    name          text NOT NULL,
    hash          text NOT NULL UNIQUE,
    spaces        text,
    access        text NOT NULL CHECK (access IN ('read', 'write')),
    server_fields boolean NOT NULL DEFAULT false,
    created_at    bigint NOT NULL,
    expires_at    bigint,
    last_used_at  bigint,
    revoked_at    bigint
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
"#,
    // Who created each record (permissions: author-only rules) and who
    // last changed it (webhooks); NULL for records stored before.
    r#"
ALTER TABLE records ADD COLUMN author text COLLATE "C";
ALTER TABLE records ADD COLUMN writer text COLLATE "C";
"#,
    // Webhooks (docs/server-rules.md#webhooks): endpoints, a cursor per
    // endpoint and space, dead letters.
    r#"
CREATE TABLE webhook_endpoints (
    id          text COLLATE "C" PRIMARY KEY,
    url         text NOT NULL,
    secrets     text NOT NULL,
    spaces      text,
    collections text,
    created_at  bigint NOT NULL
);
CREATE TABLE webhook_cursors (
    endpoint        text COLLATE "C" NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    sid             bigint NOT NULL REFERENCES spaces (sid),
    seq             bigint NOT NULL,
    pending_to      bigint,
    attempts        integer NOT NULL DEFAULT 0,
    first_failed_at bigint,
    next_at         bigint NOT NULL DEFAULT 0,
    lease_node      text,
    lease_until     bigint NOT NULL DEFAULT 0,
    last_error      text,
    PRIMARY KEY (endpoint, sid)
);
CREATE TABLE webhook_dead (
    id        bigserial PRIMARY KEY,
    endpoint  text NOT NULL,
    space     text NOT NULL,
    delivery  text NOT NULL,
    payload   text NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at bigint NOT NULL,
    replay    boolean NOT NULL DEFAULT false
);
"#,
    // 13: the files each space holds (docs/files.md §3).
    r#"
CREATE TABLE files (
    sid                bigint NOT NULL REFERENCES spaces (sid),
    sha256             text NOT NULL,
    size               bigint NOT NULL,
    media_type         text NOT NULL,
    name               text,
    object             text NOT NULL,
    uploaded_by        text NOT NULL,
    created_at         bigint NOT NULL,
    unreferenced_since bigint,
    PRIMARY KEY (sid, sha256)
);
CREATE INDEX files_by_uploader ON files (uploaded_by);
"#,
];

/// An arbitrary constant naming Ferry's migration lock.
const MIGRATION_LOCK: i64 = 0x6665_7272_795f_6d69;

/// Brings the schema up to date, in one transaction.
pub async fn migrate(pool: &PgPool, namespace: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    let moved = super::namespace::settle(&mut tx, namespace, MIGRATIONS.len()).await?;
    if !moved.is_empty() {
        tracing::info!(
            tables = moved.len(),
            schema = namespace,
            "moved Ferry's tables out of public into their own schema"
        );
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS ferry_schema (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let current: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM ferry_schema")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0).max(0) as usize;
    if current == super::namespace::MOVED_MARK as usize {
        return Err(StoreError::Unavailable(format!(
            "Ferry's tables moved out of the schema {namespace} to a schema of their own \
             (see the comment on {namespace}.ferry_schema): start with that postgres_schema"
        )));
    }
    if current > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the tables in the schema {namespace} are at version {current}, newer than this \
             Ferry knows ({}): run the Ferry that made them, or a newer one",
            MIGRATIONS.len()
        )));
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sqlx::{Connection, Row};

    use super::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn entitlements_and_batches_of_before_survive_the_move() {
        let db = TestDatabase::create().await;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        // The schema as it was before subscriptions and batches per user.
        let before = 4;
        sqlx::raw_sql(
            "CREATE TABLE ferry_schema (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (i, step) in MIGRATIONS[..before].iter().enumerate() {
            sqlx::raw_sql(step).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO ferry_schema VALUES ($1, 0)")
                .bind((i + 1) as i32)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO users (id, email, created_at) VALUES ('u1', 'a@x', 0), ('u3', NULL, 0);
             INSERT INTO spaces (sid, id, name, created_at) VALUES (1, 'team', 'Team', 0);
             INSERT INTO entitlements VALUES
               ('u1', 'pro', 'trialing', NULL, 'stripe', 'cus_1', 10, 0),
               ('u3', 'pro', 'granted', 9000, 'admin', NULL, 30, 0);
             INSERT INTO batches VALUES (1, 'laptop', 'b-1', 2, '[]', 0);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let pool = PgPool::connect(&db.url).await.unwrap();
        migrate(&pool, "public").await.unwrap();
        let rows = sqlx::query(
            "SELECT subscription_id, status, period_end FROM subscriptions ORDER BY user_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let first: (String, String, Option<i64>) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!(
            (first.0.as_str(), first.1.as_str()),
            ("legacy:u1", "granted")
        );
        let now = crate::store::stored::now_ms();
        let end = first.2.unwrap();
        assert!(
            end > now + 44 * 86_400_000 && end < now + 46 * 86_400_000,
            "{end}"
        );
        assert_eq!(rows[1].get::<String, _>(0), "grant:u3");
        let batch = sqlx::query("SELECT batch_id, user_id, applied FROM batches")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            (
                batch.get::<String, _>(0),
                batch.get::<String, _>(1),
                batch.get::<i64, _>(2)
            ),
            ("b-1".to_owned(), String::new(), 2)
        );
        // The same ids from another user are another batch now.
        sqlx::query("INSERT INTO batches VALUES (1, 'laptop', 'b-1', 2, '[]', 0, 'u3')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    /// `MIGRATIONS[..step]` applied in the schema `name` of `db`.
    async fn deployment_at(db: &TestDatabase, name: &str, step: usize) {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS {name}; SET search_path = {name};
             CREATE TABLE ferry_schema (version integer PRIMARY KEY, applied_at bigint NOT NULL)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for (i, sql) in MIGRATIONS[..step].iter().enumerate() {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO ferry_schema VALUES ($1, 0)")
                .bind((i + 1) as i32)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }

    async fn tables_in(pool: &PgPool, name: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
        )
        .bind(name)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_move_knows_the_tables_of_every_step() {
        let db = TestDatabase::create().await;
        let pool = PgPool::connect(&db.url).await.unwrap();
        for step in 0..=MIGRATIONS.len() {
            let name = format!("step_{step}");
            deployment_at(&db, &name, step).await;
            let mut known: Vec<String> = crate::store::postgres::namespace::tables_at(step)
                .into_iter()
                .map(str::to_owned)
                .collect();
            known.sort();
            assert_eq!(tables_in(&pool, &name).await, known, "step {step}");
        }
        pool.close().await;
    }

    #[tokio::test]
    async fn an_earlier_deployment_in_public_moves_and_leaves_the_app_s_tables() {
        use crate::store::PgStore;
        let db = TestDatabase::create().await;
        // Ferry at step 4 (entitlements, no replicas yet) in public, and
        // tables of the app's named like Ferry's of later steps.
        deployment_at(&db, "public", 4).await;
        let pool = PgPool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO public.users (id, email, created_at) VALUES ('u1', 'a@x', 0);
             CREATE TABLE public.replicas (n int); INSERT INTO public.replicas VALUES (7);
             CREATE TABLE public.app_schemas (n int);",
        )
        .execute(&pool)
        .await
        .unwrap();
        // Another name than the default does not take it, and says how.
        let e = PgStore::connect_in(&db.url, "staging").await.unwrap_err();
        assert!(
            e.to_string()
                .contains("tables of an earlier version are in public"),
            "{e}"
        );
        let store = PgStore::connect(&db.url).await.unwrap();
        let users = || async {
            sqlx::query_scalar::<_, String>("SELECT email FROM ferry.users")
                .fetch_all(&pool)
                .await
                .unwrap()
        };
        assert_eq!(users().await, ["a@x"]);
        assert_eq!(
            tables_in(&pool, "public").await,
            ["app_schemas", "ferry_schema", "replicas"]
        );
        let n: i32 = sqlx::query_scalar("SELECT n FROM public.replicas")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 7);
        let mut expected: Vec<String> =
            crate::store::postgres::namespace::tables_at(MIGRATIONS.len())
                .into_iter()
                .map(str::to_owned)
                .collect();
        expected.sort();
        assert_eq!(tables_in(&pool, "ferry").await, expected);
        store.close().await;
        // A node that still looks in public (an earlier Ferry, or this one
        // told public) migrates nothing there and says where the tables went.
        let e = PgStore::connect_in(&db.url, "public").await.unwrap_err();
        assert!(
            e.to_string().contains("moved out of the schema public"),
            "{e}"
        );
        assert_eq!(
            tables_in(&pool, "public").await,
            ["app_schemas", "ferry_schema", "replicas"]
        );
        // Starting again finds everything where it was moved.
        let again = PgStore::connect(&db.url).await.unwrap();
        assert_eq!(users().await, ["a@x"]);
        again.close().await;
        pool.close().await;
    }
}
