//! Initial sync: a fresh native replica (`ferry-client`) pulling a whole
//! space of N records over HTTP from an embedded server on SQLite or
//! PostgreSQL, in the same process (server and client share the machine's
//! cores).
//!
//! Baseline, from the same run: the least any sync of those rows must do,
//! without a network between the two sides. Reading the same rows out of
//! the server's database as fast as it gives them (PostgreSQL:
//! `COPY (SELECT ...) TO STDOUT`; SQLite: one `SELECT` stepped through),
//! plus inserting them straight into a fresh SQLite file with the replica's
//! settings in transactions of 1,000. The two are timed one after the
//! other and their times added.

use std::time::{Duration, Instant};

use clap::Args;
use ferry_client::{Replica, ReplicaConfig, sync_space};
use ferry_server::testing::Guard;
use futures_util::StreamExt;
use sqlx::Connection;

use crate::workload::{self, Backend};
use crate::{client, settle};

#[derive(Debug, Args)]
pub struct InitialArgs {
    /// The server's store.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Records in the space.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Runs, after a warm-up run that is printed apart.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const ROWS: &str = "SELECT collection, id, fields FROM records
    WHERE sid = (SELECT sid FROM spaces WHERE id = 'user:bench') ORDER BY seq";

/// Reads every row of the space out of the server's database; the time it
/// took.
async fn raw_read(guard: &Guard, records: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let rows = match guard {
        Guard::Sqlite(dir) => {
            let path = dir.path().join("ferry.db");
            tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
                let conn = rusqlite::Connection::open(path)?;
                let mut stmt = conn.prepare(ROWS)?;
                let mut rows = stmt.query([])?;
                let (mut n, mut bytes) = (0, 0);
                while let Some(row) = rows.next()? {
                    bytes += row.get_ref(2)?.as_str()?.len();
                    n += 1;
                }
                anyhow::ensure!(bytes > 0, "no fields read");
                Ok(n)
            })
            .await??
        }
        Guard::Postgres(db) => {
            let mut conn = db.connect().await;
            let mut lines = 0;
            {
                let mut copy = conn
                    .copy_out_raw(&format!("COPY ({ROWS}) TO STDOUT"))
                    .await?;
                while let Some(chunk) = copy.next().await {
                    lines += chunk?.iter().filter(|b| **b == b'\n').count();
                }
            }
            let _ = conn.close().await;
            lines
        }
    };
    anyhow::ensure!(rows == records, "read {rows} of {records} rows");
    Ok(start.elapsed())
}

/// A fresh replica's first sync of the whole space; how long it took.
async fn first_sync(remote: &ferry_client::Remote, records: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("replica.db"), ReplicaConfig::default())?;
    let start = Instant::now();
    let report = sync_space(&replica, remote, &client::space()?).await?;
    let took = start.elapsed();
    anyhow::ensure!(
        report.pulled as usize == records,
        "pulled {}",
        report.pulled
    );
    Ok(took)
}

pub async fn run(args: InitialArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0 && args.records > 0, "sizes must be positive");
    let (_served, remote, guard) = client::server(args.backend, args.records).await?;
    let rows = client::rows(args.records)?;
    let read = match args.backend {
        Backend::Sqlite => "raw SELECT from SQLite",
        Backend::Postgres => "raw COPY TO STDOUT",
    };
    println!(
        "Initial sync of {} records (4 fields, ~100 bytes) into a fresh replica from an embedded \
         server on {:?} over HTTP, {} runs",
        args.records, args.backend, args.runs
    );
    println!("{}", settle::settle(&guard).await?);
    let n = args.records as f64;
    // A first run warms the page caches of both sides; it is printed
    // apart, and the table holds the runs after it.
    let warm = first_sync(&remote, args.records).await?;
    println!(
        "warm-up run (not counted): ferry initial sync {:.0} records/s",
        n / warm.as_secs_f64()
    );
    workload::header("records/s");
    let mut rows_out: [(&str, Vec<f64>); 5] = [
        (read, vec![]),
        ("raw batched SQLite insert", vec![]),
        ("raw read + insert", vec![]),
        ("ferry initial sync", vec![]),
        ("ratio ferry/raw", vec![]),
    ];
    for _ in 0..args.runs {
        let read_time = raw_read(&guard, args.records).await?;
        let dir = tempfile::tempdir()?;
        let mut conn = client::raw_db(&dir, "normal")?;
        let insert_time = client::raw_upsert(&mut conn, &rows, 1000)?;
        drop(conn);
        let ours = first_sync(&remote, args.records).await?;
        let raw = read_time + insert_time;
        let figures = [
            n / read_time.as_secs_f64(),
            n / insert_time.as_secs_f64(),
            n / raw.as_secs_f64(),
            n / ours.as_secs_f64(),
            raw.as_secs_f64() / ours.as_secs_f64(),
        ];
        for (row, x) in rows_out.iter_mut().zip(figures) {
            row.1.push(x);
        }
    }
    for (i, (name, xs)) in rows_out.into_iter().enumerate() {
        workload::row(name, xs, if i == 4 { 2 } else { 0 });
    }
    Ok(())
}
