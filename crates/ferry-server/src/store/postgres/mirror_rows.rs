//! The rows of mirrored collections written in each push's transaction
//! (docs/tables.md), and a row the app's own table refuses (a `CHECK`, a
//! foreign key, a unique index, a trigger of the app's)
//! turned into the change's refusal, never a server error.

use std::collections::BTreeMap;

use ferry_core::schema::table::Mirror;
use ferry_core::schema::{Rule, Schema, Violation};
use ferry_core::{Collection, RecordId, RecordState};
use sqlx::postgres::PgDatabaseError;
use sqlx::{PgConnection, Row};

use super::mirror::{KeyCasts, key_casts_of, key_types_sql, origin, q, table_name};
use super::mirror_cells::Cells;
use crate::store::StoreError;
use crate::store::batch::RowOut;
use crate::store::stored::corrupt;

/// The casts of each mirrored table's key columns, by table and the
/// schema version they were read at: read from the catalog once per table
/// and version, not in every push.
#[derive(Debug, Default)]
pub struct KeyCache(std::sync::Mutex<BTreeMap<String, (u64, KeyCasts)>>);

impl KeyCache {
    fn get(&self, table: &str, version: u64) -> Option<KeyCasts> {
        let held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.get(table)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| *c)
    }

    fn put(&self, table: String, version: u64, casts: KeyCasts) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.insert(table, (version, casts));
    }
}

/// A record a push wrote, as merged.
pub struct Written<'a> {
    pub collection: &'a str,
    pub id: &'a str,
    pub state: RecordState,
}

impl<'a> Written<'a> {
    /// The records of stored rows, their fields parsed.
    pub fn parsed(rows: &'a [RowOut]) -> Result<Vec<Written<'a>>, StoreError> {
        rows.iter()
            .map(|row| {
                Ok(Written {
                    collection: &row.collection,
                    id: &row.id,
                    state: RecordState {
                        fields: serde_json::from_str(&row.fields)
                            .map_err(|e| corrupt("fields", e))?,
                        deleted: row
                            .deleted
                            .as_deref()
                            .map(str::parse)
                            .transpose()
                            .map_err(|e| corrupt("hlc", e))?,
                    },
                })
            })
            .collect()
    }
}

/// What to write to one table.
#[derive(Clone)]
struct Writes<'a> {
    collection: &'a str,
    mirror: Mirror<'a>,
    /// The live records, with their ids.
    live: Vec<(String, RecordState)>,
    /// The ids of deleted records, with when each was deleted.
    deleted: Vec<(String, String)>,
    /// How text becomes the table's key.
    casts: KeyCasts,
}

