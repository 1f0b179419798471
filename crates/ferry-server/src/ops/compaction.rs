//! The optional periodic compaction of tombstones (`tombstone_retention`).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::wall_ms;
use crate::store::{CompactReport, Store, StoreError};

/// How often the periodic compaction runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Compacts the tombstones older than `retention` once.
pub async fn compact_older_than(
    store: &dyn Store,
    retention: Duration,
) -> Result<CompactReport, StoreError> {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    store.compact(wall_ms().saturating_sub(retention_ms)).await
}

/// Runs [`compact_older_than`] now and then every [`INTERVAL`], logging what
/// it did, until the returned task is aborted. With several nodes, each may
/// run it: compaction is idempotent and takes the same locks as a push.
pub fn spawn(store: Arc<dyn Store>, retention: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            ticks.tick().await;
            match compact_older_than(store.as_ref(), retention).await {
                Ok(report) => {
                    let tombstones: u64 = report.spaces.iter().map(|s| s.tombstones).sum();
                    tracing::info!(
                        spaces = report.spaces.len(),
                        tombstones,
                        batches = report.batches,
                        "compacted"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "compaction failed; retrying next hour"),
            }
        }
    })
}
