//! Write-to-visible latency: from the moment one client sends a write to
//! the moment it is in another client's replica, where its app sees it.
//!
//! The writer sends one new record at a time on a fixed schedule (each send
//! in a task of its own, so a slow answer never delays the next send and
//! stalls show in the figures instead of hiding). The reader is a real
//! native replica (`ferry-client`'s `Replica` and `Syncer`, realtime on),
//! whose change feed says when each record landed. The server runs in a
//! child process as in the realtime workload; with PostgreSQL the writer
//! and the reader use different nodes. Latencies go into HDR histograms.
//!
//! Baseline, from the same run: the writer's own round trip (its `200`),
//! the least any client can know of a write.
//!
//! With `--from-table` (PostgreSQL), the writer is the app's backend
//! instead: one `INSERT` into the table the collection is mirrored into
//! (docs/tables.md), each in its own transaction from a pool, as an ORM
//! makes it; the capture trigger queues it and a node applies it. The
//! baseline is then the insert's own round trip (its commit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::{Remote, Replica, ReplicaConfig, Source, SyncConfig, Syncer, Token};
use ferry_core::SpaceId;
use hdrhistogram::Histogram;

use crate::realtime::{Data, Node, create_space};
use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct VisibleArgs {
    /// The database of the server (with PostgreSQL, two nodes).
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Writes per run.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Writes per second, on a fixed schedule.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Write as the app's backend does, with SQL into the collection's
    /// mirrored table (PostgreSQL: its own connection pool; SQLite: its own
    /// connection to Ferry's file).
    #[arg(long)]
    from_table: bool,
}

/// Who writes: a device through a node, or the app's backend into the
/// mirrored table.
#[derive(Clone)]
enum Writer {
    Device { url: String, token: String },
    Backend(sqlx::PgPool),
    File(Arc<Mutex<rusqlite::Connection>>),
}

impl Writer {
    /// One write of record `n` into `space`; returns its round trip.
    async fn write(
        &self,
        http: &reqwest::Client,
        space: &str,
        n: usize,
    ) -> anyhow::Result<Duration> {
        match self {
            Writer::Device { url, token } => write(http, url, token, space, n).await,
            Writer::Backend(pool) => {
                let [title, done, priority, list] = workload::fields(n).map(|(_, v)| v);
                let start = Instant::now();
                sqlx::query(
                    "INSERT INTO todos (space_id, id, title, done, priority, list)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(space)
                .bind(workload::record_id(n))
                .bind(title.as_str())
                .bind(done.as_bool())
                .bind(priority.as_i64())
                .bind(list.as_str())
                .execute(pool)
                .await?;
                Ok(start.elapsed())
            }
            Writer::File(file) => {
                let (file, space) = (file.clone(), space.to_owned());
                tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
                    let [title, done, priority, list] = workload::fields(n).map(|(_, v)| v);
                    let file = file
                        .lock()
                        .map_err(|_| anyhow::anyhow!("the writer's connection"))?;
                    let start = Instant::now();
                    file.execute(
                        "INSERT INTO todos (space_id, id, title, done, priority, list)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        rusqlite::params![
                            space,
                            workload::record_id(n),
                            title.as_str(),
                            done.as_bool(),
                            priority.as_i64(),
                            list.as_str()
                        ],
                    )?;
                    Ok(start.elapsed())
                })
                .await?
            }
        }
    }
}

/// The mirrored schema applied to the nodes' database, and a pool to
/// write its table as the backend.
async fn backend_writer(url: &str) -> anyhow::Result<Writer> {
    use ferry_server::Store;
    let file = url.strip_prefix("sqlite://").map(std::path::PathBuf::from);
    let store: Box<dyn Store> = match &file {
        Some(path) => Box::new(ferry_server::store::SqliteStore::open(path.clone()).await?),
        None => Box::new(ferry_server::store::PgStore::connect(url).await?),
    };
    let schema = serde_json::to_string(&workload::mirrored_schema()?)?;
    let (version, _) = store.app_schema().await?;
    store.apply_app_schema(&schema, version).await?;
    // Every node holds it within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(path) = file {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        return Ok(Writer::File(Arc::new(Mutex::new(conn))));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    Ok(Writer::Backend(pool))
}

