//! Files (docs/files.md), each figure beside a baseline from the same run:
//!
//! - one big file (100 MB): uploaded to Ferry and downloaded from it with
//!   `curl`, against `curl` copying the same file to and from a plain
//!   static file server (this process, the same HTTP stack, no access
//!   rules, no hash, no fsync). Goal: ≥ 50% of the baseline's rate; the
//!   server's peak memory grows by far less than the file (streamed).
//! - many small files (1,000 of 50 KB) reaching a fresh device: the native
//!   client syncs the records that refer to them and downloads every file
//!   into its cache (hash checked), 16 at a time, against 1,000 plain `GET`s
//!   of the same bytes from the static server, 16 at a time. Goal: ≥ 50%.
//!
//! Ferry runs in this process on SQLite (`Served`, 127.0.0.1:0).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use clap::Args;
use ferry_client::{Remote, Replica, ReplicaConfig, Token, sync_space};
use ferry_core::{ClientId, Collection, FileRef, RecordId, Sha256Hex, SpaceId};
use ferry_server::testing::Served;
use ferry_server::{AppState, Settings};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Debug, Args)]
pub struct FilesArgs {
    /// The big file's size in MB.
    #[arg(long, default_value_t = 100)]
    big_mb: u64,
    /// Rounds of the big file (each both ways, both servers).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Small files.
    #[arg(long, default_value_t = 1_000)]
    small: usize,
    /// Each small file's size in KB.
    #[arg(long, default_value_t = 50)]
    small_kb: usize,
    /// Requests at once for the small files.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// The plain static file server: `PUT /f/{name}` writes the body to a
/// file (`PUT /flushed/{name}` also flushes it to disk before answering,
/// as Ferry does), `GET /f/{name}` streams it back.
async fn static_server(dir: PathBuf) -> anyhow::Result<String> {
    async fn put(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
        body: Body,
    ) -> axum::http::StatusCode {
        store(dir, name, body, false).await
    }
    async fn put_flushed(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
        body: Body,
    ) -> axum::http::StatusCode {
        store(dir, name, body, true).await
    }
    async fn store(dir: PathBuf, name: String, body: Body, flush: bool) -> axum::http::StatusCode {
        let stored = async {
            let mut file = tokio::fs::File::create(dir.join(name)).await?;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            if flush {
                file.sync_all().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        match stored.await {
            Ok(()) => axum::http::StatusCode::CREATED,
            Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    async fn get(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<axum::response::Response, axum::http::StatusCode> {
        let file = tokio::fs::File::open(dir.join(name))
            .await
            .map_err(|_| axum::http::StatusCode::NOT_FOUND)?;
        let len = file
            .metadata()
            .await
            .map_err(|_| axum::http::StatusCode::NOT_FOUND)?
            .len();
        let mut answer = axum::response::Response::new(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024),
        ));
        answer
            .headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, len.into());
        Ok(answer)
    }
    let app = axum::Router::new()
        .route("/f/{name}", axum::routing::get(get).put(put))
        .route("/flushed/{name}", axum::routing::put(put_flushed))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Without Nagle's delay, as Ferry's server.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Writes `size` bytes that differ with `seed` to `path`; their hash.
fn write_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<Sha256Hex> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut left = size;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = usize::try_from(left.min(chunk.len() as u64))?;
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(Sha256Hex::from_digest(&hasher.finalize().into()))
}

/// `curl` sending or fetching a file; the seconds it took.
fn curl(args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .context("curl is needed for this benchmark")?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// This process's peak resident memory, in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches(" kB")
        .parse()?;
    Ok(kb * 1024)
}

pub async fn run(args: FilesArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _guard) = ferry_server::testing::fresh_sqlite().await;
    let mut settings = Settings::new(ClientId::new("bench")?, "http://ferry.bench");
    settings.files.dir = Some(dir.path().join("ferry-files"));
    settings.files.quota_bytes = u64::MAX;
    let served = Served::start(AppState::new(store, settings).await?).await;
    let token = served.token("bench");
    let http = reqwest::Client::new();
    http.get(format!("{}/v1/me", served.base))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let space = SpaceId::new("user:bench")?;
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir)?;
    let plain = static_server(plain_dir).await?;
    let auth = format!("Authorization: Bearer {token}");

    let size = args.big_mb * 1_000_000;
    println!(
        "Files: one file of {} MB, {} rounds, each way; curl on loopback",
        args.big_mb, args.rounds
    );
    let (mut ferry_up, mut ferry_down, mut plain_up, mut plain_down) =
        (vec![], vec![], vec![], vec![]);
    let mut flushed_up = vec![];
    let mut growth = 0;
    for round in 0..args.rounds {
        let path = dir.path().join("big");
        let sha = write_file(&path, size, round as u64 + 1)?;
        let file = path.to_string_lossy().into_owned();
        let url = format!("{}/v1/spaces/{space}/files/{sha}", served.base);
        let before = peak_rss()?;
        ferry_up.push(curl(&[
            "-T",
            &file,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/octet-stream",
            &url,
        ])?);
        ferry_down.push(curl(&["-H", &auth, &url])?);
        growth = growth.max(peak_rss()?.saturating_sub(before));
        let plain_url = format!("{plain}/f/big-{round}");
        plain_up.push(curl(&["-T", &file, &plain_url])?);
        plain_down.push(curl(&[&plain_url])?);
        flushed_up.push(curl(&[
            "-T",
            &file,
            &format!("{plain}/flushed/big-{round}"),
        ])?);
        std::fs::remove_file(&path)?;
    }
    let rate = |secs: &[f64]| {
        let (_, median, _) = crate::workload::min_median_max(secs.to_vec());
        size as f64 / median / 1e6
    };
    println!("MB/s (median)                             Ferry      plain     ratio");
    for (what, f, p) in [
        ("upload", &ferry_up, &plain_up),
        ("upload, plain flushed to disk too", &ferry_up, &flushed_up),
        ("download", &ferry_down, &plain_down),
    ] {
        let (f, p) = (rate(f), rate(p));
        println!("{what:<36} {f:>10.1} {p:>10.1} {:>9.2}", f / p);
    }
    println!(
        "server peak memory growth over a {} MB upload and download: {:.1} MB",
        args.big_mb,
        growth as f64 / 1e6
    );

    small_files(&args, &served, &token, &space, &plain, dir.path()).await
}

async fn small_files(
    args: &FilesArgs,
    served: &Served,
    token: &str,
    space: &SpaceId,
    plain: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let remote = Remote::new(&served.base, Arc::new(Token(token.to_owned())))?;
    let author = Replica::open(dir.join("author.db"), ReplicaConfig::default())?;
    let notes = Collection::new("notes")?;
    let http = reqwest::Client::new();
    let bytes = args.small_kb * 1_000;
    for i in 0..args.small {
        let content: Vec<u8> = (0..bytes).map(|j| (i * 31 + j * 7) as u8).collect();
        let file = author.attach(space, &content, "image/jpeg", None)?;
        author.put(
            space,
            &notes,
            &RecordId::new(format!("n{i}"))?,
            json!({"image": file.to_value()})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )?;
        http.put(format!("{plain}/f/small-{i}"))
            .body(content)
            .send()
            .await?
            .error_for_status()?;
    }
    sync_space(&author, &remote, space).await?;

    let device = Replica::open(dir.join("device.db"), ReplicaConfig::default())?;
    let started = Instant::now();
    sync_space(&device, &remote, space).await?;
    let synced = started.elapsed().as_secs_f64();
    let refs: Vec<FileRef> = (0..args.small)
        .map(|i| -> anyhow::Result<FileRef> {
            let rec = device
                .get(space, &notes, &RecordId::new(format!("n{i}"))?)?
                .context("a record did not sync")?;
            Ok(FileRef::from_value(&rec.fields["image"])?)
        })
        .collect::<anyhow::Result<_>>()?;
    futures_util::stream::iter(refs.iter().map(|f| device.file(&remote, space, f)))
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let ferry = started.elapsed().as_secs_f64();

    let started = Instant::now();
    futures_util::stream::iter((0..args.small).map(|i| {
        let http = http.clone();
        let url = format!("{plain}/f/small-{i}");
        async move {
            let bytes = http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            Ok::<_, reqwest::Error>(bytes.len())
        }
    }))
    .buffer_unordered(args.concurrency)
    .try_collect::<Vec<_>>()
    .await?;
    let baseline = started.elapsed().as_secs_f64();
    println!(
        "{} files of {} KB to a fresh device, {} at once (s)",
        args.small, args.small_kb, args.concurrency
    );
    println!("Ferry: sync the records, download every file     {ferry:>8.2}");
    println!(
        "  of which syncing the {} records                {synced:>8.2}",
        args.small
    );
    println!("plain GETs of the same bytes (baseline)          {baseline:>8.2}");
    println!(
        "ratio (rate Ferry / plain)                       {:>8.2}",
        baseline / ferry
    );
    Ok(())
}
