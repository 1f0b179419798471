//! Many devices at once over HTTP: how many one node holds, and what
//! limits it (docs/performance.md, "Many devices at once").
//!
//! Each simulated device has a client id, a personal space and a team
//! space it shares with nine others; it holds a WebSocket subscribed to
//! both, pushes small batches (1 to 10 changes; seven in ten to its own
//! space) when its schedule says so, and when a signal says its team space
//! moved past what it holds, pulls it: one sync loop per device, pushes and
//! pulls one after the other, like a client's. The schedule is open: the
//! run offers a fixed rate of pushes over all devices whatever the server
//! does, and a push's latency counts from when it was due, so a server that
//! falls behind shows it (no coordinated omission).
//!
//! For each offered rate: pushes/s achieved, push p50/p99/p99.9, write to
//! visible on another device of the team (due time to the record arriving
//! in that device's pull or sync answer) p50/p99, the server's CPU (cores
//! busy, and CPU time per push) and resident memory per device. The
//! highest rate held is the highest whose achieved rate is within 5% of
//! what was offered with push p99 ≤ 50 ms.
//!
//! Closed loop, beside the database's own rate in the same run: 1 and 100
//! writers pushing single changes one after another, against raw single-row
//! upserts with a flush each from as many writers (SQLite: a connection and
//! a thread each, `synchronous = FULL`; PostgreSQL: sharing as many
//! connections as Ferry's two nodes may open, `synchronous_commit` as
//! configured).
//!
//! The server runs in a child process (one node on SQLite; two on
//! PostgreSQL, devices split between them), the devices in this one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_server::testing::WsClient;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::realtime::{Data, Node};
use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The database of the server (with PostgreSQL, two nodes).
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Simulated devices, each with a WebSocket.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Offered loads, pushes per second over all devices.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000,4000")]
    rates: Vec<u64>,
    /// Seconds each offered load runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of each closed-loop measurement.
    #[arg(long, default_value_t = 5)]
    closed: u64,
}

/// Devices of one team space.
const TEAM: usize = 10;

/// Latencies in microseconds, up to a minute.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// What the devices of a step measured.
struct Tally {
    push: Histogram<u64>,
    visible: Histogram<u64>,
    failed: u64,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A device's due pushes: when each was due, and its sequence number.
type Job = (Instant, u64);

struct Device {
    n: usize,
    node: String,
    token: String,
    http: reqwest::Client,
    /// When each team record was due, by id (for write to visible).
    due: Shared<HashMap<String, Instant>>,
    tally: Shared<Tally>,
}

impl Device {
    fn personal(&self) -> String {
        format!("dev-{}", self.n)
    }

    fn team(&self) -> String {
        format!("team-{}", self.n / TEAM)
    }