impl Writes<'_> {
    fn ids(&self) -> impl Iterator<Item = &str> {
        let live = self.live.iter().map(|(id, _)| id.as_str());
        live.chain(self.deleted.iter().map(|(id, _)| id.as_str()))
    }

    /// These writes with only record `id`'s.
    fn only(&self, id: &str) -> Self {
        Writes {
            live: self.live.iter().filter(|(i, _)| i == id).cloned().collect(),
            deleted: self
                .deleted
                .iter()
                .filter(|(i, _)| i == id)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// Writes the rows of the records `rows` changed, for every collection of
/// `schema` mirrored into a table, in the push's transaction, marked as
/// Ferry's own (`ferry.origin`) so that the capture trigger lets them by:
/// per table, one upsert of the live records' rows and one update setting
/// the soft-delete column of the deleted ones (a row keeps its last
/// values; a record with no row gets none).
///
/// A row the table refuses for its data is the change's fault:
/// [`StoreError::Invalid`] with rule `column`, at the index `index_of`
/// gives the record (found by writing the rows again one at a time). Any
/// other failure (the table altered under a running node) is logged and
/// answered `503`.
pub async fn write(
    tx: &mut PgConnection,
    namespace: &str,
    space: &str,
    schema: &Schema,
    records: Vec<Written<'_>>,
    index_of: &(dyn Fn(&str, &str) -> usize + Sync),
    keys: Option<(&KeyCache, u64)>,
) -> Result<(), StoreError> {
    let mut by_table: BTreeMap<&str, Writes<'_>> = BTreeMap::new();
    for Written {
        collection,
        id,
        state,
    } in records
    {
        let Some(mirror) = schema.mirror_of(collection) else {
            continue;
        };
        let writes = by_table.entry(collection).or_insert_with(|| Writes {
            collection,
            mirror,
            live: Vec::new(),
            deleted: Vec::new(),
            casts: KeyCasts::default(),
        });
        if state.deleted.is_some() {
            let at = Mirror::deleted_at(&state).unwrap_or_default();
            writes.deleted.push((id.to_owned(), at));
        } else {
            writes.live.push((id.to_owned(), state));
        }
    }
    if by_table.is_empty() {
        return Ok(());
    }
    // Marked as Ferry's; and the app's own triggers on the table run with
    // the search path an app's connection has, behind Ferry's schema, and
    // with PostgreSQL's own choice of plans (Ferry's connections force
    // generic plans, made for Ferry's statements, not the app's). One
    // round trip (names Ferry accepts need no escaping in a literal).
    // With them, the types of each table's key columns (a uuid is cast).
    let ns = super::namespace::quoted(namespace);
    let mut sql = format!(
        "SELECT set_config('ferry.origin', '{origin}', true),
                set_config('search_path', '{ns}, \"$user\", public', true),
                set_config('plan_cache_mode', 'auto', true);
         SAVEPOINT ferry_mirror",
        origin = origin(namespace)
    );
    let mut casts: BTreeMap<String, KeyCasts> = BTreeMap::new();
    for writes in by_table.values() {
        let name = table_name(&writes.mirror);
        match keys.and_then(|(cache, version)| cache.get(&name, version)) {
            Some(known) => {
                casts.insert(name, known);
            }
            None => {
                sql.push_str(";\n");
                sql.push_str(&key_types_sql(&writes.mirror));
            }
        }
    }
    let rows = fetch(tx, &sql).await?;
    for row in rows.iter().filter(|r| r.columns().len() == 3) {
        let (name, read) = key_casts_of(row)?;
        if let Some((cache, version)) = keys {
            cache.put(name.clone(), version, read);
        }
        casts.insert(name, read);
    }
    for writes in by_table.values_mut() {
        writes.casts = casts
            .get(&table_name(&writes.mirror))
            .copied()
            .unwrap_or_default();
    }
    for writes in by_table.values() {
        let Err(e) = write_table(tx, space, writes).await else {
            continue;
        };
        if refused_for_its_data(&e).is_none() {
            return Err(failed(writes, &e));
        }
        // Which row: each again alone, from before the first.
        savepoint(tx, "ROLLBACK TO SAVEPOINT ferry_mirror").await?;
        for writes in by_table.values() {
            for id in writes.ids() {
                savepoint(tx, "SAVEPOINT ferry_row").await?;
                let Err(e) = write_table(tx, space, &writes.only(id)).await else {
                    continue;
                };
                let Some(db) = refused_for_its_data(&e) else {
                    return Err(failed(writes, &e));
                };
                let refused = refusal(writes, id, db, index_of(writes.collection, id));
                savepoint(tx, "ROLLBACK TO SAVEPOINT ferry_mirror").await?;
                return Err(refused);
            }
        }
        // Alone, every row went in: the rows refused each other (two
        // records given one value of a unique column); the last is named.
        let (writes, id) = by_table
            .values()
            .flat_map(|w| w.ids().map(move |id| (w, id)))
            .last()
            .ok_or_else(|| failed(writes, &e))?;
        let db = refused_for_its_data(&e).ok_or_else(|| failed(writes, &e))?;
        let refused = refusal(writes, id, db, index_of(writes.collection, id));
        savepoint(tx, "ROLLBACK TO SAVEPOINT ferry_mirror").await?;
        return Err(refused);
    }
    // The savepoint and the search path (Ferry's schema still first) last
    // until the commit: no round trip to release them.
    Ok(())
}

/// The rows of `sql`, statements without parameters, in one round trip.
async fn fetch(tx: &mut PgConnection, sql: &str) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    Ok(sqlx::Executor::fetch_all(tx, sql).await?)
}

async fn savepoint(tx: &mut PgConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(&mut *tx).await?;
    Ok(())
}

/// The database's error, when the table refused the row for its values
/// (data exceptions, integrity constraints, an exception raised by the
/// app's own trigger) rather than for its shape or the database's state.
fn refused_for_its_data(e: &sqlx::Error) -> Option<&PgDatabaseError> {
    let db = e
        .as_database_error()?
        .try_downcast_ref::<PgDatabaseError>()?;
    let code = db.code();
    // 54000: a value past a limit of the app's (an index entry too long).
    let refused = code.starts_with("22") || code.starts_with("23");
    (refused || code == "P0001" || code == "54000").then_some(db)
}

fn failed(writes: &Writes<'_>, e: &sqlx::Error) -> StoreError {
    let name = table_name(&writes.mirror);
    tracing::error!(table = %name, error = %e, "writing a mirrored table failed");
    StoreError::Unavailable(format!("writing the mirrored table {name}: {e}"))
}

fn refusal(writes: &Writes<'_>, id: &str, db: &PgDatabaseError, index: usize) -> StoreError {
    let name = table_name(&writes.mirror);
    tracing::info!(table = %name, id, error = %db.message(), "a mirrored table refused a row");
    let field = db.column().and_then(|column| {
        let found = writes.mirror.columns.iter().find(|c| c.column == column)?;
        Some(found.field.clone())
    });
    let (Ok(collection), Ok(id)) = (Collection::new(writes.collection), RecordId::new(id)) else {
        return StoreError::Internal(format!("a stored record {}/{id}", writes.collection));
    };
    StoreError::Invalid {
        index,
        violation: Box::new(Violation {
            collection,
            id,
            field,
            rule: Rule::Column,
            message: format!("the table {name} refuses it: {}", db.message()),
        }),
    }
}

async fn write_table(
    tx: &mut PgConnection,
    space: &str,
    writes: &Writes<'_>,
) -> Result<(), sqlx::Error> {
    let mirror = &writes.mirror;
    let (name, s, i) = (
        table_name(mirror),
        q(mirror.space_column),
        q(mirror.id_column),
    );
    let (deleted, updated) = (q(mirror.soft_delete_column), q(mirror.updated_column));
    if !writes.live.is_empty() {
        // One typed array per column (`mirror_cells`), the ids first.
        let rows = writes.live.len();
        let mut ids = Vec::with_capacity(rows);
        let mut cells: Vec<Cells<'_>> = mirror
            .columns
            .iter()
            .map(|c| Cells::new(c.sql_type, rows))
            .collect();
        for (id, state) in &writes.live {
            ids.push(id.as_str());
            for (column, value) in cells.iter_mut().zip(mirror.cells(state)) {
                column.push(value);
            }
        }
        let mut listed = vec![q(mirror.soft_delete_column)];
        listed.extend(mirror.columns.iter().map(|c| q(c.column)));
        let set: Vec<String> = listed
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let mut params = vec!["$2::text[]".to_owned()];
        let mut names = vec!["id".to_owned()];
        let mut selected = vec![
            format!("$1{}", writes.casts.space),
            format!("u.id{}", writes.casts.id),
            "NULL".to_owned(),
        ];
        for (n, column) in cells.iter().enumerate() {
            params.push(format!("${}::{}", n + 3, column.param_type()));
            names.push(format!("c{n}"));
            selected.push(column.select(&format!("u.c{n}")));
        }
        let sql = format!(
            "INSERT INTO {name} ({s}, {i}, {listed}, {updated})
             SELECT {selected}, now()
             FROM unnest({params}) AS u ({names})
             ON CONFLICT ({s}, {i}) DO UPDATE SET {set}, {updated} = EXCLUDED.{updated}",
            listed = listed.join(", "),
            selected = selected.join(", "),
            params = params.join(", "),
            names = names.join(", "),
            set = set.join(", "),
        );
        let mut query = sqlx::query(&sql).bind(space).bind(ids);
        for column in cells {
            query = column.bind(query);
        }
        query.execute(&mut *tx).await?;
    }
    if !writes.deleted.is_empty() {
        let sql = format!(
            "UPDATE {name} t
             SET {deleted} = coalesce(t.{deleted}, nullif(d.at, '')::timestamptz, now()),
                 {updated} = now()
             FROM unnest($2::text[], $3::text[]) AS d (id, at)
             WHERE t.{s} = $1{sc} AND t.{i} = d.id{ic}",
            sc = writes.casts.space,
            ic = writes.casts.id,
        );
        let (ids, at): (Vec<&str>, Vec<&str>) = writes
            .deleted
            .iter()
            .map(|(id, at)| (id.as_str(), at.as_str()))
            .unzip();
        sqlx::query(&sql)
            .bind(space)
            .bind(ids)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
