//! The collector of files no record refers to any more (docs/files.md §5).
//! Every node runs it, like compaction: each space's decisions are one
//! transaction under the lock a push takes, so no push adds a reference
//! while the collector decides, and a row is deleted by exactly one node,
//! which then deletes its object. Objects no row names (a crash between
//! keeping an upload's bytes and recording it, a delete that failed) go
//! once they are older than the grace period.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::objects::Objects;
use super::uploads::Uploads;
use crate::clock::wall_ms;
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// How long a file no record refers to is kept, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The shortest grace period: longer than any upload may take between
/// keeping its bytes and recording them (its body deadline).
pub const MIN_GRACE: Duration = Duration::from_secs(3600);

/// How often a node collects.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What one pass collected.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Files forgotten, unreferenced for the whole grace period.
    pub files: usize,
    /// Their bytes, given back to their uploaders' quotas.
    pub bytes: u64,
    /// Objects deleted that no row named.
    pub strays: usize,
    /// Broken-off uploads of this node older than
    /// [`super::staging::PARTIAL_LIFETIME`], deleted.
    pub partials: usize,
}

/// One pass at `now` (ms since the epoch): collects the files unreferenced
/// for `grace`, then the objects older than `grace` that no row names, and
/// this node's broken-off uploads left for a day.
pub async fn collect_once(
    store: &dyn Store,
    objects: &Objects,
    uploads: &Uploads,
    now: u64,
    grace: Duration,
) -> Result<Collected, StoreError> {
    let cutoff = now.saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let mut done = Collected::default();
    let lifetime = u64::try_from(super::staging::PARTIAL_LIFETIME.as_millis()).unwrap_or(u64::MAX);
    done.partials = objects
        .expire_partials(now.saturating_sub(lifetime), uploads.writing())
        .await
        .map_err(|e| StoreError::Internal(format!("expiring partial uploads: {e}")))?;
    for file in store.collect_files(now, cutoff).await? {
        done.files += 1;
        done.bytes += file.size;
        // Failing, its object is a stray the next pass deletes.
        if let Err(e) = objects.delete(&file.object).await {
            tracing::warn!(object = %file.object, error = %e, "cannot delete a collected file's object");
        }
    }
    // Listed before the rows are read: an object kept since is younger
    // than the cutoff, and one recorded since is among the rows.
    let old = objects
        .written_before(cutoff)
        .await
        .map_err(|e| StoreError::Internal(format!("listing file objects: {e}")))?;
    if old.is_empty() {
        return Ok(done);
    }
    let named = store.file_objects().await?;
    for key in old.into_iter().filter(|k| !named.contains(k)) {
        match objects.delete(&key).await {
            Ok(()) => done.strays += 1,
            Err(e) => tracing::warn!(object = %key, error = %e, "cannot delete a stray object"),
        }
    }
    Ok(done)
}

/// Collects now and then every [`INTERVAL`] while the node runs, if it
/// keeps files.
pub fn spawn(state: AppState) -> Option<JoinHandle<()>> {
    let objects = super::storage(&state)?;
    let grace = state.settings.files.grace;
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            ticks.tick().await;
            let pass = collect_once(
                state.store.as_ref(),
                &objects,
                &state.uploads,
                wall_ms(),
                grace,
            );
            match pass.await {
                Ok(done) if done == Collected::default() => {}
                Ok(done) => tracing::info!(
                    files = done.files,
                    bytes = done.bytes,
                    strays = done.strays,
                    partials = done.partials,
                    "collected unreferenced files"
                ),
                Err(e) => tracing::warn!(error = %e, "collecting files failed; retrying next hour"),
            }
        }
    }))
}
