//! Ferry beside a peer sync engine, Triplit (`@triplit/server` and
//! `@triplit/client` from the npm registry, installed by
//! `bench/peer/install`), on one workload: N clients each write M records,
//! all at once, and the clock stops when every client holds all N×M.
//!
//! Each engine is driven by its own client library: Ferry by `ferry-client`
//! (a `Replica` and a `Syncer` per client, with its default settings), Triplit
//! by `TriplitClient` in Node (`bench/peer/triplit-clients.mjs`). Both servers
//! keep their data in SQLite and run in a process of their own; where the
//! machine has two cores or more the server is pinned to the first and the
//! clients to the second (`taskset`). Durability differs and is printed with
//! the figures: Ferry's server commits with `synchronous = FULL` (a write it
//! acknowledged survives a power cut), Triplit's with `synchronous = NORMAL`
//! (it survives the process being killed); the clients of both use WAL with
//! `synchronous = NORMAL`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::{Query, Remote, Replica, ReplicaConfig, SyncConfig, Syncer, Token};
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::realtime::{Data, Node, create_space};
use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Clients, all writing at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records each client writes.
    #[arg(long, default_value_t = 2500)]
    records: usize,
    /// Runs of each engine, alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the peer is installed (bench/peer, after bench/peer/install).
    #[arg(long, default_value = "bench/peer")]
    peer_dir: PathBuf,
}

/// The two CPUs to pin the server and the clients to, when there are two.
fn cpus() -> Option<(usize, usize)> {
    let enough = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let taskset = Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    (enough && taskset).then_some((0, 1))
}

/// What one run of an engine measured.
struct Run {
    /// Until every client's writes were in its own local store.
    wrote: Duration,
    /// Until every client held every record.
    all: Duration,
}

/// Pins this process (every thread of it) to `cpu`.
fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset answered {status}");
    Ok(())
}

/// One client's replica and a task counting the records it holds; resolves
/// when it holds `want` (`None` if its feed ended first).
fn holds(
    replica: &Replica,
    space: &SpaceId,
    want: usize,
) -> tokio::task::JoinHandle<Option<Instant>> {
    let mut feed = replica.subscribe();
    let (replica, space) = (replica.clone(), space.clone());
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        loop {
            match feed.recv().await {
                Ok(changed) => {
                    ids.insert(changed.id.to_string());
                }
                // Behind the feed: count what the replica holds instead.
                Err(RecvError::Lagged(_)) => {
                    let (r, s) = (replica.clone(), space.clone());
                    let listed = tokio::task::spawn_blocking(move || {
                        let todos = Collection::new("todos")?;
                        r.list(&s, &todos, &Query::new())
                    })
                    .await;
                    if let Ok(Ok(records)) = listed {
                        ids.extend(records.into_iter().map(|r| r.id.to_string()));
                    }
                }
                Err(RecvError::Closed) => return None,
            }
            if ids.len() >= want {
                return Some(Instant::now());
            }
        }
    })
}

async fn ferry_run(args: &PeerArgs, pin: Option<(usize, usize)>) -> anyhow::Result<Run> {
    let data = Data::new(Backend::Sqlite).await?;
    let node = Node::start_on(&data.url(), pin.map(|p| p.0))?;
    let http = reqwest::Client::new();
    create_space(&http, &node, "peer").await?;
    let space = SpaceId::new("peer")?;
    let dir = tempfile::tempdir()?;
    let want = args.clients * args.records;
    let mut clients = Vec::new();
    for k in 0..args.clients {
        let replica = Replica::open(
            dir.path().join(format!("client-{k}.db")),
            ReplicaConfig::default(),
        )?;
        replica.track(&space)?;
        let done = holds(&replica, &space, want);
        let remote = Remote::new(&node.url, Arc::new(Token(node.token.clone())))?;
        let syncer = Syncer::start(
            replica.clone(),
            remote,
            vec![space.clone()],
            SyncConfig::default(),
        );
        clients.push((replica, syncer, done));
    }
    // Connected and listening before the clock starts, as Triplit's are.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(k, (replica, _, _))| {
            let (replica, space, m) = (replica.clone(), space.clone(), args.records);
            tokio::task::spawn_blocking(move || -> anyhow::Result<Instant> {
                let todos = Collection::new("todos")?;
                for j in 0..m {
                    let i = k * m + j;
                    let fields: Map<String, Value> = workload::fields(i)
                        .into_iter()
                        .map(|(n, v)| (n.to_owned(), v))
                        .collect();
                    replica.put(
                        &space,
                        &todos,
                        &RecordId::new(workload::record_id(i))?,
                        fields,
                    )?;
                }
                Ok(Instant::now())
            })
        })
        .collect();
    let mut wrote = start;
    for w in writers {
        wrote = wrote.max(w.await.context("a writer failed")??);
    }
    let deadline = Duration::from_secs(120);
    let mut all = start;
    for (_, syncer, done) in clients {
        let at = tokio::time::timeout(deadline, done)
            .await
            .context("a Ferry client never held every record")??
            .context("a Ferry client's change feed ended")?;
        all = all.max(at);
        syncer.stop().await;
    }
    Ok(Run {
        wrote: wrote - start,
        all: all - start,
    })
}

