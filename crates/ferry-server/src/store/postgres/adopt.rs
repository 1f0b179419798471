//! Adopting the rows a mirrored table already held (`ferry adopt`,
//! docs/tables.md), in both directions: rows for the records Ferry holds
//! that the table lacks, written a space at a time under the space's lock
//! (as a push writes them); and every row of the table queued, by key, for
//! the capture drain, which reads the row as it is when it applies it and
//! takes in what differs from the record (so a row a device's push wrote
//! in between is not taken back to what it was).

use std::collections::HashMap;

use ferry_core::schema::Schema;
use ferry_core::schema::table::Mirror;
use ferry_core::{Collection, SpaceId};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

use super::mirror::{key_casts, q, table_name};
use super::mirror_rows::Written;
use crate::store::StoreError;
use crate::store::batch::RowOut;
pub use crate::store::captured::ADOPT;
use crate::store::captured::Queued;
use crate::store::stored::{corrupt, count};

/// Ferry's text `expr` as a value of a key column: itself (in the table's
/// collation), or, for a `uuid` column, the uuid it spells (null when it
/// spells none, so it matches no row rather than failing the statement).
fn as_key(expr: &str, cast: &str) -> String {
    if cast.is_empty() {
        format!("({expr} COLLATE \"default\")")
    } else {
        format!(
            "(CASE WHEN {expr} ~* '^[0-9a-f]{{8}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{12}}$'
                   THEN {expr}{cast} END)"
        )
    }
}

/// Records given rows per transaction, and spaces listed per query.
const CHUNK: i64 = 1000;
/// The most bytes of records' fields given rows in one transaction.
const MAX_FILL_BYTES: i64 = 8 << 20;

fn mirror_of<'a>(schema: &'a Schema, collection: &Collection) -> Result<Mirror<'a>, StoreError> {
    schema
        .collection(collection)
        .and_then(|c| c.mirror())
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "{collection}: the applied schema mirrors it into no table (table = ...)"
            ))
        })
}

/// Gives `collection`'s table the rows of the records Ferry holds that it
/// lacks (a live record with no row; a deleted record whose row still
/// lives), a space at a time under the space's lock and the schema's
/// shared one (as a push writes rows), at most 1,000 records or 8 MiB of
/// fields per transaction. A record whose row the table refuses is left
/// out and named. How many rows were written, and what was refused.
pub async fn fill(
    pool: &PgPool,
    namespace: &str,
    schema: &Schema,
    collection: &Collection,
) -> Result<(u64, Vec<String>), StoreError> {
    let mirror = mirror_of(schema, collection)?;
    let (name, s, i, d) = (
        table_name(&mirror),
        q(mirror.space_column),
        q(mirror.id_column),
        q(mirror.soft_delete_column),
    );
    let casts = key_casts(&mut *pool.acquire().await?, &mirror).await?;
    let row_of = format!(
        "SELECT 1 FROM {name} t WHERE t.{s} = {} AND t.{i} = {}",
        as_key("sp.id", casts.space),
        as_key("r.id", casts.id)
    );
    let lacking = format!(
        "r.collection = $1 AND (r.deleted IS NULL AND NOT EXISTS ({row_of})
                                OR r.deleted IS NOT NULL AND EXISTS ({row_of} AND t.{d} IS NULL))"
    );
    let (mut written, mut refused) = (0, Vec::new());
    let mut after_space = String::new();
    loop {
        let spaces: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT sp.id FROM records r JOIN spaces sp ON sp.sid = r.sid
             WHERE {lacking} AND sp.id > $2 ORDER BY sp.id LIMIT {CHUNK}"
        ))
        .bind(collection.as_str())
        .bind(&after_space)
        .fetch_all(pool)
        .await?;
        let Some(last) = spaces.last().cloned() else {
            return Ok((written, refused));
        };
        for space in &spaces {
            let mut after_id = String::new();
            loop {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "SELECT sid, pg_advisory_xact_lock_shared($2) FROM spaces
                     WHERE id = $1 FOR UPDATE",
                )
                .bind(space)
                .bind(super::app_schema::APPLY_LOCK)
                .execute(&mut *tx)
                .await?;
                let rows = sqlx::query(&format!(
                    "SELECT id, seq, fields, deleted FROM (
                         SELECT id, seq, fields, deleted,
                                sum(octet_length(fields)) OVER (ORDER BY id) AS upto,
                                row_number() OVER (ORDER BY id) AS n
                         FROM (SELECT r.id, r.seq, r.fields, r.deleted
                               FROM records r JOIN spaces sp ON sp.sid = r.sid
                               WHERE sp.id = $2 AND r.id > $3 AND {lacking}
                               ORDER BY r.id LIMIT {CHUNK}) lacking
                     ) sized WHERE upto <= {MAX_FILL_BYTES} OR n = 1 ORDER BY id"
                ))
                .bind(collection.as_str())
                .bind(space)
                .bind(&after_id)
                .fetch_all(&mut *tx)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(RowOut {
                        collection: collection.to_string(),
                        id: row.try_get(0)?,
                        seq: count(row.try_get(1)?),
                        fields: row.try_get(2)?,
                        deleted: row.try_get(3)?,
                    });
                }
                let Some(last_id) = out.last().map(|r| r.id.clone()) else {
                    break;
                };
                after_id = last_id;
                // A row the table refuses is left out, and the rest written.
                loop {
                    sqlx::query("SAVEPOINT ferry_fill")
                        .execute(&mut *tx)
                        .await?;
                    let index_of = |_: &str, id: &str| {
                        out.iter().position(|r| r.id == id).unwrap_or(usize::MAX)
                    };
                    let written = Written::parsed(&out)?;
                    let result = super::mirror_rows::write(
                        &mut tx, namespace, space, schema, written, &index_of, None,
                    )
                    .await;
                    match result {
                        Ok(()) => break,
                        Err(StoreError::Invalid { index, violation }) if index < out.len() => {
                            sqlx::query("ROLLBACK TO SAVEPOINT ferry_fill")
                                .execute(&mut *tx)
                                .await?;
                            let gone = out.remove(index);
                            refused.push(format!("{space}/{}: {}", gone.id, violation.message));
                        }
                        Err(e) => return Err(e),
                    }
                }
                tx.commit().await?;
                written += out.len() as u64;
            }
        }
        after_space = last;
    }
}