/// One write of record `n`, alone in its batch; returns its round trip.
async fn write(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    space: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    // `limit: 1`: the writer does not want the space back, only its answer.
    let body = workload::one_record_push(n, "v", 0, Some(1))?;
    let start = Instant::now();
    let response = http
        .post(format!("{url}/v1/spaces/{space}/sync"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    if !status.is_success() {
        bail!("write answered {status}");
    }
    Ok(start.elapsed())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One run: (write-to-visible, round trip) histograms in µs.
async fn one_run(
    writer: &Writer,
    reader: &Node,
    space: &str,
    first: usize,
    args: &VisibleArgs,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("reader.db"), ReplicaConfig::default())?;
    let remote = Remote::new(&reader.url, Arc::new(Token(reader.token.clone())))?;
    let space_id = SpaceId::new(space)?;
    let landed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut feed = replica.subscribe();
    let sink = landed.clone();
    let listener = tokio::spawn(async move {
        loop {
            let changed = match feed.recv().await {
                Ok(changed) => changed,
                // Only ever behind by a burst; a record whose news was
                // skipped then never lands, and the run says so.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            if changed.source == Source::Remote
                && let Ok(mut landed) = sink.lock()
            {
                landed
                    .entry(changed.id.to_string())
                    .or_insert_with(Instant::now);
            }
        }
    });
    let syncer = Syncer::start(
        replica.clone(),
        remote,
        vec![space_id],
        SyncConfig::default(),
    );
    // Caught up and listening before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let interval = Duration::from_micros(1_000_000 / args.rate.max(1));
    let start = tokio::time::Instant::now();
    let mut sends = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let n = first + i;
        let (http, writer) = (http.clone(), writer.clone());
        let space = space.to_owned();
        let at = Instant::now();
        sends.push((
            workload::record_id(n),
            at,
            tokio::spawn(async move { writer.write(&http, &space, n).await }),
        ));
    }
    let mut visible = Histogram::<u64>::new(3)?;
    let mut round_trip = Histogram::<u64>::new(3)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, at, task) in sends {
        round_trip.record(micros(task.await.context("a write task failed")??))?;
        let arrived = workload::arrival(&landed, &id, deadline).await?;
        visible.record(micros(arrived.saturating_duration_since(at)))?;
    }
    syncer.stop().await;
    listener.abort();
    Ok((visible, round_trip))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(args: VisibleArgs) -> anyhow::Result<()> {
    let data = Data::new(args.backend).await?;
    let (a, b) = data.nodes()?;
    let through = b.as_ref().unwrap_or(&a);
    let http = reqwest::Client::new();
    // A space per run: each run's fresh reader starts on an empty space.
    for run in 0..args.runs {
        create_space(&http, through, &format!("visible-{run}")).await?;
    }
    let writer = if args.from_table {
        backend_writer(&data.url()).await?
    } else {
        Writer::Device {
            url: through.url.clone(),
            token: through.token.clone(),
        }
    };
    let route = match (args.from_table, b.is_some()) {
        (true, true) => {
            "written by the backend into the mirrored table, read through node A of two"
        }
        (true, false) => {
            "written by another process into the mirrored table in Ferry's file, one node"
        }
        (false, true) => "written through node B, read through node A",
        (false, false) => "one node",
    };
    println!(
        "Write-to-visible latency in a second client's replica, {:?}, {route}: {} writes at {}/s \
         (fixed schedule), {} runs",
        args.backend, args.writes, args.rate, args.runs
    );
    workload::header("ms");
    let mut rows: [(&str, Vec<f64>); 8] = [
        ("write round trip p50", vec![]),
        ("write round trip p99", vec![]),
        ("visible p50", vec![]),
        ("visible p99", vec![]),
        ("visible p99.9", vec![]),
        ("visible max", vec![]),
        ("ratio visible/round trip p50", vec![]),
        ("ratio visible/round trip p99", vec![]),
    ];
    for run in 0..args.runs {
        let space = format!("visible-{run}");
        let (visible, rt) = one_run(&writer, &a, &space, run * args.writes, &args).await?;
        let figures = [
            ms(&rt, 0.5),
            ms(&rt, 0.99),
            ms(&visible, 0.5),
            ms(&visible, 0.99),
            ms(&visible, 0.999),
            visible.max() as f64 / 1000.0,
            ms(&visible, 0.5) / ms(&rt, 0.5),
            ms(&visible, 0.99) / ms(&rt, 0.99),
        ];
        for (row, x) in rows.iter_mut().zip(figures) {
            row.1.push(x);
        }
    }
    for (name, xs) in rows {
        workload::row(name, xs, 2);
    }
    Ok(())
}
