//! Push throughput: `Store::push` of batches of new records, against a raw
//! batched upsert of the same rows into the same kind of table, in the same
//! database, with the same durability settings.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sqlx::Connection;

use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Changes per batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Batches per run.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Runs of each side, alternating.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measure the cost of the app's schema instead: pushes checked
    /// against a strict schema of 10 fields (`workload::schema`), against
    /// the same pushes with no schema, in the same run.
    #[arg(long)]
    schema: bool,
    /// Measure the cost of mirroring into a table of the app's instead
    /// (PostgreSQL): pushes checked against the 10-field schema with its
    /// collection mirrored (`workload::mirrored_schema`), against the same
    /// pushes with the same schema unmirrored, in the same run.
    #[arg(long)]
    mirror: bool,
}

/// The app's schema a push is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    None,
    Schema,
    Mirrored,
}

/// Ferry: `Store::push` of each batch, one transaction per batch; checked
/// against the 10-field schema (mirrored or not) as `held` says.
async fn ferry(args: &PushArgs, held: Held) -> anyhow::Result<Duration> {
    let (store, _guard) = workload::fresh(args.backend).await;
    let space = workload::space(store.as_ref()).await?;
    let h = workload::hlc()?;
    let held = if held != Held::None {
        let schema = if held == Held::Mirrored {
            workload::mirrored_schema()?
        } else {
            workload::schema()?
        };
        let version = store
            .apply_app_schema(&serde_json::to_string(&schema)?, 0)
            .await?;
        Some(std::sync::Arc::new(ferry_server::store::AppSchema {
            version,
            schema: Some(schema),
        }))
    } else {
        None
    };
    let batches = (0..args.batches)
        .map(|b| {
            let mut batch = workload::batch(b, args.batch_size, &h)?;
            batch.schema = held.clone();
            Ok(batch)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    for batch in batches {
        store.push(&space, batch).await?;
    }
    Ok(start.elapsed())
}

const RAW_TABLE: &str = "CREATE TABLE raw_records (sid BIGINT NOT NULL, collection TEXT NOT NULL,
    id TEXT NOT NULL, seq BIGINT NOT NULL, fields TEXT NOT NULL, deleted TEXT,
    updated_at BIGINT NOT NULL, PRIMARY KEY (sid, collection, id))";

/// SQLite: a prepared upsert per row, one transaction per batch, WAL and
/// `synchronous = FULL` as Ferry runs it.
fn raw_sqlite(args: &PushArgs) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(RAW_TABLE)?;
    conn.execute_batch("CREATE INDEX raw_by_seq ON raw_records (sid, seq)")?;
    let h = workload::hlc()?;
    let start = Instant::now();
    let mut seq = 0i64;
    for b in 0..args.batches {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO raw_records (sid, collection, id, seq, fields, deleted, updated_at)
                 VALUES (1, 'todos', ?1, ?2, ?3, NULL, 0)
                 ON CONFLICT (sid, collection, id) DO UPDATE
                 SET seq = excluded.seq, fields = excluded.fields, deleted = excluded.deleted",
            )?;
            for k in 0..args.batch_size {
                let i = b * args.batch_size + k;
                seq += 1;
                stmt.execute(rusqlite::params![
                    workload::record_id(i),
                    seq,
                    workload::stored_fields(i, &h)?
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

/// PostgreSQL: one multi-row `INSERT ... SELECT FROM UNNEST` upsert per
/// batch, in its own transaction, on a fresh database of the same server.
async fn raw_postgres(args: &PushArgs) -> anyhow::Result<Duration> {
    let db = ferry_server::testing::TestDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::raw_sql(RAW_TABLE).execute(&mut conn).await?;
    sqlx::raw_sql("CREATE INDEX raw_by_seq ON raw_records (sid, seq)")
        .execute(&mut conn)
        .await?;
    let h = workload::hlc()?;
    let start = Instant::now();
    let mut seq = 0i64;
    for b in 0..args.batches {
        let mut ids = Vec::with_capacity(args.batch_size);
        let mut seqs = Vec::with_capacity(args.batch_size);
        let mut fields = Vec::with_capacity(args.batch_size);
        for k in 0..args.batch_size {
            let i = b * args.batch_size + k;
            seq += 1;
            ids.push(workload::record_id(i));
            seqs.push(seq);
            fields.push(workload::stored_fields(i, &h)?);
        }
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO raw_records (sid, collection, id, seq, fields, deleted, updated_at)
             SELECT 1, 'todos', u.id, u.seq, u.fields, NULL, 0
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u (id, seq, fields)
             ON CONFLICT (sid, collection, id) DO UPDATE
             SET seq = EXCLUDED.seq, fields = EXCLUDED.fields, deleted = EXCLUDED.deleted",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&fields)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let elapsed = start.elapsed();
    let _ = conn.close().await;
    Ok(elapsed)
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.batches > 0 && args.batch_size > 0,
        "sizes must be positive"
    );
    if args.mirror {
        anyhow::ensure!(
            args.backend == Backend::Postgres,
            "tables are mirrored on PostgreSQL"
        );
        return mirror_cost(&args).await;
    }
    if args.schema {
        return schema_cost(&args).await;
    }
    let total = (args.batches * args.batch_size) as f64;
    let (baseline, durability) = match args.backend {
        Backend::Sqlite => ("raw batched upsert", "WAL, synchronous=FULL"),
        Backend::Postgres => ("raw multi-row upsert", "synchronous_commit as configured"),
    };
    println!(
        "push into {:?}: {} batches of {} changes (4 fields, ~100 bytes), {} runs, {durability}",
        args.backend, args.batches, args.batch_size, args.runs
    );
    let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let r = match args.backend {
            Backend::Sqlite => raw_sqlite(&args),
            Backend::Postgres => raw_postgres(&args).await,
        }
        .context("baseline")?;
        let f = ferry(&args, Held::None).await.context("ferry push")?;
        let (r, f) = (total / r.as_secs_f64(), total / f.as_secs_f64());
        raw.push(r);
        ours.push(f);
        ratios.push(f / r);
    }
    workload::header("changes/s");
    workload::row(baseline, raw, 0);
    workload::row("ferry Store::push", ours, 0);
    workload::row("ratio ferry/raw", ratios, 2);
    Ok(())
}

/// Two ways of checking the same pushes, `base` and `tried` (a label
/// each), run alternately: their changes/s and the ratio tried/base.
async fn compare(
    args: &PushArgs,
    base: (Held, &str),
    tried: (Held, &str),
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let total = (args.batches * args.batch_size) as f64;
    let (mut b, mut t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let x = ferry(args, base.0).await.context("push, baseline")?;
        let y = ferry(args, tried.0).await.context("push")?;
        let (x, y) = (total / x.as_secs_f64(), total / y.as_secs_f64());
        b.push(x);
        t.push(y);
        ratios.push(y / x);
    }
    workload::header("changes/s");
    workload::row(base.1, b.clone(), 0);
    workload::row(tried.1, t.clone(), 0);
    let label = if tried.0 == Held::Mirrored {
        "ratio mirrored/unmirrored"
    } else {
        "ratio schema/none"
    };
    workload::row(label, ratios, 2);
    Ok((b, t))
}

/// The app's schema's cost: the same pushes with and without it.
async fn schema_cost(args: &PushArgs) -> anyhow::Result<()> {
    println!(
        "push into {:?}: {} batches of {} changes (4 fields), {} runs, checked against a \
         strict schema of 10 fields, against the same pushes without a schema",
        args.backend, args.batches, args.batch_size, args.runs
    );
    compare(
        args,
        (Held::None, "Store::push, no schema"),
        (Held::Schema, "Store::push, 10-field schema"),
    )
    .await?;
    Ok(())
}

/// Mirroring's cost: the same pushes, checked against the same schema,
/// with and without its collection mirrored into a table; and what
/// mirroring adds to a push against PostgreSQL's own cost of writing the
/// same rows into such a table.
async fn mirror_cost(args: &PushArgs) -> anyhow::Result<()> {
    println!(
        "push into {:?}: {} batches of {} changes (4 fields), {} runs, checked against a \
         strict schema of 10 fields whose collection is mirrored into a table (one typed \
         column per field, written in each push's transaction), against the same pushes \
         with the collection unmirrored; and the same rows upserted into a copy of the \
         table alone, one statement and transaction per batch",
        args.backend, args.batches, args.batch_size, args.runs
    );
    let (plain, mirrored) = compare(
        args,
        (Held::Schema, "Store::push, unmirrored"),
        (Held::Mirrored, "Store::push, mirrored into a table"),
    )
    .await?;
    let total = (args.batches * args.batch_size) as f64;
    let (mut raw, mut added) = (Vec::new(), Vec::new());
    for (p, m) in plain.iter().zip(&mirrored) {
        let r = total
            / raw_table(args)
                .await
                .context("the table alone")?
                .as_secs_f64();
        raw.push(r);
        // Seconds per change mirroring adds, against the table's own.
        added.push((1.0 / m - 1.0 / p) * r);
    }
    workload::row("upsert into the table alone", raw, 0);
    workload::row("mirroring's cost / the table's own", added, 2);
    Ok(())
}

/// The table Ferry creates for the workload's mirrored collection.
const RAW_MIRROR: &str = "CREATE TABLE todos (space_id text NOT NULL, id text NOT NULL,
    title text, done boolean, priority bigint, list text, note text, due timestamptz,
    estimate double precision, tags text[], state text, extra jsonb, deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (space_id, id))";

/// The batches' rows upserted into [`RAW_MIRROR`] with no Ferry: one
/// typed `unnest` per batch in its own transaction.
async fn raw_table(args: &PushArgs) -> anyhow::Result<Duration> {
    let db = ferry_server::testing::TestDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::raw_sql(RAW_MIRROR).execute(&mut conn).await?;
    let start = Instant::now();
    for b in 0..args.batches {
        let (mut ids, mut titles, mut done, mut priority, mut list) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in 0..args.batch_size {
            let i = b * args.batch_size + k;
            ids.push(workload::record_id(i));
            let [t, d, p, l] = workload::fields(i);
            titles.push(t.1.as_str().unwrap_or_default().to_owned());
            done.push(d.1.as_bool().unwrap_or_default());
            priority.push(p.1.as_i64().unwrap_or_default());
            list.push(l.1.as_str().unwrap_or_default().to_owned());
        }
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO todos (space_id, id, title, done, priority, list, updated_at)
             SELECT 'space', u.id, u.title, u.done, u.priority, u.list, now()
             FROM unnest($1::text[], $2::text[], $3::boolean[], $4::bigint[], $5::text[])
                  AS u (id, title, done, priority, list)
             ON CONFLICT (space_id, id) DO UPDATE SET title = EXCLUDED.title,
                 done = EXCLUDED.done, priority = EXCLUDED.priority, list = EXCLUDED.list,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(&ids)
        .bind(&titles)
        .bind(&done)
        .bind(&priority)
        .bind(&list)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let elapsed = start.elapsed();
    let _ = conn.close().await;
    Ok(elapsed)
}