    /// The device's sync loop: due pushes and signalled pulls, one at a time.
    async fn run(self, mut ws: WsClient, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let (personal, team) = (self.personal(), self.team());
        let mut cursors: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some((due, k)) = job else { return };
                    let space = if k % 10 < 7 { &personal } else { &team };
                    let cursor = cursors.get(space).copied().unwrap_or(0);
                    match self.push(space, cursor, due, k).await {
                        Ok(answer) => {
                            let elapsed = due.elapsed().as_micros() as u64;
                            let _ = lock(&self.tally).push.record(elapsed.max(1));
                            self.arrived(&answer);
                            if let Some(c) = answer["cursor"].as_u64() {
                                cursors.insert(space.clone(), c);
                            }
                        }
                        Err(e) => self.failed(&e),
                    }
                }
                message = ws.recv_within(Duration::from_secs(3600)) => {
                    let Some(message) = message else { continue };
                    let (Some(space), Some(at)) = (message["space"].as_str(), message["cursor"].as_u64()) else {
                        continue;
                    };
                    let held = cursors.get(space).copied().unwrap_or(0);
                    if space == team && at > held {
                        match self.pull(&team, held).await {
                            Ok(page) => {
                                self.arrived(&page);
                                if let Some(c) = page["cursor"].as_u64() {
                                    cursors.insert(team.clone(), c);
                                }
                            }
                            Err(e) => self.failed(&e),
                        }
                    }
                }
            }
        }
    }

    async fn push(&self, space: &str, cursor: u64, due: Instant, k: u64) -> anyhow::Result<Value> {
        let size = 1 + (k as usize * 7) % 10;
        // The device's own clock: its client id, the wall's time.
        let h = ferry_core::Hlc::zero(ferry_core::ClientId::new(format!("dev-{}", self.n))?)
            .tick(ferry_server::clock::wall_ms())
            .to_string();
        let ids: Vec<String> = (0..size).map(|j| format!("d{}-{k}-{j}", self.n)).collect();
        if space != self.personal() {
            let mut due_at = lock(&self.due);
            for id in &ids {
                due_at.insert(id.clone(), due);
            }
        }
        let changes: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"op": "upsert", "collection": "todos", "id": id,
                       "fields": {"title": {"value": id, "hlc": h}, "done": {"value": false, "hlc": h}}})
            })
            .collect();
        let body = json!({"client_id": format!("dev-{}", self.n), "batch_id": format!("b{k}"),
                          "cursor": cursor, "limit": 1000, "changes": changes});
        let res = self
            .http
            .post(format!("{}/v1/spaces/{space}/sync", self.node))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("push answered {}: {}", res.status(), res.text().await?);
        }
        Ok(res.json().await?)
    }

    async fn pull(&self, space: &str, cursor: u64) -> anyhow::Result<Value> {
        let res = self
            .http
            .get(format!(
                "{}/v1/spaces/{space}/changes?cursor={cursor}&limit=1000",
                self.node
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("pull answered {}", res.status());
        }
        Ok(res.json().await?)
    }

    /// Counts a failed request; the first few are printed.
    fn failed(&self, e: &anyhow::Error) {
        let mut tally = lock(&self.tally);
        tally.failed += 1;
        if tally.failed <= 3 {
            eprintln!("device {}: {e:#}", self.n);
        }
    }

    /// Records write to visible for the records of others in `page`.
    fn arrived(&self, page: &Value) {
        let Some(changes) = page["changes"].as_array() else {
            return;
        };
        let mine = format!("d{}-", self.n);
        let now = Instant::now();
        let due = lock(&self.due);
        let mut tally = lock(&self.tally);
        for id in changes.iter().filter_map(|c| c["id"].as_str()) {
            if !id.starts_with(&mine)
                && let Some(at) = due.get(id)
            {
                let _ = tally
                    .visible
                    .record((now.duration_since(*at).as_micros() as u64).max(1));
            }
        }
    }
}

/// Creates the devices' spaces through `node`, 64 at a time.
async fn spaces(http: &reqwest::Client, node: &Node, devices: usize) -> anyhow::Result<()> {
    let mut names: Vec<String> = (0..devices).map(|d| format!("dev-{d}")).collect();
    names.extend((0..devices.div_ceil(TEAM)).map(|t| format!("team-{t}")));
    for chunk in names.chunks(64) {
        let made: Vec<_> = chunk
            .iter()
            .map(|space| {
                http.post(format!("{}/v1/spaces", node.url))
                    .bearer_auth(&node.token)
                    .json(&json!({"id": space, "name": space}))
                    .send()
            })
            .collect();
        for res in futures_util::future::join_all(made).await {
            let res = res?;
            if !res.status().is_success() {
                bail!("creating a space answered {}", res.status());
            }
        }
    }
    Ok(())
}

/// Connects every device's WebSocket, 200 at a time.
async fn sockets(nodes: &[&Node], devices: usize) -> anyhow::Result<Vec<WsClient>> {
    let mut out = Vec::with_capacity(devices);
    while out.len() < devices {
        let opening: Vec<_> = (out.len()..devices.min(out.len() + 200))
            .map(|d| {
                let node = nodes[d % nodes.len()];
                let (url, token) = (node.url.clone(), node.token.clone());
                tokio::spawn(async move {
                    let mut ws = WsClient::connect(&url).await;
                    ws.auth(&token).await;
                    ws.subscribe(&[&format!("dev-{d}"), &format!("team-{}", d / TEAM)])
                        .await;
                    ws
                })
            })
            .collect();
        for task in opening {
            out.push(task.await.context("a device could not connect")?);
        }
    }
    Ok(out)
}

/// The CPU time and resident memory of every node.
fn usage(nodes: &[&Node]) -> anyhow::Result<(f64, u64)> {
    let (mut cpu, mut rss) = (0.0, 0);
    for node in nodes {
        cpu += node.cpu_seconds()?;
        rss += node.rss()?;
    }
    Ok((cpu, rss))
}

