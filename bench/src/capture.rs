//! A burst of the app's backend writes into a mirrored table
//! (docs/tables.md): rows inserted by the app in one statement, each
//! queued by the capture trigger in the app's transaction, then applied
//! by a running node, at most 1,000 (or 8 MiB) per transaction.
//!
//! Figures: the app's insert with the trigger against the same insert
//! into an unmirrored copy of the table (baseline, same run, same
//! database): what capturing costs the app's transaction; the time until
//! the node had applied every row, and its rate against Ferry's own push
//! of the same rows (`Store::push`, batches of 1,000, same run); and the
//! node's resident memory before, at its peak (sampled every 50 ms) and
//! after.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use ferry_server::Store;
use sqlx::Connection;

use crate::realtime::{Data, Node, create_space};
use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Rows the app inserts at once.
    #[arg(long, default_value_t = 100_000)]
    writes: usize,
    /// Runs, each on a fresh database.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The app's insert of `n` todos into `table`, in one statement.
fn insert(table: &str, n: usize) -> String {
    format!(
        "INSERT INTO {table} (space_id, id, title, done, priority, list)
         SELECT 'burst', 'todo-' || lpad(g::text, 8, '0'), 'Buy ' || g || ' things at the corner shop',
                g % 3 = 0, g % 5, 'groceries-' || (g % 17)
         FROM generate_series(1, {n}) g"
    )
}

/// Ferry's own push of the same rows, batches of 1,000, on a fresh store.
async fn pushed(n: usize) -> anyhow::Result<Duration> {
    let (store, _guard) = workload::fresh(Backend::Postgres).await;
    let space = workload::space(store.as_ref()).await?;
    let h = workload::hlc()?;
    let batches = (0..n.div_ceil(1000))
        .map(|b| workload::batch(b, 1000.min(n - b * 1000), &h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    for batch in batches {
        store.push(&space, batch).await?;
    }
    Ok(start.elapsed())
}

struct Run {
    plain: Duration,
    captured: Duration,
    drained: Duration,
    pushed: Duration,
    memory: [f64; 3],
}

async fn one_run(args: &CaptureArgs) -> anyhow::Result<Run> {
    let data = Data::new(Backend::Postgres).await?;
    let (node, _) = data.nodes()?;
    create_space(&reqwest::Client::new(), &node, "burst").await?;
    let url = data.url();
    let store = ferry_server::store::PgStore::connect(&url).await?;
    let schema = serde_json::to_string(&workload::mirrored_schema()?)?;
    store.apply_app_schema(&schema, 0).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut app = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql("CREATE TABLE todos_plain (LIKE todos INCLUDING ALL)")
        .execute(&mut app)
        .await?;
    let start = Instant::now();
    sqlx::raw_sql(&insert("todos_plain", args.writes))
        .execute(&mut app)
        .await?;
    let plain = start.elapsed();

    let before = rss_mib(&node)?;
    let start = Instant::now();
    sqlx::raw_sql(&insert("todos", args.writes))
        .execute(&mut app)
        .await?;
    let captured = start.elapsed();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        peak = peak.max(rss_mib(&node)?);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.captured")
            .fetch_one(&mut app)
            .await?;
        if left == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{left} rows still queued after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = start.elapsed();
    let after = rss_mib(&node)?;
    let head: i64 = sqlx::query_scalar("SELECT seq FROM ferry.spaces WHERE id = 'burst'")
        .fetch_one(&mut app)
        .await?;
    ensure!(
        usize::try_from(head)? == args.writes,
        "the space holds {head} commits of {} rows",
        args.writes
    );
    drop(node);
    let pushed = pushed(args.writes)
        .await
        .context("Ferry's push of the same rows")?;
    Ok(Run {
        plain,
        captured,
        drained,
        pushed,
        memory: [before, peak, after],
    })
}

fn rss_mib(node: &Node) -> anyhow::Result<f64> {
    Ok(node.rss()? as f64 / (1024.0 * 1024.0))
}

pub async fn run(args: CaptureArgs) -> anyhow::Result<()> {
    ensure!(args.writes > 0 && args.runs > 0, "sizes must be positive");
    println!(
        "A burst of {} rows inserted by the app in one statement into a mirrored table, applied \
         by one running node; {} runs, each on a fresh database",
        args.writes, args.runs
    );
    let mut rows: [(&str, Vec<f64>, usize); 9] = [
        ("app insert, plain table s", vec![], 3),
        ("app insert, mirrored s", vec![], 3),
        ("ratio mirrored/plain", vec![], 2),
        ("all applied after s", vec![], 2),
        ("applied rows/s", vec![], 0),
        ("ratio applied/Store::push", vec![], 2),
        ("node memory before MiB", vec![], 1),
        ("node memory peak MiB", vec![], 1),
        ("node memory after MiB", vec![], 1),
    ];
    let n = args.writes as f64;
    for _ in 0..args.runs {
        let r = one_run(&args).await?;
        let rate = n / r.drained.as_secs_f64();
        let figures = [
            r.plain.as_secs_f64(),
            r.captured.as_secs_f64(),
            r.captured.as_secs_f64() / r.plain.as_secs_f64(),
            r.drained.as_secs_f64(),
            rate,
            rate / (n / r.pushed.as_secs_f64()),
            r.memory[0],
            r.memory[1],
            r.memory[2],
        ];
        for (row, x) in rows.iter_mut().zip(figures) {
            row.1.push(x);
        }
    }
    workload::header("");
    for (name, xs, decimals) in rows {
        workload::row(name, xs, decimals);
    }
    Ok(())
}
