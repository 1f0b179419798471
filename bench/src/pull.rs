//! Pull throughput: paging a space of N records by cursor with
//! `Store::pull`, and the same pages encoded as the JSON of the answer,
//! against a raw read of the same rows by `seq` in pages of the same size
//! from the same database.

use std::time::{Duration, Instant};

use clap::Args;
use ferry_core::protocol::PullResponse;
use ferry_server::store::PullQuery;
use ferry_server::testing::Guard;

use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Records in the space.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Records per page.
    #[arg(long, default_value_t = 1000)]
    page: u32,
    /// Runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// The same pages read straight from the database Ferry wrote, by `seq`.
async fn raw_pages(guard: &Guard, records: usize, page: u32) -> anyhow::Result<Duration> {
    const SQL: &str = "SELECT collection, id, seq, fields, deleted FROM records
                       WHERE sid = (SELECT sid FROM spaces WHERE id = 'user:bench')
                         AND seq > $1 ORDER BY seq LIMIT $2";
    let mut seen = 0;
    let start = Instant::now();
    match guard {
        Guard::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(dir.path().join("ferry.db"))?;
            let mut stmt = conn.prepare(&SQL.replace('$', "?"))?;
            let mut cursor = 0i64;
            loop {
                let rows: Vec<(String, String, i64, String, Option<String>)> = stmt
                    .query_map(rusqlite::params![cursor, page], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect::<Result<_, _>>()?;
                let Some(last) = rows.last() else { break };
                cursor = last.2;
                seen += rows.len();
            }
        }
        Guard::Postgres(db) => {
            let mut conn = db.connect().await;
            let mut cursor = 0i64;
            loop {
                let rows: Vec<(String, String, i64, String, Option<String>)> = sqlx::query_as(SQL)
                    .bind(cursor)
                    .bind(i64::from(page))
                    .fetch_all(&mut conn)
                    .await?;
                let Some(last) = rows.last() else { break };
                cursor = last.2;
                seen += rows.len();
            }
        }
    }
    anyhow::ensure!(seen == records, "read {seen} of {records} rows");
    Ok(start.elapsed())
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.records > 0 && args.page > 0,
        "sizes must be positive"
    );
    let (store, guard) = workload::fresh(args.backend).await;
    let space = workload::space(store.as_ref()).await?;
    let h = workload::hlc()?;
    let fill = 1000;
    for b in 0..args.records.div_ceil(fill) {
        let size = fill.min(args.records - b * fill);
        store.push(&space, workload::batch(b, size, &h)?).await?;
    }
    println!(
        "pull from {:?}: {} records (4 fields, ~100 bytes) in pages of {}, {} runs",
        args.backend, args.records, args.page, args.runs
    );
    let (mut raw, mut query_only, mut with_json, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0usize;
    for _ in 0..args.runs {
        let raw_rate = args.records as f64
            / raw_pages(&guard, args.records, args.page)
                .await?
                .as_secs_f64();
        let (mut queried, mut encoded) = (Duration::ZERO, Duration::ZERO);
        let mut cursor = 0;
        let mut seen = 0;
        bytes = 0;
        loop {
            let start = Instant::now();
            let page = store
                .pull(
                    &space,
                    PullQuery {
                        cursor,
                        limit: args.page,
                        collections: None,
                        conflicts: None,
                    },
                )
                .await?;
            queried += start.elapsed();
            let start = Instant::now();
            let (n, next, more) = (page.records.len(), page.cursor, page.has_more);
            let body = serde_json::to_vec(&PullResponse {
                changes: page.records,
                reported: page.conflicts,
                cursor: page.cursor,
                has_more: page.has_more,
                hlc: h.clone(),
                schema_version: 0,
                role: None,
            })?;
            encoded += start.elapsed();
            bytes += body.len();
            seen += n;
            cursor = next;
            if !more {
                break;
            }
        }
        anyhow::ensure!(
            seen == args.records,
            "pulled {seen} of {} records",
            args.records
        );
        let ours = seen as f64 / queried.as_secs_f64();
        raw.push(raw_rate);
        query_only.push(ours);
        with_json.push(seen as f64 / (queried + encoded).as_secs_f64());
        ratios.push(ours / raw_rate);
    }
    workload::header("records/s");
    workload::row("raw SELECT by seq", raw, 0);
    workload::row("Store::pull", query_only, 0);
    workload::row("Store::pull + JSON encoding", with_json, 0);
    workload::row("ratio Store::pull/raw", ratios, 2);
    println!("{} bytes of JSON per record", bytes / args.records);
    Ok(())
}
