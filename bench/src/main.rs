//! `ferry-bench`: measures Ferry and, in the same run, a baseline for each
//! figure, and prints both with their ratio. Machines are noisy; ratios of
//! figures taken side by side are what hold.
//!
//! - [`push`]: push throughput against a raw batched upsert of the same rows.
//! - [`pull`]: paging a large space by cursor, with and without encoding.
//! - [`client`]: the native client's apply rate and local write latency
//!   against raw SQLite.
//! - [`initial`]: initial sync of a large space, against reading the rows
//!   out of the server's database and inserting them into SQLite.
//! - [`live`]: the native client's live queries and indexed reads.
//! - [`report`]: all of them, in one markdown report.
//! - [`capture`]: a burst of the app's backend writes into a mirrored
//!   table, applied by a node: time, rate and memory.
//! - [`visible`]: write-to-visible latency in a second client's replica.
//! - [`wire`]: bytes on the wire per change, with and without gzip,
//!   against the app's own data.
//! - [`merge`]: the native merge, the baseline of the browser client's
//!   wasm merge (`bench/browser`).
//! - [`peer`]: Ferry beside a peer sync engine (Triplit) on the same
//!   workload, each driven by its own client library.
//! - [`files`]: a big file up and down with `curl`, and many small files
//!   to a fresh device, against a plain static file server.
//! - [`webhooks`]: push throughput with webhook endpoints against none,
//!   and the delay from a push to its delivery.
//! - [`load`]: many devices at once over HTTP, each with a WebSocket, at
//!   rising offered loads; closed-loop pushes against the database's own
//!   rate for as many writers.
//! - [`realtime`]: write-to-signal latency against the push's round trip,
//!   memory per idle subscriber, fan-out against a ping through every
//!   connection.

mod capture;
mod chart;
mod client;
mod curve;
mod files;
mod initial;
mod live;
mod load;
mod merge;
mod peer;
mod peer_engine;
mod pull;
mod push;
mod realtime;
mod redraw;
mod report;
mod settle;
mod visible;
mod webhooks;
mod wire;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ferry-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push throughput against a raw batched upsert of the same rows.
    Push(push::PushArgs),
    /// A burst of the app's backend writes into a mirrored table.
    Capture(capture::CaptureArgs),
    /// Pull throughput: a large space paged by cursor.
    Pull(pull::PullArgs),
    /// Realtime: write-to-signal latency, memory per idle subscriber and
    /// fan-out time.
    Realtime(realtime::RealtimeArgs),
    /// The native client: applying pulled pages, local writes.
    Client(client::ClientArgs),
    /// Initial sync of a large space into a fresh native replica.
    Initial(initial::InitialArgs),
    /// Live queries in the native client: a write updating 20 watches,
    /// and an indexed read.
    Live(live::LiveArgs),
    /// Every workload, each in a process of its own, into one markdown
    /// report (bench/REPORT.md).
    Report(report::ReportArgs),
    /// Redraws a report's chart (bench/REPORT.png) from the figures in the
    /// report, measuring nothing.
    Chart(redraw::ChartArgs),
    /// Write-to-visible latency in a second client's replica, on a fixed
    /// schedule, in HDR histograms.
    Visible(visible::VisibleArgs),
    /// Bytes on the wire per change, with and without compression, against
    /// the app's own data.
    Wire(wire::WireArgs),
    /// The native core's merge, JSON in and out (the browser benchmark's
    /// baseline).
    Merge(merge::MergeArgs),
    /// Webhooks: push throughput with three endpoints against none, and
    /// the delay from a push to its delivery.
    Webhooks(webhooks::WebhookArgs),
    /// Many devices at once over HTTP, at rising offered loads.
    Load(load::LoadArgs),
    /// Files: a big file up and down, many small files to a fresh device,
    /// against a plain static file server.
    Files(files::FilesArgs),
    /// Ferry beside two peer sync engines (Triplit, PouchDB): N clients
    /// each writing M records, until every client holds all of them.
    Peer(peer::PeerArgs),
    /// A server for the realtime benchmark, in a process of its own.
    #[command(hide = true)]
    Serve(realtime::ServeArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The error and its causes, never a backtrace.
    match run(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Push(args) => push::run(args).await,
        Command::Capture(args) => capture::run(args).await,
        Command::Pull(args) => pull::run(args).await,
        Command::Realtime(args) => realtime::run(args).await,
        Command::Serve(args) => realtime::serve(args).await,
        Command::Client(args) => client::run(args).await,
        Command::Initial(args) => initial::run(args).await,
        Command::Live(args) => live::run(args).await,
        Command::Merge(args) => merge::run(args),
        Command::Wire(args) => wire::run(args).await,
        Command::Report(args) => report::run(args),
        Command::Chart(args) => redraw::run(args),
        Command::Visible(args) => visible::run(args).await,
        Command::Peer(args) => peer::run(args).await,
        Command::Webhooks(args) => webhooks::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Files(args) => files::run(args).await,
    }
}
