//! The PostgreSQL schema (namespace) Ferry keeps its own tables in
//! (docs/tables.md): `ferry` by default, so that an app sharing the
//! database keeps every name of `public` (its own `users`, say). Every
//! connection of Ferry's searches that schema alone; a deployment whose
//! tables are still in `public` (Ferry before it had a schema of its own)
//! is moved there once, in one transaction, by the first node that starts.

use sqlx::{Postgres, Transaction};

use crate::store::StoreError;

/// The schema Ferry keeps its tables in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "ferry";

/// Every table Ferry's migrations ever created: its name, the migration
/// step that created it and the one that dropped it, if any. Only the
/// tables a deployment has at its recorded step move out of `public`:
/// nothing else there is touched (a test checks this list against what
/// the migrations create, step by step).
pub(crate) const TABLES: &[(&str, usize, Option<usize>)] = &[
    ("ferry_schema", 0, None),
    ("signing_keys", 1, None),
    ("users", 1, None),
    ("spaces", 1, None),
    ("members", 1, None),
    ("records", 1, None),
    ("batches", 1, None),
    ("login_tokens", 2, None),
    ("refresh_tokens", 2, None),
    ("identities", 3, None),
    ("entitlements", 4, Some(5)),
    ("billing_events", 4, None),
    ("subscriptions", 5, None),
    ("conflicts", 7, None),
    ("replicas", 7, None),
    ("app_schemas", 8, None),
    ("captured", 9, None),
    ("capture_refused", 9, None),
    ("api_tokens", 10, None),
    ("webhook_endpoints", 12, None),
    ("webhook_cursors", 12, None),
    ("webhook_dead", 12, None),
    ("files", 13, None),
];

/// The tables of a deployment at migration step `step`, in the order a push
/// locks them (`spaces` first), then the rest.
pub(crate) fn tables_at(step: usize) -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = TABLES
        .iter()
        .filter(|(_, created, dropped)| *created <= step && dropped.is_none_or(|d| d > step))
        .map(|(name, _, _)| *name)
        .collect();
    tables.sort_by_key(|t| *t != "spaces");
    tables
}

/// The version a node of an earlier Ferry finds in `public.ferry_schema`
/// once the tables moved: above every migration step, so it migrates
/// nothing, finds no table and answers 503, instead of building an empty
/// deployment beside the moved one.
pub(crate) const MOVED_MARK: i32 = 1_000_000;

/// A schema name Ferry can take: lower-case ASCII letters, digits and
/// `_`, starting with a letter or `_`, at most 50 bytes (so that its
/// realtime channel fits PostgreSQL's 63), reading the same quoted or not.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    // 50: the channel `ferry_events_<name>` must fit PostgreSQL's 63.
    if first_ok && rest_ok && name.len() <= 50 {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "postgres_schema {name:?} is not a schema name Ferry can use: lower-case letters, \
             digits and _, starting with a letter or _, at most 50 bytes"
        )))
    }
}

/// `name` quoted as an identifier (checked by [`check_name`]: nothing to
/// escape; quoted so that a keyword such as `user` works too).
pub fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// The `LISTEN/NOTIFY` channel of the nodes keeping their tables in
/// `schema`: deployments in two schemas of one database never hear each
/// other.
pub fn channel(schema: &str) -> String {
    if schema == DEFAULT_SCHEMA {
        "ferry_events".to_owned()
    } else {
        format!("ferry_events_{schema}")
    }
}

/// Creates `schema` if needed and, when Ferry's tables of an earlier
/// version are in `public` and `schema` is the default, moves them there.
/// Runs under the migration lock, in the migration's transaction: other
/// nodes see the tables in one place or the other, never half moved.
/// `ALTER TABLE ... SET SCHEMA` changes the catalog only (indexes,
/// constraints and owned sequences go along); no row is copied. Returns
/// the tables moved.
pub(super) async fn settle(
    tx: &mut Transaction<'_, Postgres>,
    schema: &str,
    steps: usize,
) -> Result<Vec<String>, StoreError> {
    // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` would need
    // the right to create schemas even when a DBA made this one already.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
    )
    .bind(schema)
    .fetch_one(&mut **tx)
    .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE SCHEMA {}", quoted(schema)))
            .execute(&mut **tx)
            .await?;
    }
    if deployment_step(tx, schema).await?.is_some() {
        return Ok(Vec::new());
    }
    // Where an earlier Ferry may have put its tables: `public`, or the
    // schema named after the role (first in PostgreSQL's default path).
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut **tx)
        .await?;
    if role != schema
        && let Some(step) = deployment_step(tx, &role).await?
        && step <= steps
    {
        return Err(StoreError::Unavailable(format!(
            "Ferry's tables of an earlier version are in the schema {role:?} (the role's own): \
             start with --postgres-schema {role} to keep them there"
        )));
    }
    if schema == "public" {
        return Ok(Vec::new());
    }
    let Some(step) = deployment_step(tx, "public").await?.filter(|s| *s <= steps) else {
        return Ok(Vec::new());
    };
    if schema != DEFAULT_SCHEMA {
        return Err(StoreError::Unavailable(format!(
            "Ferry's tables of an earlier version are in public: start once with the default \
             postgres_schema (ferry) to move them there, or with --postgres-schema public to \
             keep them where they are (not moved into {schema}, which may be another deployment)"
        )));
    }
    let tables = tables_at(step);
    // Every table at once, spaces first as a push takes them: a push in
    // flight finishes first, later ones wait for the move.
    let listed: Vec<String> = tables
        .iter()
        .map(|t| format!("public.{}", quoted(t)))
        .collect();
    sqlx::raw_sql(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        listed.join(", ")
    ))
    .execute(&mut **tx)
    .await?;
    for table in &tables {
        sqlx::raw_sql(&format!(
            "ALTER TABLE public.{} SET SCHEMA {}",
            quoted(table),
            quoted(schema)
        ))
        .execute(&mut **tx)
        .await?;
    }
    // A node of the earlier version starting now finds this and migrates
    // nothing, instead of building an empty deployment in public.
    sqlx::raw_sql(&format!(
        "CREATE TABLE public.ferry_schema (version integer PRIMARY KEY, applied_at bigint NOT NULL);
         INSERT INTO public.ferry_schema VALUES ({MOVED_MARK}, 0);
         COMMENT ON TABLE public.ferry_schema IS
           'Ferry moved its tables to the schema {schema}; this row keeps nodes of an earlier version from starting here'"
    ))
    .execute(&mut **tx)
    .await?;
    Ok(tables.iter().map(|t| (*t).to_owned()).collect())
}

/// The migration step of the deployment in `namespace`, if one is there.
async fn deployment_step(
    tx: &mut Transaction<'_, Postgres>,
    namespace: &str,
) -> Result<Option<usize>, StoreError> {
    let table = format!("{}.ferry_schema", quoted(namespace));
    let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(&mut **tx)
        .await?;
    if !there {
        return Ok(None);
    }
    let step: Option<i32> = sqlx::query_scalar(&format!("SELECT max(version) FROM {table}"))
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(step.unwrap_or(0).max(0) as usize))
}
