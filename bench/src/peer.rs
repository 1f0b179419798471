//! Ferry beside two peer sync engines, Triplit and PouchDB
//! ([`crate::peer_engine`], from the npm registry, installed by
//! `bench/peer/install`), on one workload: N clients each write M records,
//! all at once, and the clock stops when every client holds all N×M.
//!
//! Each engine is driven by its own client library: Ferry by `ferry-client`
//! (a `Replica` and a `Syncer` per client, with its default settings), the
//! peers by their clients in Node (`bench/peer/*-clients.mjs`). Every
//! server runs in a process of its own; where the machine has two cores or
//! more the server is pinned to the first and the clients to the second
//! (`taskset`). Durability differs and is printed with the figures:
//! Ferry's server commits with `synchronous = FULL` (a write it
//! acknowledged survives a power cut), Triplit's with `synchronous =
//! NORMAL` and PouchDB's LevelDB without a sync (both survive the process
//! being killed, not a power cut); Ferry's and Triplit's clients use WAL
//! with `synchronous = NORMAL`, PouchDB's LevelDB without a sync.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ferry_client::{Query, Remote, Replica, ReplicaConfig, SyncConfig, Syncer, Token};
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::peer_engine::PEERS;
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

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.clients > 0 && args.records > 0,
        "sizes must be positive"
    );
    for peer in PEERS {
        anyhow::ensure!(
            peer.installed(&args.peer_dir),
            "the peer {} is not installed: run bench/peer/install",
            peer.name()
        );
    }
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
    for peer in PEERS {
        println!("{}", peer.describe(&args.peer_dir));
    }
    // Per engine (the peers, then Ferry): local writes and all hold all.
    let engines: Vec<&str> = PEERS.iter().map(|p| p.name()).chain(["ferry"]).collect();
    let mut wrote: Vec<Vec<f64>> = vec![Vec::new(); engines.len()];
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); engines.len()];
    for _ in 0..args.runs {
        for (k, peer) in PEERS.iter().enumerate() {
            let (w, a) = peer.run(&args.peer_dir, args.clients, args.records, pin)?;
            wrote[k].push(w.as_secs_f64());
            all[k].push(a.as_secs_f64());
        }
        let f = ferry_run(&args, pin).await?;
        wrote[PEERS.len()].push(f.wrote.as_secs_f64());
        all[PEERS.len()].push(f.all.as_secs_f64());
    }
    let ferry = PEERS.len();
    let ratio = |xs: &[Vec<f64>], k: usize| -> Vec<f64> {
        xs[ferry].iter().zip(&xs[k]).map(|(f, p)| f / p).collect()
    };
    workload::header("s");
    for (k, name) in engines.iter().enumerate() {
        workload::row(&format!("{name}: local writes"), wrote[k].clone(), 2);
    }
    for (k, name) in engines.iter().enumerate() {
        workload::row(&format!("{name}: all hold all"), all[k].clone(), 2);
    }
    for (k, peer) in PEERS.iter().enumerate() {
        // Ferry's time over the peer's: below 1, Ferry's writes were faster.
        workload::row(
            &format!("ratio local writes ferry/{}", peer.name()),
            ratio(&wrote, k),
            2,
        );
    }
    workload::header("records/s, all hold all");
    for (k, name) in engines.iter().enumerate() {
        workload::row(name, all[k].iter().map(|s| total / s).collect(), 0);
    }
    for (k, peer) in PEERS.iter().enumerate() {
        // The peer's time over Ferry's: Ferry's rate over the peer's.
        let rates: Vec<f64> = all[k].iter().zip(&all[ferry]).map(|(p, f)| p / f).collect();
        workload::row(&format!("ratio ferry/{}", peer.name()), rates, 2);
    }
    Ok(())
}
