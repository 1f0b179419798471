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
                    NodeEvent::TokenRevoked { id } => realtime.end_token_connections(&id),
                    NodeEvent::Captured => realtime.captured.notify_one(),
                }
            }
            Ok(Heard::Reconnected) => {
                backoff = Duration::from_millis(100);
                if connected_before {
                    realtime.metrics.listener_reconnected();
                    tracing::info!("listening to the other nodes again");
                    // A revocation may have been missed meanwhile:
                    // connections opened with API tokens end, and are
                    // checked again when their clients reconnect.
                    realtime.end_token_connections(super::EVERY_TOKEN);
                }
                connected_before = true;
                // Writes captured while nobody listened are waiting.
                realtime.captured.notify_one();
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

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use ferry_core::{Change, ClientId, SpaceId, UserId};
    use serde_json::json;
    use tokio::sync::{Mutex, mpsc};

    use super::*;
    use crate::ops::metrics::Metrics;
    use crate::realtime::Subscriptions;
    use crate::store::Batch;

    /// A feed whose listener hears what the test sends it.
    #[derive(Debug)]
    struct Scripted(Arc<Mutex<mpsc::UnboundedReceiver<Result<Heard, StoreError>>>>);

    struct ScriptedListener(Arc<Mutex<mpsc::UnboundedReceiver<Result<Heard, StoreError>>>>);

    #[async_trait]
    impl FeedListener for ScriptedListener {
        async fn next(&mut self) -> Result<Heard, StoreError> {
            match self.0.lock().await.recv().await {
                Some(heard) => heard,
                None => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl Feed for Scripted {
        async fn announce(&self, _: &[NodeEvent]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn listen(&self) -> Result<Box<dyn FeedListener>, StoreError> {
            Ok(Box::new(ScriptedListener(self.0.clone())))
        }
    }

    #[tokio::test]
    async fn heard_events_reach_followers_and_a_reconnection_catches_up() {
        let (store, _guard) = crate::testing::fresh_sqlite().await;
        let user = UserId::new("u1").unwrap();
        let space = SpaceId::new("team").unwrap();
        store.ensure_user(&user).await.unwrap();
        store.create_space(&space, "Team", &user).await.unwrap();

        let (script, heard) = mpsc::unbounded_channel();
        let feed = Scripted(Arc::new(Mutex::new(heard)));
        let realtime = Arc::new(Realtime::new(
            Arc::new(Metrics::new()),
            Some(Arc::new(feed)),
        ));
        let mut subs = Subscriptions::new(realtime.clone(), user.clone());
        subs.follow(&space);
        let bridge = spawn(realtime.clone(), store.clone()).unwrap();

        // Another node's commit.
        let commit = NodeEvent::Commit {
            space: space.clone(),
            cursor: 7,
        };
        script.send(Ok(Heard::Event(commit))).unwrap();
        assert_eq!(subs.mailbox.next().await.signals, vec![(space.clone(), 7)]);

        // A commit made while the listener was away is read back after
        // it reconnects (this node's own commits are announced here at
        // once; this one goes to the store behind the hub's back).
        let change: Change = serde_json::from_value(json!({
            "op": "upsert", "collection": "todos", "id": "t1",
            "fields": {"title": {"value": "x", "hlc": "000000000000001:00000:n"}}
        }))
        .unwrap();
        for n in 0..8 {
            let mut change = change.clone();
            if let Change::Upsert { id, .. } = &mut change {
                *id = ferry_core::RecordId::new(format!("t{n}")).unwrap();
            }
            let batch = Batch {
                user: ferry_core::UserId::new("u").unwrap(),
                client_id: ClientId::new("c").unwrap(),
                batch_id: None,
                cursor: None,
                changes: vec![change],
                schema: None,
                actor: None,
            };
            store.push(&space, batch).await.unwrap();
        }
        script
            .send(Err(StoreError::Unavailable("cut".into())))
            .unwrap();
        script.send(Ok(Heard::Reconnected)).unwrap();
        assert_eq!(subs.mailbox.next().await.signals, vec![(space.clone(), 8)]);

        // Another node removed the user.
        let revoke = NodeEvent::Revoke {
            space: space.clone(),
            user,
        };
        script.send(Ok(Heard::Event(revoke))).unwrap();
        assert_eq!(subs.mailbox.next().await.revoked, vec![space]);

        realtime.shutdown();
        tokio::time::timeout(Duration::from_secs(5), bridge)
            .await
            .unwrap()
            .unwrap();
    }
}
