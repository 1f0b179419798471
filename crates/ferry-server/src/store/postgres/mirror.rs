//! Collections mirrored into tables of the app's own (docs/tables.md): the
//! tables made ready when a schema is applied (created, or checked column
//! by column, and given the capture trigger), in the apply's transaction,
//! and the rows written in each push's.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::schema::Schema;
use ferry_core::schema::table::Mirror;
use sqlx::{PgConnection, Row};

use crate::store::StoreError;

/// `"schema"."table"`: names [`ferry_core::schema::table::check_identifier`]
/// let through need no escaping, and are quoted so that none is a keyword.
pub fn table_name(mirror: &Mirror<'_>) -> String {
    format!("\"{}\".\"{}\"", mirror.table_schema, mirror.table)
}

/// The casts that make text a table's space and id (`::uuid` for a
/// `uuid` column; nothing for `text` and `varchar`), as the catalog gives
/// the columns' types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCasts {
    pub space: &'static str,
    pub id: &'static str,
}

impl KeyCasts {
    /// The cast of an array of ids.
    pub fn ids(&self) -> &'static str {
        if self.id.is_empty() { "" } else { "::uuid[]" }
    }

    /// From the key columns' types (`regtype` text).
    pub fn of(space: &str, id: &str) -> KeyCasts {
        let cast = |t: &str| if t == "uuid" { "::uuid" } else { "" };
        KeyCasts {
            space: cast(space),
            id: cast(id),
        }
    }
}

/// A query of `mirror`'s key column types, one row: the table's name, the
/// space column's type and the id column's (names Ferry accepts need no
/// escaping in a literal).
pub fn key_types_sql(mirror: &Mirror<'_>) -> String {
    let name = table_name(mirror);
    let of = |column: &str| {
        format!(
            "(SELECT atttypid::regtype::text FROM pg_attribute
              WHERE attrelid = '{name}'::regclass AND attname = '{column}')"
        )
    };
    format!(
        "SELECT '{name}'::text, {}, {}",
        of(mirror.space_column),
        of(mirror.id_column)
    )
}

/// The casts of `mirror`'s key columns, read from the catalog.
pub async fn key_casts(tx: &mut PgConnection, mirror: &Mirror<'_>) -> Result<KeyCasts, StoreError> {
    let row = sqlx::query(&key_types_sql(mirror))
        .fetch_one(&mut *tx)
        .await?;
    Ok(key_casts_of(&row)?.1)
}

