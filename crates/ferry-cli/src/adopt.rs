//! `ferry adopt COLLECTION`: takes the rows a mirrored table already held
//! in as records, and gives the table rows for the records Ferry already
//! held (docs/tables.md).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferry_core::Collection;

use crate::config::ConfigArgs;

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The collection, mirrored into a table by the applied schema.
    collection: String,
    /// How long to wait for the nodes to take in the queued rows while
    /// none is taken: 30s, 5m...
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait: Duration,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Runs `ferry adopt`.
pub async fn run(args: AdoptArgs) -> anyhow::Result<()> {
    let collection = Collection::new(&args.collection)
        .with_context(|| format!("{} is not a collection name", args.collection))?;
    let config = args.config.resolve()?;
    crate::init_logs(config.log_format, "warn");
    let store = crate::open_store(&config).await?;
    let mut tell = |line: &str| println!("{line}");
    let adopted =
        ferry_server::adopt::adopt(store.as_ref(), &collection, args.wait, &mut tell).await?;
    let taken = adopted.queued.saturating_sub(adopted.left);
    println!(
        "{collection}: took in {taken} of {} rows ({} refused: their reasons are in {}.capture_refused).",
        adopted.queued,
        adopted.refused,
        config.postgres_schema.as_deref().unwrap_or("ferry")
    );
    if adopted.left > 0 {
        println!(
            "{} rows wait in the queue: no node took any for {}; a running `ferry serve` \
             takes them in.",
            adopted.left,
            humantime::format_duration(args.wait)
        );
    }
    Ok(())
}
