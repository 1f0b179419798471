//! `ferry-bench`: measures Ferry and, in the same run, a baseline for each
//! figure, and prints both with their ratio. Machines are noisy; ratios of
//! figures taken side by side are what hold.
//!
//! - `push`: pushing batches of small records into the SQLite store, against
//!   a raw batched SQLite upsert of the same rows into the same kind of table
//!   with the same durability settings.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_core::protocol::BatchId;
use ferry_core::{Change, ClientId, Collection, FieldName, FieldValue, Hlc, RecordId, UserId};
use ferry_server::Store;
use ferry_server::store::{Batch, SqliteStore};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "ferry-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push throughput into SQLite against a raw batched upsert.
    Push(PushArgs),
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Changes per batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Batches per run.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Runs of each side, alternating.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// The record every benchmark writes: 4 fields, about 100 bytes of values.
fn fields(i: usize, h: &Hlc) -> Vec<(&'static str, serde_json::Value, Hlc)> {
    vec![
        (
            "title",
            json!(format!("Buy {i} things at the corner shop")),
            h.clone(),
        ),
        ("done", json!(i.is_multiple_of(3)), h.clone()),
        ("priority", json!(i % 5), h.clone()),
        ("list", json!(format!("groceries-{}", i % 17)), h.clone()),
    ]
}

fn batch_changes(b: usize, size: usize, h: &Hlc) -> anyhow::Result<Vec<Change>> {
    (0..size)
        .map(|k| {
            let i = b * size + k;
            Ok(Change::Upsert {
                collection: Collection::new("todos")?,
                id: RecordId::new(format!("todo-{i:08}"))?,
                fields: fields(i, h)
                    .into_iter()
                    .map(|(n, value, hlc)| Ok((FieldName::new(n)?, FieldValue { value, hlc })))
                    .collect::<anyhow::Result<_>>()?,
            })
        })
        .collect()
}

/// Ferry: `Store::push` of each batch, one transaction per batch.
async fn ferry_push(args: &PushArgs) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("ferry.db")).await?;
    let user = UserId::new("bench")?;
    store.ensure_user(&user).await?;
    let space = user.personal_space();
    let h = Hlc::zero(ClientId::new("bench")?).tick(1_763_798_400_000);
    let batches: Vec<Vec<Change>> = (0..args.batches)
        .map(|b| batch_changes(b, args.batch_size, &h))
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    for (b, changes) in batches.into_iter().enumerate() {
        store
            .push(
                &space,
                Batch {
                    client_id: ClientId::new("bench")?,
                    batch_id: Some(BatchId::new(format!("b{b}"))?),
                    cursor: None,
                    changes,
                },
            )
            .await?;
    }
    Ok(start.elapsed())
}

/// The baseline: the same rows upserted with a prepared statement, one
/// transaction per batch, same pragmas, fields serialized to JSON as Ferry
/// stores them.
fn raw_upsert(args: &PushArgs) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE records (sid INTEGER NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL,
            seq INTEGER NOT NULL, fields TEXT NOT NULL, deleted TEXT, UNIQUE (sid, collection, id));
         CREATE INDEX records_by_seq ON records (sid, seq);",
    )?;
    let h = Hlc::zero(ClientId::new("bench")?).tick(1_763_798_400_000);
    let start = Instant::now();
    let mut seq = 0i64;
    for b in 0..args.batches {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO records (sid, collection, id, seq, fields, deleted)
                 VALUES (1, 'todos', ?1, ?2, ?3, NULL)
                 ON CONFLICT (sid, collection, id) DO UPDATE
                 SET seq = excluded.seq, fields = excluded.fields, deleted = excluded.deleted",
            )?;
            for k in 0..args.batch_size {
                let i = b * args.batch_size + k;
                seq += 1;
                let map: serde_json::Map<String, serde_json::Value> = fields(i, &h)
                    .into_iter()
                    .map(|(n, v, hlc)| (n.to_owned(), json!({"value": v, "hlc": hlc.to_string()})))
                    .collect();
                stmt.execute(rusqlite::params![
                    format!("todo-{i:08}"),
                    seq,
                    serde_json::to_string(&map)?
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

fn rate(changes: usize, d: Duration) -> f64 {
    changes as f64 / d.as_secs_f64()
}

fn min_median_max(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

async fn push(args: PushArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.batches > 0 && args.batch_size > 0,
        "sizes must be positive"
    );
    let total = args.batches * args.batch_size;
    println!(
        "push into SQLite: {} batches of {} changes (4 fields, ~100 bytes), {} runs, synchronous=FULL",
        args.batches, args.batch_size, args.runs
    );
    let (mut raw, mut ferry, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let r = rate(total, raw_upsert(&args).context("raw upsert")?);
        let f = rate(total, ferry_push(&args).await.context("ferry push")?);
        raw.push(r);
        ferry.push(f);
        ratios.push(f / r);
    }
    println!(
        "{:<26} {:>12} {:>12} {:>12}",
        "changes/s", "min", "median", "max"
    );
    for (name, xs) in [("raw batched upsert", raw), ("ferry Store::push", ferry)] {
        let (lo, mid, hi) = min_median_max(xs);
        println!("{name:<26} {lo:>12.0} {mid:>12.0} {hi:>12.0}");
    }
    let (lo, mid, hi) = min_median_max(ratios);
    println!(
        "{:<26} {lo:>12.2} {mid:>12.2} {hi:>12.2}",
        "ratio ferry/raw"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Push(args) => push(args).await,
    }
}
