//! The bridge between nodes sharing a PostgreSQL database: one task tells
//! the others about this node's commits and membership changes, one listens
//! to theirs. Both run until the node shuts down.
//!
//! The teller sends whatever piled up while its previous send was in flight
//! in one statement, so under load many commits of a space cost one
//! notification. The listener reconnects by itself; after a reconnection it
//! re-reads the heads of the spaces this node's clients follow, since
//! whatever was announced meanwhile was lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::ops::metrics::NodeEventOutcome;
use crate::store::feed::{Feed, FeedListener, Heard, NodeEvent};
use crate::store::{Store, StoreError};

use super::Realtime;

/// The longest wait between two attempts to reach the database.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the bridge when the store has other nodes to talk to; `None`
/// with SQLite.
pub fn spawn(realtime: Arc<Realtime>, store: Arc<dyn Store>) -> Option<JoinHandle<()>> {
    let feed = realtime.feed.clone()?;
    Some(tokio::spawn(async move {
        tokio::join!(
            tell(&realtime, feed.as_ref()),
            listen(&realtime, feed.as_ref(), store.as_ref()),
        );
    }))
}

async fn tell(realtime: &Realtime, feed: &dyn Feed) {
    loop {
        tokio::select! {
            () = realtime.closing() => return,
            () = realtime.outgoing_ready.notified() => {}
        }
        let events = realtime.take_outgoing();
        let n = events.len() as u64;
        match feed.announce(&events).await {
            Ok(()) => realtime.metrics.node_events(NodeEventOutcome::Sent, n),
            Err(e) => {
                // Other nodes' clients hear of these commits at their next
                // sync instead; nothing is lost but latency.
                realtime.metrics.node_events(NodeEventOutcome::Failed, n);
                tracing::warn!(error = %e, events = n, "cannot tell the other nodes about commits");
            }
        }
    }
}

async fn listen(realtime: &Realtime, feed: &dyn Feed, store: &dyn Store) {
    let mut backoff = Duration::from_millis(100);
    let mut listener: Option<Box<dyn FeedListener>> = None;
    let mut connected_before = false;
    loop {
        let heard = tokio::select! {
            () = realtime.closing() => return,
            heard = next(feed, &mut listener) => heard,
        };
        match heard {
            Ok(Heard::Event(event)) => {
                backoff = Duration::from_millis(100);
                realtime.metrics.node_events(NodeEventOutcome::Received, 1);
                match event {
                    NodeEvent::Commit { space, cursor } => realtime.publish(&space, cursor),
                    NodeEvent::Revoke { space, user } => {
                        realtime.hub.revoke(&space, &user);
                    }
                }
            }
            Ok(Heard::Reconnected) => {
                backoff = Duration::from_millis(100);
                if connected_before {
                    realtime.metrics.listener_reconnected();
                    tracing::info!("listening to the other nodes again");
                }
                connected_before = true;
                if let Err(e) = catch_up(realtime, store).await {
                    tracing::warn!(error = %e, "cannot re-read the heads of followed spaces");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the other nodes; reconnecting");
                tokio::select! {
                    () = realtime.closing() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The next thing heard, connecting first when there is no listener yet.
async fn next(
    feed: &dyn Feed,
    listener: &mut Option<Box<dyn FeedListener>>,
) -> Result<Heard, StoreError> {
    match listener {
        Some(l) => l.next().await,
        None => {
            *listener = Some(feed.listen().await?);
            tracing::debug!("listening to the other nodes");
            // The first connection may follow failed attempts, during which
            // commits went unheard: catch up as after a reconnection.
            Ok(Heard::Reconnected)
        }
    }
}

/// Publishes the current heads of every followed space; the hub skips the
/// ones its followers already know.
async fn catch_up(realtime: &Realtime, store: &dyn Store) -> Result<(), StoreError> {
    let followed = realtime.hub.followed();
    if followed.is_empty() {
        return Ok(());
    }
    for (space, head) in store.heads(&followed).await? {
        realtime.publish(&space, head);
    }
    Ok(())
}
