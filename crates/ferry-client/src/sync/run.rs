//! The sync loop of one space: push the outbox batch by batch, store each
//! answer, follow `410` and refusals, and pull until nothing more waits.

use ferry_core::SpaceId;
use ferry_core::protocol::SyncRequest;

use super::{Answer, PAGE, SyncReport, refused_for_good};
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::replica::Replica;
use crate::session::is_local;

/// Syncs `space` once: pushes every pending change and pulls until the
/// server has nothing more. Spaces that stay on the device (`local:...`)
/// are left alone.
pub async fn sync_space(replica: &Replica, remote: &Remote, space: &SpaceId) -> Result<SyncReport> {
    sync_space_with(replica, remote, space, &mut |_| {}).await
}

/// [`sync_space`], calling `progress` with the running totals after each
/// answer stored (for progress bars of long syncs).
pub async fn sync_space_with(
    replica: &Replica,
    remote: &Remote,
    space: &SpaceId,
    progress: &mut (dyn FnMut(&SyncReport) + Send),
) -> Result<SyncReport> {
    let mut total = SyncReport::default();
    if is_local(space) {
        return Ok(total);
    }
    // While a page is stored, the next one is already on its way (when
    // nothing waits to be pushed): a long pull costs the slower of the two,
    // not their sum.
    let mut prefetch: Option<Prefetch> = None;
    // How far conflict reports have been taken, after the answer stored.
    let mut reported = 0;
    loop {
        let outgoing = blocking(replica, {
            let space = space.clone();
            move |r| r.next_batch(&space)
        })
        .await?;
        let prefetched = match (prefetch.take(), &outgoing) {
            (Some(mut p), None) => Some(
                (&mut p.0)
                    .await
                    .map_err(|e| Error::Offline(e.to_string()))?,
            ),
            _ => None,
        };
        let result = match prefetched {
            Some(result) => result,
            None => {
                let (cursor, taken) = blocking(replica, {
                    let space = space.clone();
                    move |r| r.cursors(&space)
                })
                .await?;
                reported = taken;
                let request = SyncRequest {
                    client_id: replica.client_id(),
                    batch_id: outgoing.as_ref().map(|o| o.batch_id.clone()),
                    cursor,
                    changes: outgoing
                        .as_ref()
                        .map(|o| o.changes.clone())
                        .unwrap_or_default(),
                    limit: Some(PAGE),
                    conflict_cursor: (taken > cursor).then_some(taken),
                };
                remote.sync(space, &request).await
            }
        };
        let answer = match result {
            Ok(answer) => answer,
            Err(e) if e.code() == Some("cursor_expired") => {
                tracing::info!(%space, "cursor expired; pulling the space again");
                total.expired = true;
                blocking(replica, {
                    let space = space.clone();
                    move |r| r.begin_resync(&space)
                })
                .await?;
                continue;
            }
            Err(e) if refuses_bases(&e) && outgoing.as_ref().is_some_and(has_bases) => {
                // A server before protocol v1.2 (an old node during an
                // upgrade): the same batch without bases goes through.
                tracing::info!(%space, "the server takes no bases; sending the batch without");
                let batch = outgoing.map(|o| o.batch_id);
                blocking(replica, {
                    let space = space.clone();
                    move |r| match batch {
                        Some(batch) => r.strip_bases(&space, &batch),
                        None => Ok(()),
                    }
                })
                .await?;
                continue;
            }
            Err(e) if refused_for_good(&e) && outgoing.is_some() => {
                let batch = outgoing.map(|o| o.batch_id);
                tracing::warn!(%space, error = %e, "the server refused local changes; restoring its copy");
                total.rejected += blocking(replica, {
                    let space = space.clone();
                    move |r| match batch {
                        Some(batch) => r.reject_batch(&space, &batch, &e),
                        None => Ok(0),
                    }
                })
                .await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if answer.schema_version != 0 && answer.schema_version != replica.app_schema().version {
            // A newer schema is in force: later writes are judged by it.
            let held = remote.app_schema().await?;
            tracing::info!(version = held.version, "the app schema changed; holding it");
            blocking(replica, move |r| r.hold_app_schema(held)).await?;
        }
        let has_more = answer.has_more;
        reported = reported.max(answer.cursor);
        if has_more {
            prefetch = Some(Prefetch::start(
                replica,
                remote,
                space,
                answer.cursor,
                reported,
            ));
        }
        let (report, pending) = blocking(replica, {
            let space = space.clone();
            let batch = outgoing.map(|o| o.batch_id);
            move |r| r.store(&space, batch.as_ref(), answer)
        })
        .await?;
        total.pushed += report.pushed;
        total.pulled += report.pulled;
        total.conflicts += report.conflicts;
        total.resynced |= report.resynced;
        total.expired |= report.expired;
        total.rejected += report.rejected;
        progress(&total);
        if !has_more && !pending {
            // The records first, then the bytes they refer to.
            total.uploaded = super::files::upload_queued(replica, remote, space).await?;
            super::files::fetch_missing(replica, remote, space).await?;
            return Ok(total);
        }
    }
}

/// Whether the server refused a change for carrying `base`, as servers
/// before protocol v1.2 do (serde's words for an unknown key).
fn refuses_bases(e: &Error) -> bool {
    matches!(e, Error::Server { code, message, .. }
        if code == "invalid_change" && message.contains("unknown field `base`"))
}

fn has_bases(o: &super::Outgoing) -> bool {
    o.changes.iter().any(|c| match c {
        ferry_core::Change::Upsert { base, .. } | ferry_core::Change::Delete { base, .. } => {
            base.is_some()
        }
    })
}

/// A pull-only request already sent; aborted if dropped unused.
struct Prefetch(tokio::task::JoinHandle<Result<Answer>>);

impl Prefetch {
    fn start(
        replica: &Replica,
        remote: &Remote,
        space: &SpaceId,
        cursor: u64,
        reported: u64,
    ) -> Prefetch {
        let request = SyncRequest {
            client_id: replica.client_id(),
            batch_id: None,
            cursor,
            changes: Vec::new(),
            limit: Some(PAGE),
            conflict_cursor: (reported > cursor).then_some(reported),
        };
        let (remote, space) = (remote.clone(), space.clone());
        Prefetch(tokio::spawn(
            async move { remote.sync(&space, &request).await },
        ))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Replica {
    /// Whether changes of `space` wait in the outbox.
    pub fn has_pending(&self, space: &SpaceId) -> Result<bool> {
        super::has_pending(&self.conn(), space)
    }
}

/// Runs a storage step off the async threads: it may wait for the
/// replica's connection while another step (an app's write, a stored page)
/// holds it, and must not stall the app's runtime meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    replica: &Replica,
    f: impl FnOnce(&Replica) -> Result<T> + Send + 'static,
) -> Result<T> {
    let replica = replica.clone();
    tokio::task::spawn_blocking(move || f(&replica))
        .await
        .map_err(|e| Error::Invalid(format!("a storage step failed: {e}")))?
}
