//! Realtime (PROTOCOL.md §8): `sync-available` signals over WebSocket
//! (`GET /v1/ws`) and Server-Sent Events (`GET /v1/spaces/{space}/stream`),
//! on every node.
//!
//! - [`hub`] fans a commit out to this node's connections, coalescing per
//!   space so that no consumer can hold anyone up.
//! - [`bridge`] carries commits and membership changes between the nodes
//!   sharing a PostgreSQL database (`LISTEN/NOTIFY`); with SQLite there is
//!   only this node and the hub alone does the work.
//! - [`ws`] and [`sse`] are the two transports; [`origin`] decides which
//!   web pages may open them.
//!
//! Signals are hints: a client that misses one still converges at its next
//! sync. The write path calls [`Realtime::committed`] after each commit
//! that moved a space's counter, never before.

pub mod bridge;
pub mod hub;
pub mod origin;
mod sse;
mod ws;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ferry_core::{SpaceId, UserId};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::wall_ms;
use crate::ops::metrics::{ConnectionKind, Metrics};
use crate::state::AppState;
use crate::store::api_tokens::ApiToken;
use crate::store::feed::{Feed, NodeEvent};

use self::hub::{Hub, Mailbox};

/// The limits and timings of realtime connections.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Origins (`https://app.example.com`) whose pages may connect, beside
    /// Ferry's own; `*` allows any. Requests without `Origin` (apps that
    /// are not web pages) are always allowed.
    pub allowed_origins: Vec<String>,
    /// How long a WebSocket may stay open without authenticating.
    pub auth_timeout: Duration,
    /// The largest message a client may send; larger closes the socket.
    pub max_message_bytes: usize,
    /// The most spaces one connection may follow.
    pub max_subscriptions: usize,
    /// How often the server pings an idle WebSocket; one that answers
    /// nothing for two intervals is closed.
    pub ping_interval: Duration,
    /// How long a send may wait on a client that does not read before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// How often an idle event stream gets a heartbeat comment.
    pub heartbeat_interval: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            allowed_origins: Vec::new(),
            auth_timeout: Duration::from_secs(10),
            max_message_bytes: 16 * 1024,
            max_subscriptions: 256,
            ping_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
        }
    }
}

/// This node's realtime state, shared by every connection.
#[derive(Debug)]
pub struct Realtime {
    /// Who follows which space on this node.
    pub hub: Hub,
    metrics: Arc<Metrics>,
    feed: Option<Arc<dyn Feed>>,
    /// Events waiting to be told to the other nodes, coalesced per space.
    outgoing: Mutex<Vec<NodeEvent>>,
    outgoing_ready: Notify,
    /// Woken when the app's backend wrote to a mirrored table (heard from
    /// the capture trigger) or when the node reconnected to the others:
    /// the capture drain looks for writes to apply.
    pub captured: Notify,
    /// Woken by every commit heard (this node's and the others'): the
    /// webhooks' dispatcher looks for news.
    pub webhooks: Notify,
    shutdown: CancellationToken,
    connections: tokio_util::task::TaskTracker,
    /// Ids of API tokens just revoked: the connections they opened end.
    revoked_tokens: tokio::sync::broadcast::Sender<Arc<str>>,
}