/// One offered load, as a printed row.
struct Step {
    offered: u64,
    achieved: f64,
    push: Histogram<u64>,
    visible: Histogram<u64>,
    failed: u64,
    cores: f64,
    cpu_per_push_us: f64,
}

impl Step {
    fn held(&self) -> bool {
        self.failed == 0
            && self.achieved >= 0.95 * self.offered as f64
            && ms(&self.push, 0.99) <= 50.0
    }
}

/// Offers `rate` pushes/s to the devices for `seconds`, then waits for
/// their queues to drain (at most a minute).
async fn step(
    senders: &[mpsc::UnboundedSender<Job>],
    tally: &Shared<Tally>,
    nodes: &[&Node],
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Step> {
    *lock(tally) = Tally {
        push: histogram()?,
        visible: histogram()?,
        failed: 0,
    };
    let total = rate * seconds;
    let (cpu_before, _) = usage(nodes)?;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for k in 0..total {
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        senders[k as usize % senders.len()]
            .send((due, k + rate * 1_000_000))
            .ok()
            .context("a device stopped")?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answered = {
            let t = lock(tally);
            t.push.len() + t.failed
        };
        if answered >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("{answered} of {total} pushes answered a minute after the last was due");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu_after, _) = usage(nodes)?;
    let t = lock(tally);
    Ok(Step {
        offered: rate,
        achieved: t.push.len() as f64 / elapsed,
        push: t.push.clone(),
        visible: t.visible.clone(),
        failed: t.failed,
        cores: (cpu_after - cpu_before) / elapsed,
        cpu_per_push_us: (cpu_after - cpu_before) * 1e6 / total as f64,
    })
}

/// Closed loop: `writers` tasks each pushing single changes to a space of
/// their own, one after another, for `seconds`; pushes/s and p99 (ms).
async fn closed_loop(nodes: &[&Node], writers: usize, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (http, node) = (http.clone(), nodes[w % nodes.len()]);
            let (url, token) = (node.url.clone(), node.token.clone());
            tokio::spawn(async move {
                let mut h = histogram()?;
                let mut n = 0;
                while Instant::now() < until {
                    let body = workload::one_record_push(
                        w * 10_000_000 + n,
                        &format!("c{w}-"),
                        0,
                        Some(1),
                    )?;
                    let sent = Instant::now();
                    let res = http
                        .post(format!("{url}/v1/spaces/dev-{w}/sync"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await?;
                    if !res.status().is_success() {
                        bail!("push answered {}", res.status());
                    }
                    res.bytes().await?;
                    h.record((sent.elapsed().as_micros() as u64).max(1))?;
                    n += 1;
                }
                anyhow::Ok(h)
            })
        })
        .collect();
    let mut all = histogram()?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok((
        all.len() as f64 / start.elapsed().as_secs_f64(),
        ms(&all, 0.99),
    ))
}

/// The database's own rate: `writers` concurrent single-row upserts, each
/// its own durable transaction, for `seconds`; transactions/s.
async fn raw(data: &Data, writers: usize, seconds: u64) -> anyhow::Result<f64> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let done: u64 = match data {
        Data::Sqlite(dir) => {
            let path = dir.path().join("raw.db");
            {
                let c = rusqlite::Connection::open(&path)?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.execute_batch("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, v TEXT)")?;
            }
            let threads: Vec<_> = (0..writers)
                .map(|w| {
                    let path = path.clone();
                    std::thread::spawn(move || -> anyhow::Result<u64> {
                        let c = rusqlite::Connection::open(&path)?;
                        c.busy_timeout(Duration::from_secs(30))?;
                        c.pragma_update(None, "synchronous", "FULL")?;
                        let mut n = 0u64;
                        while Instant::now() < until {
                            c.execute_batch("BEGIN IMMEDIATE")?;
                            c.execute(
                                "INSERT INTO t VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                                (format!("{w}-{n}"), "a value of some forty bytes, like a todo"),
                            )?;
                            c.execute_batch("COMMIT")?;
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            let mut total = 0;
            for t in threads {
                total += t
                    .join()
                    .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
            }
            total
        }
        Data::Postgres(db) => {
            // As many connections as Ferry's two nodes may open, shared
            // by the writers as the nodes share theirs.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(
                    (writers as u32).min(2 * ferry_server::store::POSTGRES_MAX_CONNECTIONS),
                )
                .connect(&db.url)
                .await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS raw_upserts (id TEXT PRIMARY KEY, v TEXT)")
                .execute(&pool)
                .await?;
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < until {
                            sqlx::query(
                                "INSERT INTO raw_upserts VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                            )
                            .bind(format!("{w}-{n}"))
                            .bind("a value of some forty bytes, like a todo")
                            .execute(&pool)
                            .await?;
                            n += 1;
                        }
                        anyhow::Ok(n)
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            pool.close().await;
            total
        }
    };
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let data = Data::new(args.backend).await?;
    let (a, b) = data.nodes()?;
    let nodes: Vec<&Node> = [Some(&a), b.as_ref()].into_iter().flatten().collect();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let devices = args.devices.max(TEAM);
    spaces(&http, &a, devices.max(100)).await?;

    println!(
        "many devices over HTTP, {:?}, {} node(s) in a child process, devices in this one",
        args.backend,
        nodes.len()
    );
    println!(
        "closed loop, single-change pushes, {} s each (pushes/s)",
        args.closed
    );
    println!(
        "{:<24} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "", "ferry", "p99 ms", "cpu/push", "raw db", "ratio"
    );
    let mut closed = Vec::new();
    for writers in [1, 100] {
        let (cpu_before, _) = usage(&nodes)?;
        let (rate, p99) = closed_loop(&nodes, writers, args.closed).await?;
        let (cpu_after, _) = usage(&nodes)?;
        let base = raw(&data, writers, args.closed).await?;
        println!(
            "{:<24} {:>9.0} {:>9.1} {:>8.0}µs {:>9.0} {:>8.2}",
            format!("{writers} writer(s)"),
            rate,
            p99,
            (cpu_after - cpu_before) * 1e6 / (rate * args.closed as f64),
            base,
            rate / base
        );
        closed.push(rate);
    }
    println!(
        "{:<24} {:>9.2}",
        "100 writers / 1 writer",
        closed[1] / closed[0]
    );

    let (_, rss_before) = usage(&nodes)?;
    let sockets = sockets(&nodes, devices).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss_after) = usage(&nodes)?;
    let tally = Arc::new(Mutex::new(Tally {
        push: histogram()?,
        visible: histogram()?,
        failed: 0,
    }));
    let due = Arc::default();
    let mut senders = Vec::with_capacity(devices);
    let mut loops = Vec::with_capacity(devices);
    for (n, ws) in sockets.into_iter().enumerate() {
        let node = nodes[n % nodes.len()];
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let device = Device {
            n,
            node: node.url.clone(),
            token: node.token.clone(),
            http: http.clone(),
            due: Arc::clone(&due),
            tally: tally.clone(),
        };
        loops.push(tokio::spawn(device.run(ws, rx)));
    }
    println!(
        "{devices} devices, each with a WebSocket, a space of its own and a team space of {TEAM}; \
         batches of 1 to 10 changes, 3 in 10 to the team; open schedule, {} s per load",
        args.seconds
    );
    println!(
        "server memory per connected device: {:.1} KB",
        rss_after.saturating_sub(rss_before) as f64 / devices as f64 / 1024.0
    );
    println!(
        "{:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>10} {:>7}",
        "offered",
        "achieved",
        "p50",
        "p99",
        "p99.9",
        "vis p50",
        "vis p99",
        "cores",
        "cpu/push",
        "failed"
    );
    let mut held = None;
    for &rate in &args.rates {
        let s = step(&senders, &tally, &nodes, rate.max(1), args.seconds).await?;
        println!(
            "{:>9} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>7.2} {:>8.0}µs {:>7}",
            s.offered,
            s.achieved,
            ms(&s.push, 0.5),
            ms(&s.push, 0.99),
            ms(&s.push, 0.999),
            ms(&s.visible, 0.5),
            ms(&s.visible, 0.99),
            s.cores,
            s.cpu_per_push_us,
            s.failed
        );
        if s.held() {
            held = Some(s.achieved);
        } else {
            break;
        }
    }
    match held {
        Some(rate) => println!(
            "highest load held (achieved within 5% of offered, push p99 <= 50 ms): {rate:.0} pushes/s \
             from {devices} devices ({:.0} per node)",
            devices / nodes.len()
        ),
        None => println!("no offered load was held with push p99 <= 50 ms"),
    }
    drop(senders);
    for l in loops {
        l.abort();
    }
    Ok(())
}
