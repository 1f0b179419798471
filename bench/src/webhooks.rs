//! Webhooks (docs/server-rules.md#webhooks), each figure beside a baseline
//! from the same run:
//!
//! - throughput: single-change pushes from concurrent writers (each in a
//!   space of its own) with three endpoints configured, against the same
//!   pushes with none (five pairs of runs, the median of the pairs'
//!   ratios). Goal: within 10%. The last run with endpoints also gives
//!   the time from each push to its delivery while the writers push.
//! - latency: from a push's request to its commit's delivery arriving at
//!   an endpoint (the three endpoints answer at once), one push at a time,
//!   beside the push's own round trip. Goal: p50 ≤ 50 ms. (Measured from
//!   the request, not the commit, which happens inside it: an upper bound.)
//!
//! The server runs in this process on SQLite (`Served`, 127.0.0.1:0), and
//! the endpoints are HTTP servers of this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::extract::State;
use clap::Args;
use ferry_core::ClientId;
use ferry_server::clock::wall_ms;
use ferry_server::store::webhooks::Endpoint;
use ferry_server::testing::Served;
use ferry_server::{AppState, Settings};
use serde_json::json;

use crate::workload;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Pushes of the throughput measurement, per configuration (a few
    /// seconds of pushing: shorter runs are mostly their start).
    #[arg(long, default_value_t = 40_000)]
    pushes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Pushes of the latency measurement.
    #[arg(long, default_value_t = 200)]
    latency: usize,
}

/// The endpoints of a run with endpoints.
const ENDPOINTS: usize = 3;

/// When each record id first arrived at an endpoint, and at how many.
type Arrivals = Arc<Mutex<HashMap<String, (Instant, u32)>>>;

/// What the benchmark reads of a delivery: its records' ids (as an
/// endpoint that queues the body for later work reads little of it).
#[derive(serde::Deserialize)]
struct Delivery<'a> {
    #[serde(borrow)]
    records: Vec<Delivered<'a>>,
}

#[derive(serde::Deserialize)]
struct Delivered<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

async fn receive(State(seen): State<Arrivals>, body: axum::body::Bytes) -> axum::http::StatusCode {
    let now = Instant::now();
    if let Ok(delivery) = serde_json::from_slice::<Delivery>(&body) {
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in delivery.records {
            match seen.get_mut(r.id.as_ref()) {
                Some(seen) => seen.1 += 1,
                None => {
                    seen.insert(r.id.into_owned(), (now, 1));
                }
            }
        }
    }
    axum::http::StatusCode::NO_CONTENT
}

/// An endpoint in this process; its URL.
async fn endpoint(seen: Arrivals) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// What the endpoints of a run are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hooks {
    /// No endpoint.
    None,
    /// Three endpoints, sent every commit.
    Three,
    /// Three endpoints that want a collection nobody writes: the
    /// dispatcher reads and keeps its books but POSTs nothing.
    Unwanted,
}

/// A fresh server, three endpoints of this process (not yet configured),
/// what they receive, a token, and the data directory kept alive.
struct Bench {
    served: Served,
    token: String,
    urls: Vec<String>,
    seen: Arrivals,
    _dir: tempfile::TempDir,
}

async fn server() -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let store = ferry_server::store::SqliteStore::open(dir.path().join("ferry.db")).await?;
    let state = AppState::new(Arc::new(store), Settings::new(ClientId::new("bench")?, "")).await?;
    let seen: Arrivals = Arc::default();
    let mut urls = Vec::new();
    for _ in 0..ENDPOINTS {
        urls.push(endpoint(seen.clone()).await?);
    }
    let token =
        state
            .issuer
            .get()
            .mint(&ferry_core::UserId::new("bench")?, wall_ms() / 1000, 3600)?;
    let served = Served::start(state).await;
    Ok(Bench {
        served,
        token,
        urls,
        seen,
        _dir: dir,
    })
}

/// Configures the endpoints of `hooks` for phase `phase`, under ids of
/// their own: each starts at the spaces' heads, with nothing of the
/// earlier phases to send. The endpoints of the phase before are removed.
async fn configure(bench: &Bench, hooks: Hooks, phase: usize) -> anyhow::Result<()> {
    let store = &bench.served.state.store;
    for e in store.webhook_endpoints().await? {
        store.remove_webhook_endpoint(&e.id).await?;
    }
    if hooks == Hooks::None {
        return Ok(());
    }
    let unwanted = ferry_core::Collection::new("unwanted")?;
    for (i, url) in bench.urls.iter().enumerate() {
        let e = Endpoint {
            id: format!("hook-{phase}-{i}"),
            url: url.clone(),
            secrets: vec!["bench-secret-0123456789".into()],
            spaces: None,
            collections: (hooks == Hooks::Unwanted).then(|| vec![unwanted.clone()]),
        };
        store.put_webhook_endpoint(&e, wall_ms()).await?;
    }
    Ok(())
}

