//! The native core's merge, for the browser benchmark (`bench/browser`) to
//! set the wasm build of the same code against: `merge_states` of two record
//! states given as JSON, parsed and written back as JSON each time, as the
//! browser client calls it.

use std::time::Instant;

use clap::Args;
use ferry_core::{RecordState, merge_states};

use crate::workload;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The local state, as JSON.
    #[arg(long)]
    ours: String,
    /// The pulled record, as JSON.
    #[arg(long)]
    theirs: String,
    /// Merges per run.
    #[arg(long, default_value_t = 50_000)]
    merges: usize,
    /// Runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print the merges per second of each run as a JSON array only.
    #[arg(long)]
    json: bool,
}

/// One merge as the browser does it: JSON in, JSON out.
fn merge_json(ours: &str, theirs: &str) -> anyhow::Result<String> {
    let ours: RecordState = serde_json::from_str(ours)?;
    let theirs: RecordState = serde_json::from_str(theirs)?;
    Ok(serde_json::to_string(&merge_states(ours, &theirs))?)
}

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let mut rates = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..args.merges {
            bytes += merge_json(&args.ours, &args.theirs)?.len();
        }
        std::hint::black_box(bytes);
        rates.push(args.merges as f64 / start.elapsed().as_secs_f64());
    }
    if args.json {
        println!("{}", serde_json::to_string(&rates)?);
    } else {
        workload::header("native merges/s");
        workload::row("merge_states (JSON in/out)", rates, 0);
    }
    Ok(())
}
