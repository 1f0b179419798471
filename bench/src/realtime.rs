//! Realtime: how soon a write is announced to another connection, what an
//! idle subscriber costs the server, and how long one signal takes to reach
//! every subscriber.
//!
//! The server runs in a child process (this binary's hidden `serve`
//! command, release-built like the rest), so that its memory is measured
//! apart from the clients'. With PostgreSQL two nodes run, and the writer
//! and the listener talk to different ones: the signal crosses
//! `LISTEN/NOTIFY`.
//!
//! Baselines, from the same run and the same sockets:
//! - latency: the push's own round trip (the time to its 200), which the
//!   signal can hardly beat since it is sent after the commit;
//! - fan-out: every subscriber sending a `ping` and getting its `pong`,
//!   one message through each connection like the fan-out itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_core::{ClientId, UserId};
use ferry_server::clock::wall_ms;
use ferry_server::testing::{TestDatabase, WsClient};
use ferry_server::{AppState, Config, Database, Settings};
use serde_json::{Value, json};

use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct RealtimeArgs {
    /// The database of the server (with PostgreSQL, two nodes).
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Writes whose signal latency is measured, per run.
    #[arg(long, default_value_t = 500)]
    writes: usize,
    /// Writes per second (a fixed schedule, not one after the other).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Idle subscribers of the fan-out.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database URL.
    #[arg(long)]
    database: String,
}

/// The hidden `serve` command: a Ferry server on 127.0.0.1:0 that prints
/// `{address} {token}` and stops when its stdin closes.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        database: Some(args.database),
        ..Config::default()
    };
    let store = Database::of(&config)?.open().await?;
    let mut settings = Settings::new(ClientId::new("bench-node")?, "");
    // As `ferry serve` does: as many connections as the files allow.
    let open_files = rlimit::increase_nofile_limit(u64::MAX)?;
    settings.http.max_connections = ferry_server::http::connections_within(open_files);
    // One bench user stands for every device: it creates a space for each.
    settings.quotas = ferry_server::spaces::quota::SpaceQuotas {
        max_owned_spaces: 1_000_000,
        max_members: 1_000,
        burst: 1_000_000,
        refill: Duration::from_millis(1),
    };
    let state = AppState::new(store, settings).await?;
    let token = state
        .issuer
        .get()
        .mint(&UserId::new("bench")?, wall_ms() / 1000, 3600)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{} {token}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await;
    };
    ferry_server::server::run(listener, state, stdin_closed).await?;
    Ok(())
}

/// A server in a child process.
pub(crate) struct Node {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Node {
    pub(crate) fn start(database: &str) -> anyhow::Result<Node> {
        Node::start_on(database, None)
    }

