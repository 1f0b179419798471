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

/// Every table Ferry's migrations ever created, in any version: what moves
/// out of `public`. Nothing else there is touched (a test checks the list
/// against what the migrations create).
pub(crate) const TABLES: &[&str] = &[
    "ferry_schema",
    "signing_keys",
    "users",
    "spaces",
    "members",
    "records",
    "batches",
    "login_tokens",
    "refresh_tokens",
    "identities",
    "entitlements",
    "billing_events",
    "subscriptions",
    "conflicts",
    "replicas",
    "app_schemas",
];

/// A schema name Ferry can take: lower-case ASCII letters, digits and
/// `_`, starting with a letter or `_`, at most 63 bytes (PostgreSQL's
/// limit), so that it reads the same quoted or not.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "postgres_schema {name:?} is not a schema name Ferry can use: lower-case letters, \
             digits and _, starting with a letter or _, at most 63 bytes"
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

/// Creates `schema` if needed and, when Ferry's tables are still in
/// `public` and not yet in `schema`, moves them there. Runs under the
/// migration lock, in the migration's transaction: other nodes see the
/// tables in one place or the other, never half moved. `ALTER TABLE ...
/// SET SCHEMA` changes the catalog only (indexes, constraints and owned
/// sequences go along); no row is copied.
pub(super) async fn settle(
    tx: &mut Transaction<'_, Postgres>,
    schema: &str,
) -> Result<Vec<String>, StoreError> {
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", quoted(schema)))
        .execute(&mut **tx)
        .await?;
    if schema == "public" {
        return Ok(Vec::new());
    }
    let tables_in = |namespace: &str| {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname = ANY($2)
             ORDER BY c.relname",
        )
        .bind(namespace.to_owned())
        .bind(TABLES)
    };
    let here = tables_in(schema).fetch_all(&mut **tx).await?;
    if here.iter().any(|t| t == "ferry_schema") {
        return Ok(Vec::new());
    }
    let old = tables_in("public").fetch_all(&mut **tx).await?;
    // Only a deployment of Ferry's: its migration steps are recorded there.
    if !old.iter().any(|t| t == "ferry_schema") {
        return Ok(Vec::new());
    }
    for table in &old {
        sqlx::raw_sql(&format!(
            "ALTER TABLE public.{} SET SCHEMA {}",
            quoted(table),
            quoted(schema)
        ))
        .execute(&mut **tx)
        .await?;
    }
    Ok(old)
}