async fn create_space(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    space: &str,
) -> anyhow::Result<()> {
    let res = http
        .post(format!("{base}/v1/spaces"))
        .bearer_auth(token)
        .json(&json!({"id": space, "name": space}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("creating a space answered {}", res.status());
    }
    Ok(())
}

async fn push(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    space: &str,
    n: usize,
) -> anyhow::Result<()> {
    let body = workload::one_record_push(n, &format!("{space}-"), 0, Some(1))?;
    let res = http
        .post(format!("{base}/v1/spaces/{space}/sync"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("push answered {}", res.status());
    }
    Ok(())
}

/// One phase: each writer pushes `per` single-change pushes into its
/// space, records numbered from `first`. Pushes per second, and with
/// three endpoints sent every commit, the times (ms) from each push's
/// request to its record's arrival at an endpoint (once all arrived).
async fn phase(
    bench: &Bench,
    hooks: Hooks,
    writers: usize,
    per: usize,
    first: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    bench
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, base, token) = (http.clone(), bench.served.base.clone(), bench.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(per);
            for k in 0..per {
                let n = first + w * per + k;
                sent.push((n, Instant::now()));
                push(&http, &base, &token, &format!("w{w}"), n).await?;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await??);
    }
    let rate = (per * writers) as f64 / start.elapsed().as_secs_f64();
    let mut delays = Vec::new();
    if hooks == Hooks::Three {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = {
                let seen = bench
                    .seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Every endpoint's delivery, so that none of this
                // phase's POSTs runs into the next phase.
                sent.iter().all(|(n, _)| {
                    seen.get(&workload::record_id(*n))
                        .is_some_and(|(_, at)| *at as usize >= ENDPOINTS)
                })
            };
            if done {
                break;
            }
            if Instant::now() > deadline {
                bail!("not every push was delivered within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = bench
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (n, at) in sent {
            if let Some((arrived, _)) = seen.get(&workload::record_id(n)) {
                delays.push(arrived.duration_since(at).as_secs_f64() * 1000.0);
            }
        }
        delays.sort_by(f64::total_cmp);
    }
    Ok((rate, delays))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    // One server, the three configurations interleaved in short phases:
    // six cycles, one for each order of the three, so that each comes
    // first, second and last alike, and the machine's drift (on a virtual
    // machine, the disk's flush rate moves by half within a minute) and
    // the database's growth fall on the three alike; each ratio is the
    // median of the cycles' ratios.
    let bench = server().await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    for w in 0..args.writers {
        create_space(&http, &bench.served.base, &bench.token, &format!("w{w}")).await?;
    }
    let writers = args.writers.max(1);
    let (n, t, u) = (Hooks::None, Hooks::Three, Hooks::Unwanted);
    let orders = [
        [n, t, u],
        [n, u, t],
        [t, n, u],
        [t, u, n],
        [u, n, t],
        [u, t, n],
    ];
    let per = (args.pushes / orders.len() / writers).max(1);
    let mut next = 0;
    let (mut none, mut three, mut unwanted) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut unwanted_ratios, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    // A warm-up cycle first, not counted: every configuration's first
    // statements and connections.
    for cycle in 0..=orders.len() {
        // Each configuration's rate, by its place in `Hooks`.
        let mut rates = [0.0; 3];
        let order = orders[cycle.saturating_sub(1)];
        for (k, hooks) in order.into_iter().enumerate() {
            configure(&bench, hooks, cycle * 3 + k).await?;
            let (rate, delays) = phase(&bench, hooks, writers, per, next).await?;
            next += per * writers;
            if hooks == Hooks::Three {
                busy = delays;
            }
            rates[hooks as usize] = rate;
            // The dispatcher's last round of the phase (its outcomes,
            // its claims) finishes before the next phase is timed.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if cycle == 0 {
            continue;
        }
        let [a, b, c] = rates;
        none.push(a);
        three.push(b);
        unwanted.push(c);
        ratios.push(b / a);
        unwanted_ratios.push(c / a);
    }
    bench.served.stop().await;
    let median = |v: &[f64]| (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0;
    let spread = |v: &[f64]| format!("{:.2}–{:.2}", v[0], v[v.len() - 1]);
    for v in [
        &mut none,
        &mut three,
        &mut unwanted,
        &mut ratios,
        &mut unwanted_ratios,
    ] {
        v.sort_by(f64::total_cmp);
    }
    println!("## Webhooks");
    println!();
    println!("| measurement | with 3 endpoints | baseline | ratio (median; spread of 6) |");
    println!("|---|---|---|---|");
    println!(
        "| push throughput, {} writers, single-change pushes (baseline: no endpoint) | {:.0} /s | {:.0} /s | {:.2} ({}) |",
        args.writers,
        median(&three),
        median(&none),
        median(&ratios),
        spread(&ratios)
    );
    println!(
        "| the same, the endpoints wanting no collection written (reads and bookkeeping, no POST) | {:.0} /s | {:.0} /s | {:.2} ({}) |",
        median(&unwanted),
        median(&none),
        median(&unwanted_ratios),
        spread(&unwanted_ratios)
    );
    if !busy.is_empty() {
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            println!(
                "| push to delivery at an endpoint while the writers push, {name} (last run) | {:.1} ms | | |",
                percentile(&busy, p)
            );
        }
    }

    let bench = server().await?;
    configure(&bench, Hooks::Three, 0).await?;
    let (served, token, seen) = (&bench.served, &bench.token, &bench.seen);
    create_space(&http, &served.base, token, "latency").await?;
    let (mut delivered, mut round_trips) = (Vec::new(), Vec::new());
    for n in 0..args.latency {
        let start = Instant::now();
        push(&http, &served.base, token, "latency", n).await?;
        round_trips.push(start.elapsed().as_secs_f64() * 1000.0);
        let id = workload::record_id(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            let at = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .map(|(at, _)| *at);
            if let Some(at) = at {
                break at;
            }
            if Instant::now() > deadline {
                bail!("the delivery of {id} did not arrive within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        delivered.push(arrived.duration_since(start).as_secs_f64() * 1000.0);
    }
    bench.served.stop().await;
    delivered.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&delivered, 0.5), percentile(&delivered, 0.99));
    let (r50, r99) = (
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
    );
    println!(
        "| push to delivery at an endpoint, p50 (baseline: the push's round trip) | {d50:.1} ms | {r50:.1} ms | {:.2} |",
        d50 / r50
    );
    println!(
        "| push to delivery at an endpoint, p99 | {d99:.1} ms | {r99:.1} ms | {:.2} |",
        d99 / r99
    );
    println!();
    Ok(())
}