    /// A server pinned to `cpu` (with `taskset`), when one is given.
    pub(crate) fn start_on(database: &str, cpu: Option<usize>) -> anyhow::Result<Node> {
        let mut child = workload::on_cpu(std::env::current_exe()?, cpu)
            .args(["serve", "--database", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let (url, token) = line
            .trim()
            .split_once(' ')
            .with_context(|| format!("the server did not start: {line:?}"))?;
        Ok(Node {
            url: url.to_owned(),
            token: token.to_owned(),
            child,
        })
    }

    /// The CPU time the child has used, user and system, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command's name (which may hold spaces): state
        // is the first, utime the 12th, stime the 13th, in clock ticks of
        // 1/100 s (USER_HZ on Linux).
        let rest = stat.rsplit_once(')').context("no command name")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
        };
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// The child's resident memory in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS")?
            .trim()
            .trim_end_matches(" kB")
            .parse()?;
        Ok(kb * 1024)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Where the nodes keep their data; removed when dropped.
pub(crate) enum Data {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Data {
    pub(crate) async fn new(backend: Backend) -> anyhow::Result<Data> {
        Ok(match backend {
            Backend::Sqlite => Data::Sqlite(tempfile::tempdir()?),
            Backend::Postgres => Data::Postgres(TestDatabase::create().await),
        })
    }

    /// The servers of a run: one on SQLite; two on PostgreSQL (A, and B
    /// to write through), so that signals cross `LISTEN/NOTIFY`.
    pub(crate) fn nodes(&self) -> anyhow::Result<(Node, Option<Node>)> {
        let url = self.url();
        let a = Node::start(&url)?;
        let b = match self {
            Data::Sqlite(_) => None,
            Data::Postgres(_) => Some(Node::start(&url)?),
        };
        Ok((a, b))
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Data::Sqlite(dir) => format!("sqlite://{}", dir.path().join("ferry.db").display()),
            Data::Postgres(db) => db.url.clone(),
        }
    }
}

/// One push of one new record by a writer whose cursor is `cursor` (the
/// only writer of the space, so the answer's cursor is the new head).
async fn push(
    http: &reqwest::Client,
    node: &Node,
    space: &str,
    cursor: u64,
    n: usize,
) -> anyhow::Result<u64> {
    let body = workload::one_record_push(n, "w", cursor, None)?;
    let response = http
        .post(format!("{}/v1/spaces/{space}/sync", node.url))
        .bearer_auth(&node.token)
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("push answered {}", response.status());
    }
    let answer: Value = response.json().await?;
    answer["cursor"].as_u64().context("no cursor")
}

pub(crate) async fn create_space(
    http: &reqwest::Client,
    node: &Node,
    space: &str,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("{}/v1/spaces", node.url))
        .bearer_auth(&node.token)
        .json(&json!({"id": space, "name": space}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating the space answered {}", response.status());
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Write-to-signal latency of one run: `(signal, push round trip)` per
/// write.
async fn latency_run(
    writer: &Node,
    listener: &Node,
    space: &str,
    first: usize,
    args: &RealtimeArgs,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut ws = WsClient::connect(&listener.url).await;
    ws.auth(&listener.token).await;
    ws.subscribe(&[space]).await;
    // The subscription's first signal: the current cursor, if any.
    let head = match ws.recv_within(Duration::from_millis(200)).await {
        Some(signal) => signal["cursor"].as_u64().context("no cursor")?,
        None => 0,
    };
    let heard: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let sink = heard.clone();
    let reader = tokio::spawn(async move {
        loop {
            let (_, cursor) = ws.signal().await;
            if let Ok(mut heard) = sink.lock() {
                heard.insert(cursor, Instant::now());
            }
        }
    });
    let interval = Duration::from_micros(1_000_000 / args.rate.max(1));
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(args.writes);
    let mut cursor = head;
    for i in 0..args.writes {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let at = Instant::now();
        cursor = push(&http, writer, space, cursor, first + i).await?;
        sent.push((cursor, at, at.elapsed()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut signal = Vec::new();
    let mut round_trip = Vec::new();
    for (cursor, at, rt) in sent {
        let arrived = covered(&heard, cursor, deadline).await?;
        signal.push(arrived.saturating_duration_since(at));
        round_trip.push(rt);
    }
    reader.abort();
    Ok((signal, round_trip))
}

/// When the listener first heard of `cursor`: its own signal, or a later
/// one that replaced it (a connection sends only the newest cursor of a
/// space when signals come faster than it writes them), polling until
/// `deadline`.
async fn covered(
    heard: &Mutex<BTreeMap<u64, Instant>>,
    cursor: u64,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    loop {
        let first = heard
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .range(cursor..)
            .map(|(_, at)| *at)
            .min();
        match first {
            Some(at) => return Ok(at),
            None if Instant::now() > deadline => bail!("cursor {cursor} was never announced"),
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Opens `n` subscribers of `space` on `node`, 200 at a time.
async fn subscribers(node: &Node, space: &str, n: usize) -> anyhow::Result<Vec<WsClient>> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let opening: Vec<_> = (0..200.min(n - clients.len()))
            .map(|_| {
                let (url, token, space) = (node.url.clone(), node.token.clone(), space.to_owned());
                tokio::spawn(async move {
                    let mut c = WsClient::connect(&url).await;
                    c.auth(&token).await;
                    c.subscribe(&[&space]).await;
                    c
                })
            })
            .collect();
        for task in opening {
            clients.push(task.await?);
        }
    }
    Ok(clients)
}

/// The time until every client got one message, each awaited by a task of
/// its own; the clients come back.
async fn all_receive(
    clients: Vec<WsClient>,
    ping_first: bool,
    trigger: impl std::future::Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<(Duration, Vec<WsClient>)> {
    let (go, _) = tokio::sync::broadcast::channel::<()>(1);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let mut go = go.subscribe();
            tokio::spawn(async move {
                let _ = go.recv().await;
                if ping_first {
                    c.send(json!({"type": "ping"})).await;
                }
                let message = c.recv().await;
                (Instant::now(), message, c)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    go.send(()).ok();
    trigger.await?;
    let mut last = start;
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (at, message, client) = task.await?;
        if message["type"] != if ping_first { "pong" } else { "sync-available" } {
            bail!("unexpected message {message}");
        }
        last = last.max(at);
        back.push(client);
    }
    Ok((last - start, back))
}

pub async fn run(args: RealtimeArgs) -> anyhow::Result<()> {
    let data = Data::new(args.backend).await?;
    let (a, b) = data.nodes()?;
    let writer = b.as_ref().unwrap_or(&a);
    let http = reqwest::Client::new();
    create_space(&http, writer, "latency").await?;
    create_space(&http, writer, "fanout").await?;

    let route = if b.is_some() {
        "written on node B, heard on node A (LISTEN/NOTIFY)"
    } else {
        "one node"
    };
    println!(
        "Write-to-signal latency, {:?}, {route}: {} writes at {}/s, {} runs",
        args.backend, args.writes, args.rate, args.runs
    );
    workload::header("ms");
    let (mut p50, mut p99, mut max, mut rt50, mut rt99, mut ratio) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 0..args.runs {
        let (mut signal, mut rt) =
            latency_run(writer, &a, "latency", run * args.writes, &args).await?;
        signal.sort();
        rt.sort();
        p50.push(percentile(&signal, 0.5));
        p99.push(percentile(&signal, 0.99));
        max.push(percentile(&signal, 1.0));
        rt50.push(percentile(&rt, 0.5));
        rt99.push(percentile(&rt, 0.99));
        ratio.push(percentile(&signal, 0.5) / percentile(&rt, 0.5));
    }
    workload::row("push round trip p50", rt50, 2);
    workload::row("push round trip p99", rt99, 2);
    workload::row("signal p50", p50, 2);
    workload::row("signal p99", p99, 2);
    workload::row("signal max", max, 2);
    workload::row("ratio signal/push p50", ratio, 2);

    println!();
    println!(
        "Fan-out to {} idle WebSocket subscribers of one space, {:?}, {route}, {} runs",
        args.subscribers, args.backend, args.runs
    );
    let before = a.rss()?;
    let clients = subscribers(&a, "fanout", args.subscribers).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = a.rss()?;
    let per_connection = after.saturating_sub(before) as f64 / args.subscribers as f64;
    println!(
        "server memory: {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KB per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_connection / 1024.0
    );
    workload::header("ms");
    let (mut fan, mut pings, mut ratios) = (vec![], vec![], vec![]);
    let mut clients = clients;
    for run in 0..args.runs {
        let (ping, back) = all_receive(clients, true, async { Ok(0) }).await?;
        let n = 1_000_000_000 + run;
        let commit = push(&http, writer, "fanout", run as u64, n);
        let (took, back) = all_receive(back, false, commit).await?;
        clients = back;
        pings.push(ping.as_secs_f64() * 1000.0);
        fan.push(took.as_secs_f64() * 1000.0);
        ratios.push(took.as_secs_f64() / ping.as_secs_f64());
    }
    workload::row("ping/pong through all", pings, 1);
    workload::row("one commit heard by all", fan, 1);
    workload::row("ratio fan-out/ping-pong", ratios, 2);
    drop(clients);
    Ok(())
}