/// A Triplit server in a child process; stops when dropped.
struct Triplit {
    child: Child,
    port: u16,
}

impl Triplit {
    fn start(peer: &Path, data: &Path, secret: &str, cpu: Option<usize>) -> anyhow::Result<Self> {
        let mut child = workload::on_cpu("node", cpu)
            .arg(peer.join("triplit-server.mjs"))
            .env("TRIPLIT_SECRET", secret)
            .env("LOCAL_DATABASE_URL", data.join("server.db"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start node")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // The server logs to its stdout; it must never find the pipe closed.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let started: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the Triplit server did not start: {line:?}"))?;
        let port = started["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .context("no port")?;
        Ok(Triplit { child, port })
    }
}

impl Drop for Triplit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn triplit_run(args: &PeerArgs, pin: Option<(usize, usize)>) -> anyhow::Result<Run> {
    let data = tempfile::tempdir()?;
    let secret = "ferry-bench-peer-secret-ferry-bench";
    let server = Triplit::start(&args.peer_dir, data.path(), secret, pin.map(|p| p.0))?;
    let out = workload::on_cpu("node", pin.map(|p| p.1))
        .arg(args.peer_dir.join("triplit-clients.mjs"))
        .args(["--port", &server.port.to_string(), "--secret", secret])
        .args(["--clients", &args.clients.to_string()])
        .args(["--records", &args.records.to_string()])
        .arg("--dir")
        .arg(data.path())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the Triplit clients")?;
    if !out.status.success() {
        bail!("the Triplit clients failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("the Triplit clients printed {text:?}"))?;
    let ms = |key: &str| {
        figures[key]
            .as_f64()
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .with_context(|| format!("no {key}"))
    };
    Ok(Run {
        wrote: ms("wrote_ms")?,
        all: ms("all_ms")?,
    })
}

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.clients > 0 && args.records > 0,
        "sizes must be positive"
    );
    anyhow::ensure!(
        args.peer_dir.join("node_modules/@triplit/server").is_dir(),
        "the peer is not installed: run bench/peer/install"
    );
    let pin = cpus();
    if let Some((_, clients)) = pin {
        pin_self(clients)?;
    }
    let total = (args.clients * args.records) as f64;
    println!(
        "{} clients each writing {} records (4 fields, ~100 bytes) at once, until every client \
         holds all {}; {} runs; {}",
        args.clients,
        args.records,
        args.clients * args.records,
        args.runs,
        match pin {
            Some((s, c)) => format!("servers on CPU {s}, clients on CPU {c}"),
            None => "not pinned".to_owned(),
        }
    );
    println!(
        "Ferry: server on SQLite (WAL, synchronous=FULL), ferry-client replicas (WAL, \
         synchronous=NORMAL), default sync settings (200 ms debounce), realtime over WebSocket"
    );
    println!(
        "Triplit {}: @triplit/server on SQLite (WAL, synchronous=NORMAL), @triplit/client with \
         SQLite storage (WAL, synchronous=NORMAL), WebSocket",
        peer_version(&args.peer_dir).unwrap_or_else(|| "(unknown version)".to_owned())
    );
    let mut times: [(&str, Vec<f64>); 4] = [
        ("triplit: local writes", vec![]),
        ("ferry: local writes", vec![]),
        ("triplit: all hold all", vec![]),
        ("ferry: all hold all", vec![]),
    ];
    let mut rates: [(&str, Vec<f64>); 3] = [
        ("triplit", vec![]),
        ("ferry", vec![]),
        ("ratio ferry/triplit", vec![]),
    ];
    for _ in 0..args.runs {
        let t = triplit_run(&args, pin)?;
        let f = ferry_run(&args, pin).await?;
        let secs = [t.wrote, f.wrote, t.all, f.all].map(|d| d.as_secs_f64());
        for (row, x) in times.iter_mut().zip(secs) {
            row.1.push(x);
        }
        let (ts, fs) = (secs[2], secs[3]);
        for (row, x) in rates.iter_mut().zip([total / ts, total / fs, ts / fs]) {
            row.1.push(x);
        }
    }
    workload::header("s");
    for (name, xs) in times {
        workload::row(name, xs, 2);
    }
    workload::header("records/s, all hold all");
    for (name, xs) in rates {
        let decimals = if name.starts_with("ratio") { 2 } else { 0 };
        workload::row(name, xs, decimals);
    }
    Ok(())
}

/// The installed `@triplit/server`'s version.
fn peer_version(peer: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(peer.join("node_modules/@triplit/server/package.json")).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["version"]
        .as_str()
        .map(|v| format!("@triplit/server {v}"))
}
