//! Bytes on the wire per change, with and without compression, against
//! the app's own data: the same records written as compact JSON of their
//! values alone (`{"id": ..., "title": ..., ...}`), which is what any sync
//! has to carry at the least.
//!
//! A client pushes batches of new records to an embedded server over HTTP
//! and pulls them back into an empty replica's cursor, once asking for
//! gzip and once not; the bytes counted are the HTTP bodies as they cross
//! the socket (compressed when compressed: the client does not inflate
//! them), not headers. The records' text varies like people's todos do
//! (a few words from a list, small numbers, flags), each written at its own
//! moment: uniform synthetic text would flatter compression.

use clap::Args;
use ferry_core::ClientId;
use ferry_server::testing::Served;
use ferry_server::{AppState, Settings};
use serde_json::{Map, Value, json};

use crate::workload::{self, Backend};

#[derive(Debug, Args)]
pub struct WireArgs {
    /// Records pushed and pulled.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Changes per pushed batch, and records per pulled page.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

const WORDS: &[&str] = &[
    "milk", "bread", "call", "mum", "invoice", "garden", "tickets", "dentist", "book", "review",
    "pull", "request", "paint", "fence", "renew", "passport", "lamp", "bulbs", "tax", "return",
    "plan", "trip", "fix", "bike", "water", "plants", "email", "landlord", "cook", "dinner",
];

/// Record `i`'s values, varied the way people's todos are (text of a few
/// words, flags, small numbers), from a fixed seed: repeated synthetic text
/// would flatter compression.
fn values(i: usize) -> [(&'static str, Value); 4] {
    let mut x = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut next = |n: usize| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % n as u64) as usize
    };
    let words = 2 + next(5);
    let title: Vec<&str> = (0..words).map(|_| WORDS[next(WORDS.len())]).collect();
    [
        ("title", json!(title.join(" "))),
        ("done", json!(next(3) == 0)),
        ("priority", json!(next(5))),
        ("list", json!(format!("list-{}", next(40)))),
    ]
}

/// Record `i` as a change, written at its own moment.
fn change(i: usize, base: &ferry_core::Hlc) -> anyhow::Result<Value> {
    let hlc = ferry_core::Hlc::new(base.physical() + i as u64, 0, base.node().clone())
        .ok_or_else(|| anyhow::anyhow!("hlc out of range"))?
        .to_string();
    let fields: Map<String, Value> = values(i)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), json!({"value": v, "hlc": hlc})))
        .collect();
    Ok(
        json!({"op": "upsert", "collection": "todos", "id": workload::record_id(i), "fields": fields}),
    )
}

/// The app's own data for record `i`: its id and its values.
fn app_bytes(i: usize) -> anyhow::Result<usize> {
    let mut map = Map::new();
    map.insert("id".into(), json!(workload::record_id(i)));
    for (name, value) in values(i) {
        map.insert(name.into(), value);
    }
    Ok(serde_json::to_vec(&Value::Object(map))?.len())
}

pub async fn run(args: WireArgs) -> anyhow::Result<()> {
    let (store, _guard) = workload::fresh(Backend::Sqlite).await;
    let space = workload::space(store.as_ref()).await?;
    let state = AppState::new(store, Settings::new(ClientId::new("bench-server")?, "")).await?;
    let served = Served::start(state).await;
    let token = served.token("bench");
    // Bodies as they cross the socket: no transparent decompression.
    let http = reqwest::Client::builder().no_gzip().build()?;
    let h = workload::hlc()?;
    let batches = args.records.div_ceil(args.batch_size.max(1));
    let (mut sent, mut answered, mut changes) = (0usize, 0usize, 0usize);
    for b in 0..batches {
        let size = args.batch_size.min(args.records - b * args.batch_size);
        let batch: Vec<Value> = (b * args.batch_size..b * args.batch_size + size)
            .map(|i| change(i, &h))
            .collect::<anyhow::Result<_>>()?;
        changes += batch.len();
        // `limit: 1`: the answer's pull is measured below, on its own.
        let body = serde_json::to_vec(&json!({
            "client_id": "bench", "batch_id": format!("b{b}"), "changes": batch,
            "cursor": 0, "limit": 1,
        }))?;
        sent += body.len();
        let res = http
            .post(format!("{}/v1/spaces/{space}/sync", served.base))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "push answered {}", res.status());
        answered += res.bytes().await?.len();
    }
    // Uncompressed, page by page, noting where each page starts; then the
    // same pages again, compressed.
    let fetch = |cursor: u64, gzip: bool| {
        let mut req = http
            .get(format!(
                "{}/v1/spaces/{space}/changes?cursor={cursor}&limit={}",
                served.base, args.batch_size
            ))
            .bearer_auth(&token);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        async move {
            let res = req.send().await?;
            anyhow::ensure!(res.status().is_success(), "pull answered {}", res.status());
            let compressed = res.headers().contains_key("content-encoding");
            anyhow::ensure!(
                compressed == gzip,
                "gzip {gzip} but compressed {compressed}"
            );
            Ok(res.bytes().await?)
        }
    };
    let mut pulled = [0usize; 2];
    let mut starts = Vec::new();
    let mut cursor = 0u64;
    loop {
        starts.push(cursor);
        let bytes = fetch(cursor, false).await?;
        pulled[0] += bytes.len();
        let page: Value = serde_json::from_slice(&bytes)?;
        cursor = page["cursor"].as_u64().unwrap_or(cursor);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    for cursor in starts {
        pulled[1] += fetch(cursor, true).await?.len();
    }
    let app: usize = (0..args.records)
        .map(app_bytes)
        .sum::<anyhow::Result<_>>()?;
    let per = |bytes: usize| bytes as f64 / changes.max(1) as f64;
    println!(
        "Bytes on the wire per change: {} new records (4 fields), batches and pages of {}",
        args.records, args.batch_size
    );
    println!(
        "{:<44} {:>10} {:>10}",
        "bytes per change", "bytes", "/ app data"
    );
    let app_per = per(app);
    for (name, bytes) in [
        ("app data: the values as compact JSON", app),
        ("push request (JSON, uncompressed)", sent),
        ("push answer (its pull limited to 1 record)", answered),
        ("pull, uncompressed", pulled[0]),
        ("pull, gzip", pulled[1]),
    ] {
        println!(
            "{name:<44} {:>10.1} {:>10.2}",
            per(bytes),
            per(bytes) / app_per
        );
    }
    served.stop().await;
    Ok(())
}
