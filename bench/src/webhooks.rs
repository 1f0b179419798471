//! Webhooks (docs/server-rules.md#webhooks), each figure beside a baseline
//! from the same run:
//!
//! - throughput: single-change pushes from concurrent writers (each in a
//!   space of its own) with three endpoints configured, against the same
//!   pushes with none (three runs of each, alternated; the medians).
//!   Goal: within 10%.
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
use serde_json::{Value, json};

use crate::workload;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Pushes of the throughput measurement, per configuration.
    #[arg(long, default_value_t = 2_000)]
    pushes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Pushes of the latency measurement.
    #[arg(long, default_value_t = 200)]
    latency: usize,
}

/// When each record id first arrived at an endpoint.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(seen): State<Arrivals>, body: axum::body::Bytes) -> axum::http::StatusCode {
    let now = Instant::now();
    if let Ok(delivery) = serde_json::from_slice::<Value>(&body) {
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in delivery["records"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                seen.entry(id.to_owned()).or_insert(now);
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

/// A fresh server with `endpoints` webhook endpoints; its address, a token,
/// what the endpoints received, and the data directory kept alive.
async fn server(endpoints: usize) -> anyhow::Result<(Served, String, Arrivals, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = ferry_server::store::SqliteStore::open(dir.path().join("ferry.db")).await?;
    let state = AppState::new(Arc::new(store), Settings::new(ClientId::new("bench")?, "")).await?;
    let seen: Arrivals = Arc::default();
    for i in 0..endpoints {
        let e = Endpoint {
            id: format!("hook-{i}"),
            url: endpoint(seen.clone()).await?,
            secrets: vec!["bench-secret-0123456789".into()],
            spaces: None,
            collections: None,
        };
        state.store.put_webhook_endpoint(&e, wall_ms()).await?;
    }
    let token =
        state
            .issuer
            .get()
            .mint(&ferry_core::UserId::new("bench")?, wall_ms() / 1000, 3600)?;
    let served = Served::start(state).await;
    Ok((served, token, seen, dir))
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

/// Pushes per second with `endpoints` endpoints.
async fn throughput(args: &WebhookArgs, endpoints: usize) -> anyhow::Result<f64> {
    let (served, token, _seen, _dir) = server(endpoints).await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    for w in 0..args.writers {
        create_space(&http, &served.base, &token, &format!("w{w}")).await?;
    }
    let per = args.pushes / args.writers.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let (http, base, token) = (http.clone(), served.base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                push(&http, &base, &token, &format!("w{w}"), w * per + n).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (per * args.writers) as f64 / start.elapsed().as_secs_f64();
    served.stop().await;
    Ok(rate)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    // Alternated, three of each, the median of each kept: the machine's
    // drift falls on both alike.
    let (mut none, mut three) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        none.push(throughput(&args, 0).await?);
        three.push(throughput(&args, 3).await?);
    }
    none.sort_by(f64::total_cmp);
    three.sort_by(f64::total_cmp);
    let (none, three) = (none[1], three[1]);
    println!("## Webhooks");
    println!();
    println!("| measurement | with 3 endpoints | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| push throughput, {} writers, single-change pushes (baseline: no endpoint) | {three:.0} /s | {none:.0} /s | {:.2} |",
        args.writers,
        three / none
    );

    let (served, token, seen, _dir) = server(3).await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    create_space(&http, &served.base, &token, "latency").await?;
    let (mut delivered, mut round_trips) = (Vec::new(), Vec::new());
    for n in 0..args.latency {
        let start = Instant::now();
        push(&http, &served.base, &token, "latency", n).await?;
        round_trips.push(start.elapsed().as_secs_f64() * 1000.0);
        let id = workload::record_id(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            let at = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .copied();
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
    served.stop().await;
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
