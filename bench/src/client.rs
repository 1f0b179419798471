//! The native client (`ferry-client`), each figure beside a raw SQLite
//! baseline of the same rows on the same disk with the same durability:
//!
//! - applying pulled pages: `Replica::store_answer` of pages already in
//!   memory, against a raw batched upsert of the same rows;
//! - local writes: `Replica::patch` (record and outbox, one transaction)
//!   one at a time, against a raw one-row insert per transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ferry_client::{Remote, Replica, ReplicaConfig, Token};
use ferry_core::protocol::SyncRequest;
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{Guard, Served};
use ferry_server::{AppState, Settings};
use rusqlite::{Connection, params};
use serde_json::{Map, Value};

use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Records of the apply measurement.
    #[arg(long, default_value_t = 100_000)]
    apply_records: usize,
    /// Local writes timed one by one.
    #[arg(long, default_value_t = 5_000)]
    writes: usize,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const RAW_TABLE: &str = "CREATE TABLE records (space TEXT NOT NULL, collection TEXT NOT NULL,
    id TEXT NOT NULL, fields TEXT NOT NULL, deleted TEXT, seen INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (space, collection, id)) WITHOUT ROWID";

/// A fresh SQLite file set up as a replica is (WAL, synchronous as given).
pub(crate) fn raw_db(dir: &tempfile::TempDir, synchronous: &str) -> anyhow::Result<Connection> {
    let conn = Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(RAW_TABLE)?;
    Ok(conn)
}

/// The rows of `records` as a replica stores them.
pub(crate) fn rows(records: usize) -> anyhow::Result<Vec<(String, String)>> {
    let h = workload::hlc()?;
    (0..records)
        .map(|i| Ok((workload::record_id(i), workload::stored_fields(i, &h)?)))
        .collect()
}

/// Upserts `rows` in transactions of `batch`; the time it took.
pub(crate) fn raw_upsert(
    conn: &mut Connection,
    rows: &[(String, String)],
    batch: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO records (space, collection, id, fields) VALUES ('user:bench', 'todos', ?1, ?2)
                 ON CONFLICT (space, collection, id) DO UPDATE SET fields = excluded.fields",
            )?;
            for (id, fields) in chunk {
                stmt.execute(params![id, fields])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

pub(crate) fn space() -> anyhow::Result<SpaceId> {
    Ok(SpaceId::new("user:bench")?)
}

/// An embedded server on `backend` holding `records` records in the bench
/// user's personal space; a client of it as that user.
pub(crate) async fn server(
    backend: Backend,
    records: usize,
) -> anyhow::Result<(Served, Remote, Guard)> {
    let (store, guard) = workload::fresh(backend).await;
    let space = workload::space(store.as_ref()).await?;
    let h = workload::hlc()?;
    for b in 0..records.div_ceil(1000) {
        let size = 1000.min(records - b * 1000);
        store.push(&space, workload::batch(b, size, &h)?).await?;
    }
    let state = AppState::new(store, Settings::new(ClientId::new("bench-server")?, "")).await?;
    let served = Served::start(state).await;
    let remote = Remote::new(&served.base, Arc::new(Token(served.token("bench"))))?;
    Ok((served, remote, guard))
}

async fn apply(args: &ClientArgs) -> anyhow::Result<()> {
    let (_served, remote, _guard) = server(Backend::Sqlite, args.apply_records).await?;
    // The pages, fetched once.
    let mut pages: Vec<ferry_client::sync::Answer> = Vec::new();
    let mut cursor = 0;
    let fetch = Instant::now();
    loop {
        let request = SyncRequest {
            client_id: ClientId::new("bench")?,
            batch_id: None,
            cursor,
            changes: Vec::new(),
            limit: Some(1000),
            conflict_cursor: None,
        };
        let page = remote.sync(&space()?, &request).await?;
        cursor = page.cursor;
        let more = page.has_more;
        pages.push(page);
        if !more {
            break;
        }
    }
    let fetched = fetch.elapsed();
    let rows = rows(args.apply_records)?;
    println!(
        "(pulling them over HTTP took {:.2} s: {:.0} records/s)",
        fetched.as_secs_f64(),
        args.apply_records as f64 / fetched.as_secs_f64()
    );
    println!(
        "Applying {} pulled records (pages of 1,000, already in memory) into a fresh replica, {} runs",
        args.apply_records, args.runs
    );
    workload::header("records/s");
    let (mut ferry, mut raw, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..args.runs {
        let dir = tempfile::tempdir()?;
        let mut conn = raw_db(&dir, "normal")?;
        let raw_rate =
            args.apply_records as f64 / raw_upsert(&mut conn, &rows, 1000)?.as_secs_f64();
        let dir = tempfile::tempdir()?;
        let replica = Replica::open(dir.path().join("replica.db"), ReplicaConfig::default())?;
        let pages = pages.clone();
        let start = Instant::now();
        for page in pages {
            replica.store_answer(&space()?, None, page)?;
        }
        let rate = args.apply_records as f64 / start.elapsed().as_secs_f64();
        ferry.push(rate);
        raw.push(raw_rate);
        ratio.push(rate / raw_rate);
    }
    workload::row("raw batched upsert", raw, 0);
    workload::row("Replica::store_answer", ferry, 0);
    workload::row("ratio ferry/raw", ratio, 2);
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn local_writes(args: &ClientArgs) -> anyhow::Result<()> {
    println!(
        "Local writes one at a time (record + outbox in one transaction), {} writes, {} runs",
        args.writes, args.runs
    );
    workload::header("µs");
    let (mut p50, mut p99, mut raw50, mut raw99, mut ratio) =
        (vec![], vec![], vec![], vec![], vec![]);
    let todos = Collection::new("todos")?;
    for _ in 0..args.runs {
        let dir = tempfile::tempdir()?;
        let conn = raw_db(&dir, "normal")?;
        let rows = rows(args.writes)?;
        let mut raw = Vec::with_capacity(args.writes);
        for (id, fields) in &rows {
            let start = Instant::now();
            conn.execute(
                "INSERT INTO records (space, collection, id, fields) VALUES ('user:bench', 'todos', ?1, ?2)",
                params![id, fields],
            )?;
            raw.push(start.elapsed());
        }
        let dir = tempfile::tempdir()?;
        let replica = Replica::open(dir.path().join("replica.db"), ReplicaConfig::default())?;
        let mut ours = Vec::with_capacity(args.writes);
        for i in 0..args.writes {
            let fields: Map<String, Value> = workload::fields(i)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let id = RecordId::new(workload::record_id(i))?;
            let start = Instant::now();
            replica.patch(&space()?, &todos, &id, fields)?;
            ours.push(start.elapsed());
        }
        raw.sort();
        ours.sort();
        p50.push(percentile(&ours, 0.5));
        p99.push(percentile(&ours, 0.99));
        raw50.push(percentile(&raw, 0.5));
        raw99.push(percentile(&raw, 0.99));
        ratio.push(percentile(&ours, 0.99) / percentile(&raw, 0.99));
    }
    workload::row("raw one-row insert p50", raw50, 1);
    workload::row("raw one-row insert p99", raw99, 1);
    workload::row("Replica::patch p50", p50, 1);
    workload::row("Replica::patch p99", p99, 1);
    workload::row("ratio p99 ferry/raw", ratio, 2);
    Ok(())
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.apply_records > 0 && args.writes > 0,
        "sizes must be positive"
    );
    local_writes(&args)?;
    println!();
    apply(&args).await?;
    Ok(())
}