impl Realtime {
    /// Realtime over `feed` (the other nodes), if any.
    pub fn new(metrics: Arc<Metrics>, feed: Option<Arc<dyn Feed>>) -> Realtime {
        Realtime {
            hub: Hub::default(),
            metrics,
            feed,
            outgoing: Mutex::default(),
            outgoing_ready: Notify::new(),
            captured: Notify::new(),
            webhooks: Notify::new(),
            shutdown: CancellationToken::new(),
            connections: tokio_util::task::TaskTracker::new(),
            revoked_tokens: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// A commit moved `space`'s counter to `cursor`: tell its followers
    /// here, and the other nodes.
    pub fn committed(&self, space: &SpaceId, cursor: u64) {
        self.publish(space, cursor);
        self.tell_nodes(NodeEvent::Commit {
            space: space.clone(),
            cursor,
        });
    }

    /// `user` left or was removed from `space`: their connections stop
    /// following it, here and on the other nodes.
    pub fn member_removed(&self, space: &SpaceId, user: &UserId) {
        self.hub.revoke(space, user);
        self.tell_nodes(NodeEvent::Revoke {
            space: space.clone(),
            user: user.clone(),
        });
    }

    /// The API token `id` was revoked: the connections it opened end, here
    /// and on the other nodes.
    pub fn token_revoked(&self, id: &str) {
        self.end_token_connections(id);
        self.tell_nodes(NodeEvent::TokenRevoked { id: id.to_owned() });
    }

    /// Ends this node's connections opened with the API token `id`
    /// ([`EVERY_TOKEN`]: with any).
    fn end_token_connections(&self, id: &str) {
        // No receiver is no connection to end.
        let _ = self.revoked_tokens.send(Arc::from(id));
    }

    /// The revocations announced from now on: a connection takes this
    /// before it checks its token, so that none made after the check is
    /// missed ([`TokenWatch::of`]).
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.revoked_tokens.subscribe()
    }

    /// Publishes a head to this node's followers, counting it.
    fn publish(&self, space: &SpaceId, cursor: u64) {
        self.webhooks.notify_one();
        let published = self.hub.publish(space, cursor);
        self.metrics.observe_publish(published.coalesced);
    }

    fn tell_nodes(&self, event: NodeEvent) {
        if self.feed.is_none() {
            return;
        }
        let mut outgoing = self.outgoing.lock().unwrap_or_else(PoisonError::into_inner);
        let newer = |old: &NodeEvent| match (old, &event) {
            (
                NodeEvent::Commit {
                    space: a,
                    cursor: x,
                },
                NodeEvent::Commit {
                    space: b,
                    cursor: y,
                },
            ) => a == b && x <= y,
            _ => false,
        };
        outgoing.retain(|old| !newer(old));
        outgoing.push(event);
        drop(outgoing);
        self.outgoing_ready.notify_one();
    }

    fn take_outgoing(&self) -> Vec<NodeEvent> {
        std::mem::take(&mut *self.outgoing.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Closes every realtime connection of this node (and stops the
    /// bridge): open streams would otherwise keep a graceful shutdown
    /// waiting forever.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Completes when the node shuts down.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Counts an open connection of `kind` until the guard drops.
    pub fn opened(&self, kind: ConnectionKind) -> Open {
        Open {
            _metric: self.metrics.connection_opened(kind),
            _tracked: self.connections.token(),
        }
    }

    /// Waits (at most `within`) until every realtime connection has ended
    /// after [`Realtime::shutdown`]: WebSockets are not HTTP requests the
    /// server waits for, and a process that exits at once would cut them
    /// before their close frame is out.
    pub async fn drained(&self, within: Duration) {
        self.connections.close();
        if tokio::time::timeout(within, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections.len(),
                "realtime connections still open at shutdown"
            );
        }
    }
}

/// An open realtime connection: counted in the metrics, and waited for at
/// shutdown, until dropped.
#[derive(Debug)]
pub struct Open {
    _metric: crate::ops::metrics::OpenConnection,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// When a connection authenticated by `token` must end: the token's `exp`
/// ([`crate::auth::expiry`]); at once when it has none that can be read
/// (every verifier requires one, so that is never a reason to last).
pub(crate) fn deadline(token: &str) -> Instant {
    let left_ms = crate::auth::expiry(token)
        .map_or(0, |exp| exp.saturating_mul(1000).saturating_sub(wall_ms()));
    Instant::now() + Duration::from_millis(left_ms)
}

/// The revocation that ends every connection opened with an API token
/// (no token id has this shape).
pub(crate) const EVERY_TOKEN: &str = "*";

/// A connection's watch on the revocation of its API token.
#[derive(Debug)]
pub struct TokenWatch(Option<(String, tokio::sync::broadcast::Receiver<Arc<str>>)>);

impl TokenWatch {
    /// The watch of a connection opened by `token` (an API token's, if
    /// any), over `revocations` taken before the token was checked.
    pub fn of(
        token: Option<&Arc<ApiToken>>,
        revocations: tokio::sync::broadcast::Receiver<Arc<str>>,
    ) -> TokenWatch {
        TokenWatch(token.map(|t| (t.id.clone(), revocations)))
    }

    /// Completes when the token is revoked (or when revocations came too
    /// fast to follow, so that it may have been: the client reconnects and
    /// is checked again); never for a session's connection.
    pub async fn revoked(&mut self) {
        let Some((id, revoked)) = &mut self.0 else {
            return std::future::pending().await;
        };
        loop {
            match revoked.recv().await {
                Ok(gone) if *gone == **id || &*gone == EVERY_TOKEN => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// When a connection of `caller` must end: its API token's expiry, or the
/// `exp` of its access token ([`deadline`]).
pub(crate) fn caller_deadline(caller: &crate::auth::AuthUser, token: &str) -> Option<Instant> {
    match &caller.token {
        Some(grant) => grant
            .expires_at
            .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(wall_ms()))),
        None => Some(deadline(token)),
    }
}

/// Completes at `deadline`, or never without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection's subscriptions: unsubscribed from the hub when dropped,
/// however the connection ends.
#[derive(Debug)]
pub struct Subscriptions {
    realtime: Arc<Realtime>,
    /// The connection's mailbox.
    pub mailbox: Arc<Mailbox>,
    /// Each followed space with the last cursor sent for it.
    followed: Vec<(SpaceId, u64)>,
}

impl Subscriptions {
    /// No subscriptions yet, for a connection of `user`.
    pub fn new(realtime: Arc<Realtime>, user: UserId) -> Subscriptions {
        let mailbox = realtime.hub.mailbox(user);
        Subscriptions {
            realtime,
            mailbox,
            followed: Vec::new(),
        }
    }

    /// How many spaces are followed.
    pub fn len(&self) -> usize {
        self.followed.len()
    }

    /// Whether no space is followed.
    pub fn is_empty(&self) -> bool {
        self.followed.is_empty()
    }

    /// Whether `space` is followed.
    pub fn follows(&self, space: &SpaceId) -> bool {
        self.followed.iter().any(|(s, _)| s == space)
    }

    /// Starts following `space` (before the membership check, so that a
    /// removal committed after the check is sure to find it).
    pub fn follow(&mut self, space: &SpaceId) {
        if !self.follows(space) {
            self.realtime.hub.follow(&self.mailbox, space);
            self.followed.push((space.clone(), 0));
        }
    }

    /// Stops following `spaces`.
    pub fn unfollow(&mut self, spaces: &[SpaceId]) {
        self.realtime.hub.leave(&self.mailbox, spaces);
        self.forget(spaces);
    }

    /// Forgets `spaces`, already unsubscribed in the hub (revoked).
    pub fn forget(&mut self, spaces: &[SpaceId]) {
        self.followed.retain(|(s, _)| !spaces.contains(s));
    }

    /// Whether a signal of `space` at `cursor` is news to this connection;
    /// if so, it counts as sent from now on.
    pub fn is_news(&mut self, space: &SpaceId, cursor: u64) -> bool {
        match self.followed.iter_mut().find(|(s, _)| s == space) {
            Some((_, sent)) if *sent < cursor => {
                *sent = cursor;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let spaces: Vec<&SpaceId> = self.followed.iter().map(|(s, _)| s).collect();
        self.realtime.hub.leave(&self.mailbox, spaces);
    }
}

/// The routes of this area, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/spaces/{space}/stream", get(sse::stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_a_connection_has_not_taken_yet_coalesce() {
        let metrics = Arc::new(Metrics::new());
        let realtime = Arc::new(Realtime::new(metrics.clone(), None));
        let space = SpaceId::new("team").unwrap();
        let mut subs = Subscriptions::new(realtime.clone(), UserId::new("u1").unwrap());
        subs.follow(&space);
        for cursor in 1..=5 {
            realtime.committed(&space, cursor);
        }
        let inbox = subs.mailbox.next().await;
        assert_eq!(inbox.signals, vec![(space.clone(), 5)]);
        assert!(subs.is_news(&space, 5));
        assert!(!subs.is_news(&space, 4));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("ferry_realtime_signals_coalesced_total 4"),
            "{text}"
        );
        // Without other nodes, nothing waits to be told to them.
        assert!(realtime.take_outgoing().is_empty());
        drop(subs);
        assert!(realtime.hub.followed().is_empty());
    }

    #[test]
    fn commits_waiting_for_other_nodes_coalesce_per_space() {
        #[derive(Debug)]
        struct NoFeed;
        #[async_trait::async_trait]
        impl Feed for NoFeed {
            async fn announce(&self, _: &[NodeEvent]) -> Result<(), crate::store::StoreError> {
                Ok(())
            }
            async fn listen(
                &self,
            ) -> Result<Box<dyn crate::store::feed::FeedListener>, crate::store::StoreError>
            {
                Err(crate::store::StoreError::Unavailable("no".into()))
            }
        }
        let realtime = Realtime::new(Arc::new(Metrics::new()), Some(Arc::new(NoFeed)));
        let (a, b) = (SpaceId::new("a").unwrap(), SpaceId::new("b").unwrap());
        let user = UserId::new("u1").unwrap();
        realtime.committed(&a, 1);
        realtime.committed(&b, 1);
        realtime.committed(&a, 2);
        realtime.member_removed(&a, &user);
        realtime.committed(&a, 3);
        assert_eq!(
            realtime.take_outgoing(),
            vec![
                NodeEvent::Commit {
                    space: b,
                    cursor: 1
                },
                NodeEvent::Revoke {
                    space: a.clone(),
                    user
                },
                NodeEvent::Commit {
                    space: a,
                    cursor: 3
                },
            ]
        );
    }
}