/// A row of [`key_types_sql`]: the table's name and its casts.
pub fn key_casts_of(row: &sqlx::postgres::PgRow) -> Result<(String, KeyCasts), sqlx::Error> {
    use sqlx::Row;
    let (name, space, id): (String, Option<&str>, Option<&str>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok((
        name,
        KeyCasts::of(space.unwrap_or_default(), id.unwrap_or_default()),
    ))
}

pub(super) fn q(name: &str) -> String {
    format!("\"{name}\"")
}

/// The value of `ferry.origin` in Ferry's own transactions, which the
/// capture trigger of the deployment in `namespace` skips.
pub fn origin(namespace: &str) -> String {
    format!("ferry:{namespace}")
}

/// The name of the capture trigger a deployment puts on a table.
fn trigger(namespace: &str) -> String {
    format!("{namespace}_capture")
}

/// Which column types can hold a field's values, by the type Ferry would
/// create: the same type, or a wider one an app may already use.
fn accepts(wanted: &str, found: &str) -> bool {
    let also: &[&str] = match wanted {
        // A space or id column: text, or a uuid (ids written must be one).
        "key" => &["text", "character varying", "uuid"],
        "text" => &["character varying"],
        "bigint" => &["numeric"],
        "double precision" => &["numeric"],
        "jsonb" => &["json"],
        "text[]" => &["character varying[]"],
        "bigint[]" => &["numeric[]"],
        "double precision[]" => &["numeric[]"],
        _ => &[],
    };
    // Only unbounded types: a `varchar(n)` or `numeric(p, s)` column
    // would refuse values the schema allows, failing pushes.
    found == wanted || also.contains(&found)
}

/// A column of an existing table, as the catalog has it.
struct Found {
    sql_type: String,
    not_null: bool,
    /// It fills itself: a default, an identity or a generated column.
    fills: bool,
}

/// Makes every mirrored table of `schema` ready for the deployment in
/// `namespace`, inside the apply's transaction `tx`: creates a table that
/// does not exist, checks and completes one that does (a missing field's
/// column is added; anything Ferry cannot write is refused, naming the
/// column), and puts the capture trigger on it. Tables `before` mirrored
/// that `schema` no longer does lose their trigger.
pub async fn settle(
    tx: &mut PgConnection,
    namespace: &str,
    before: Option<&Schema>,
    schema: &Schema,
) -> Result<(), StoreError> {
    // Every statement is made first, as owned text: no borrow of the
    // schema is held across an await.
    let mut statements: Vec<Statement> = Vec::new();
    let tt = q(&format!("{}_truncate", trigger(namespace)));
    let kept: BTreeSet<String> = schema
        .collections
        .values()
        .filter_map(|c| c.mirror())
        .map(|m| table_name(&m))
        .collect();
    for old in before
        .iter()
        .flat_map(|b| b.collections.values())
        .filter_map(|c| c.mirror())
    {
        let name = table_name(&old);
        if !kept.contains(&name) {
            statements.push(Statement::IfTable(
                name.clone(),
                drop_triggers(namespace, &name),
            ));
        }
    }
    let mut tables = Vec::new();
    for (collection, mirror) in schema
        .collections
        .iter()
        .filter_map(|(name, c)| Some((name.as_str(), c.mirror()?)))
    {
        let columns: Vec<String> = [mirror.space_column, mirror.id_column]
            .into_iter()
            .chain([mirror.soft_delete_column])
            .chain(mirror.columns.iter().map(|c| c.column))
            .map(|c| format!("'{c}'"))
            .collect();
        let name = table_name(&mirror);
        let ns = q(namespace);
        tables.push(Table::of(collection, &mirror));
        // One trigger per event, each once per statement over the rows it
        // changed (a transition table): a bulk statement of the app's is
        // queued by one INSERT, not a function call per row. Ferry's own
        // writes are let by (`ferry.origin`).
        let mut sql = drop_triggers(namespace, &name);
        let when = format!(
            "WHEN (current_setting('ferry.origin', true) IS DISTINCT FROM '{}')",
            origin(namespace)
        );
        for (event, referencing) in [
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ] {
            let each = q(&format!(
                "{}_{}",
                trigger(namespace),
                event.to_ascii_lowercase()
            ));
            sql.push_str(&format!(
                "; CREATE TRIGGER {each} AFTER {event} ON {name}
                     REFERENCING {referencing} FOR EACH STATEMENT {when}
                     EXECUTE FUNCTION {ns}.capture_rows('{collection}', {columns})",
                columns = columns.join(", "),
            ));
        }
        sql.push_str(&format!(
            "; CREATE TRIGGER {tt} BEFORE TRUNCATE ON {name}
                 FOR EACH STATEMENT EXECUTE FUNCTION {ns}.refuse_truncate('{collection}')"
        ));
        statements.push(Statement::Always(sql));
    }
    if !tables.is_empty() {
        super::capture_functions::install(tx, namespace).await?;
    }
    for table in &tables {
        settle_table(tx, table).await?;
    }
    for statement in statements {
        let sql = match statement {
            Statement::Always(sql) => sql,
            Statement::IfTable(name, sql) => {
                let exists: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::bigint")
                    .bind(&name)
                    .fetch_one(&mut *tx)
                    .await?;
                if exists.is_none() {
                    continue;
                }
                sql
            }
        };
        run(tx, &sql).await?;
    }
    Ok(())
}

/// Drops every capture trigger a deployment may have put on the table
/// `name`: the statement-level ones, the row-level one earlier versions
/// made, and the one refusing `TRUNCATE`.
fn drop_triggers(namespace: &str, name: &str) -> String {
    let t = trigger(namespace);
    let mut names = vec![t.clone(), format!("{t}_truncate")];
    names.extend(["insert", "update", "delete"].map(|e| format!("{t}_{e}")));
    names
        .iter()
        .map(|n| format!("DROP TRIGGER IF EXISTS {} ON {name}", q(n)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A statement of [`settle`]'s.
enum Statement {
    /// Run it.
    Always(String),
    /// Run it if the table exists.
    IfTable(String, String),
}

/// What [`settle_table`] needs of a mirror, owned.
struct Table {
    collection: String,
    name: String,
    table_schema: String,
    space: String,
    id: String,
    deleted: String,
    updated: String,
    /// Each field's column, its type, and whether it may hold null.
    fields: Vec<(String, &'static str, bool)>,
}

impl Table {
    fn of(collection: &str, m: &Mirror<'_>) -> Table {
        Table {
            collection: collection.to_owned(),
            name: table_name(m),
            table_schema: m.table_schema.to_owned(),
            space: m.space_column.to_owned(),
            id: m.id_column.to_owned(),
            deleted: m.soft_delete_column.to_owned(),
            updated: m.updated_column.to_owned(),
            fields: m
                .columns
                .iter()
                .map(|c| {
                    let nullable = !c.declared.required || c.declared.nullable;
                    (c.column.to_owned(), c.sql_type, nullable)
                })
                .collect(),
        }
    }
}

/// Runs `sql`, one or more statements without parameters.
async fn run(tx: &mut PgConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::Executor::execute(tx, sql).await?;
    Ok(())
}

/// Creates the table, or checks and completes it.
async fn settle_table(tx: &mut PgConnection, t: &Table) -> Result<(), StoreError> {
    let name = &t.name;
    let refuse =
        |why: String| StoreError::Conflict(format!("{}: table {name}: {why}", t.collection));
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::bigint")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    let Some(oid) = oid else {
        let schema_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&t.table_schema)
                .fetch_one(&mut *tx)
                .await?;
        if !schema_exists {
            run(tx, &format!("CREATE SCHEMA {}", q(&t.table_schema))).await?;
        }
        let mut columns = vec![
            format!("{} text NOT NULL", q(&t.space)),
            format!("{} text NOT NULL", q(&t.id)),
        ];
        columns.extend(
            t.fields
                .iter()
                .map(|(column, sql_type, _)| format!("{} {sql_type}", q(column))),
        );
        columns.push(format!("{} timestamptz", q(&t.deleted)));
        columns.push(format!(
            "{} timestamptz NOT NULL DEFAULT now()",
            q(&t.updated)
        ));
        columns.push(format!("PRIMARY KEY ({}, {})", q(&t.space), q(&t.id)));
        run(tx, &format!("CREATE TABLE {name} ({})", columns.join(", "))).await?;
        return Ok(());
    };
    let rows = sqlx::query(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull,
                atthasdef OR attidentity <> '' OR attgenerated <> ''
         FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
    )
    .bind(oid)
    .fetch_all(&mut *tx)
    .await?;
    let mut found = BTreeMap::new();
    for row in rows {
        let column: String = row.try_get(0)?;
        found.insert(
            column,
            Found {
                sql_type: row.try_get(1)?,
                not_null: row.try_get(2)?,
                fills: row.try_get(3)?,
            },
        );
    }
    // (column, type, may Ferry add it, may it be NOT NULL)
    let mut wanted: Vec<(&str, &str, bool, bool)> = vec![
        (&t.space, "key", false, true),
        (&t.id, "key", false, true),
        (&t.deleted, "timestamptz", true, false),
        (&t.updated, "timestamptz", true, true),
    ];
    wanted.extend(
        t.fields
            .iter()
            .map(|(column, sql_type, nullable)| (column.as_str(), *sql_type, true, !nullable)),
    );
    for (column, sql_type, addable, _) in &wanted {
        let shown = match *sql_type {
            "timestamptz" => "timestamp with time zone",
            "key" => "text or uuid",
            other => other,
        };
        match found.get(*column) {
            None if *addable => {
                run(
                    tx,
                    &format!("ALTER TABLE {name} ADD COLUMN {} {sql_type}", q(column)),
                )
                .await?;
            }
            None => return Err(refuse(format!("it has no column {column}"))),
            Some(f) if !accepts(if *sql_type == "key" { "key" } else { shown }, &f.sql_type) => {
                return Err(refuse(format!(
                    "its column {column} is {}, which cannot hold what Ferry writes there ({shown})",
                    f.sql_type
                )));
            }
            Some(_) => {}
        }
    }
    for (column, f) in &found {
        if !f.not_null {
            continue;
        }
        match wanted.iter().find(|(c, ..)| c == column) {
            Some((_, _, _, true)) => {}
            Some(_) => {
                return Err(refuse(format!(
                    "its column {column} is NOT NULL, but Ferry writes null there (the field \
                     is not required, or a record may be deleted): drop NOT NULL"
                )));
            }
            None if !f.fills => {
                return Err(refuse(format!(
                    "its column {column} is NOT NULL without a default, and Ferry's inserts do \
                     not fill it: give it a default, or declare it as a field"
                )));
            }
            None => {}
        }
    }
    let unique: bool = sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM pg_index i
             WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL
               AND i.indexprs IS NULL AND i.indnatts = 2
               AND (SELECT array_agg(attname::text ORDER BY attname::text) FROM pg_attribute
                    WHERE attrelid = i.indrelid AND attnum = ANY (i.indkey))
                   = (SELECT array_agg(c ORDER BY c) FROM unnest($2::text[]) c))",
    )
    .bind(oid)
    .bind([t.space.as_str(), t.id.as_str()])
    .fetch_one(&mut *tx)
    .await?;
    if !unique {
        return Err(refuse(format!(
            "it has no unique index on exactly ({s}, {i}), which Ferry writes rows by: \
             CREATE UNIQUE INDEX ON {name} ({s}, {i})",
            s = t.space,
            i = t.id
        )));
    }
    Ok(())
}