/// Queues, by key, up to `limit` rows of `collection`'s table after the key
/// `after` (space, id), in the order of its unique index, and wakes the
/// nodes; the last key queued and how many, `None` when none is left.
pub async fn queue(
    pool: &PgPool,
    namespace: &str,
    schema: &Schema,
    collection: &Collection,
    after: Option<&(String, String)>,
    limit: i64,
) -> Result<Option<((String, String), u64)>, StoreError> {
    let mirror = mirror_of(schema, collection)?;
    let (name, s, i) = (
        table_name(&mirror),
        q(mirror.space_column),
        q(mirror.id_column),
    );
    let casts = key_casts(&mut *pool.acquire().await?, &mirror).await?;
    let from = if after.is_some() {
        format!("WHERE ({s}, {i}) > ($3{}, $4{})", casts.space, casts.id)
    } else {
        "WHERE ($3::text IS NOT NULL OR $4::text IS NOT NULL)".to_owned()
    };
    let (after_space, after_id) = after.cloned().unwrap_or_default();
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!(
        "WITH chunk AS (
             SELECT {s}::text AS s, {i}::text AS i FROM {name} {from}
                 AND {s} IS NOT NULL AND {i} IS NOT NULL
             ORDER BY {s}, {i} LIMIT $2
         ), queued AS (
             INSERT INTO captured (collection, space, op, new_row)
             SELECT $1, s, '{ADOPT}', jsonb_build_object($5::text, s, $6::text, i)
             FROM chunk ORDER BY s, i
         )
         SELECT s, i, (SELECT count(*) FROM chunk) FROM chunk
         ORDER BY s DESC, i DESC LIMIT 1"
    ))
    .bind(collection.as_str())
    .bind(limit)
    .bind(after_space)
    .bind(after_id)
    .bind(mirror.space_column)
    .bind(mirror.id_column)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    sqlx::query("SELECT pg_notify($1, 'k')")
        .bind(super::namespace::channel(namespace))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some((
        (row.try_get(0)?, row.try_get(1)?),
        count(row.try_get(2)?),
    )))
}

/// Rows of `collection` queued for adoption and not yet applied, and how
/// many adoptions of it were ever refused.
pub async fn left(pool: &PgPool, collection: &Collection) -> Result<(u64, u64), StoreError> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT count(*) FROM captured WHERE collection = $1 AND op = '{ADOPT}'),
                (SELECT count(*) FROM capture_refused WHERE collection = $1 AND op = '{ADOPT}')"
    ))
    .bind(collection.as_str())
    .fetch_one(pool)
    .await?;
    Ok((count(row.try_get(0)?), count(row.try_get(1)?)))
}

/// The mirrored columns of a row of `t`, as JSON (what an adoption reads).
fn mirrored_json(mirror: &Mirror<'_>) -> String {
    let mut kept: Vec<String> = vec![
        mirror.space_column.to_owned(),
        mirror.id_column.to_owned(),
        mirror.soft_delete_column.to_owned(),
    ];
    kept.extend(mirror.columns.iter().map(|c| c.column.to_owned()));
    // Names the schema let through are letters, digits and underscores.
    let listed: Vec<String> = kept.iter().map(|c| format!("'{c}'")).collect();
    format!(
        "(SELECT jsonb_object_agg(key, value) FROM jsonb_each(to_jsonb(t))
          WHERE key IN ({}))",
        listed.join(", ")
    )
}

/// Replaces the key of each queued adoption in `queued` by its row as the
/// table holds it now (its mirrored columns), `None` when the row is gone.
/// The queue is cut where the rows read would pass `budget` bytes (past
/// the first entry; the rest wait for the next drain), and a row larger
/// than a record may be is refused unread (returned with why).
pub async fn current_rows(
    tx: &mut PgConnection,
    schema: &Schema,
    space: &SpaceId,
    queued: &mut Vec<Queued>,
    budget: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mirror_of = |collection: &str| schema.mirror_of(collection);
    let key_of = |q: &Queued| {
        let mirror = mirror_of(&q.collection)?;
        let id = q.new_row.as_ref()?.get(mirror.id_column)?.as_str()?;
        Some((q.collection.clone(), id.to_owned()))
    };
    let adoptions = |queued: &[Queued]| {
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
        for (collection, id) in queued.iter().filter(|q| q.op == ADOPT).filter_map(key_of) {
            wanted.entry(collection).or_default().push(id);
        }
        wanted
    };
    // First the sizes, read by the database alone.
    let mut sizes: HashMap<(String, String), i64> = HashMap::new();
    for (collection, ids) in adoptions(queued) {
        let Some(mirror) = mirror_of(&collection) else {
            continue;
        };
        let (name, s, i) = (
            table_name(&mirror),
            q(mirror.space_column),
            q(mirror.id_column),
        );
        let casts = key_casts(&mut *tx, &mirror).await?;
        let rows: Vec<(String, Option<i32>)> = sqlx::query_as(&format!(
            "SELECT {i}::text, octet_length({}::text) FROM {name} t
             WHERE {s} = $1{} AND {i} = ANY ($2{})",
            mirrored_json(&mirror),
            casts.space,
            casts.ids()
        ))
        .bind(space.as_str())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for (id, size) in rows {
            sizes.insert((collection.clone(), id), i64::from(size.unwrap_or(0)));
        }
    }
    let max_row = i64::try_from(crate::store::captured::MAX_ROW_BYTES).unwrap_or(i64::MAX);
    let mut refused = Vec::new();
    let mut running = 0;
    for (n, q) in queued.iter().enumerate() {
        let Some(size) = key_of(q).and_then(|key| sizes.get(&key).copied()) else {
            continue;
        };
        if q.op != ADOPT {
            continue;
        }
        if size > max_row {
            refused.push((
                q.id,
                format!("the row is {size} bytes, larger than a record may be"),
            ));
            continue;
        }
        if n > 0 && running + size > budget {
            queued.truncate(n);
            break;
        }
        running += size;
    }
    let too_large: Vec<i64> = refused.iter().map(|(id, _)| *id).collect();
    // Then the rows within the budget.
    let mut found: HashMap<(String, String), Map<String, Value>> = HashMap::new();
    for (collection, ids) in adoptions(queued) {
        let Some(mirror) = mirror_of(&collection) else {
            continue;
        };
        let (name, s, i) = (
            table_name(&mirror),
            q(mirror.space_column),
            q(mirror.id_column),
        );
        let casts = key_casts(&mut *tx, &mirror).await?;
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT {i}::text, {}::text FROM {name} t
             WHERE {s} = $1{} AND {i} = ANY ($2{}) AND octet_length({}::text) <= $3",
            mirrored_json(&mirror),
            casts.space,
            casts.ids(),
            mirrored_json(&mirror)
        ))
        .bind(space.as_str())
        .bind(&ids)
        .bind(max_row)
        .fetch_all(&mut *tx)
        .await?;
        for (id, text) in rows {
            let Some(text) = text else { continue };
            let row: Map<String, Value> =
                serde_json::from_str(&text).map_err(|e| corrupt("a mirrored row", e))?;
            found.insert((collection.clone(), id), row);
        }
    }
    for q in queued.iter_mut().filter(|q| q.op == ADOPT) {
        let now = key_of(q).and_then(|key| found.remove(&key));
        q.new_row = if too_large.contains(&q.id) { None } else { now };
    }
    Ok(refused)
}
