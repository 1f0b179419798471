//! The in-process hub: which connections of this node follow which space,
//! and the mailbox each connection reads its signals from.
//!
//! Publishing never waits on a connection. Each connection has a mailbox
//! holding at most one pending signal per space (a newer cursor replaces an
//! older one: only the latest matters, since the client syncs to the head
//! anyway), so a slow or stuck consumer costs a few bytes and stalls no one.
//! The locks are std mutexes held for a few map operations and never across
//! an `.await`, which is cheaper than an async lock for that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use ferry_core::{SpaceId, UserId};
use tokio::sync::Notify;

/// What a publication did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Mailboxes that got a new pending signal.
    pub posted: u64,
    /// Mailboxes whose pending signal for the space was replaced by the new
    /// one (the older one will never be sent).
    pub coalesced: u64,
}

/// What a connection has to deliver.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inbox {
    /// The latest cursor of each space that moved, in the order they first
    /// moved.
    pub signals: Vec<(SpaceId, u64)>,
    /// Spaces the user lost access to; their subscription is gone.
    pub revoked: Vec<SpaceId>,
}

impl Inbox {
    /// Whether there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.revoked.is_empty()
    }
}

/// One connection's mailbox.
#[derive(Debug)]
pub struct Mailbox {
    id: u64,
    user: UserId,
    inbox: Mutex<Inbox>,
    wake: Notify,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts a signal; true when it replaced a pending one of the space.
    fn post(&self, space: &SpaceId, cursor: u64) -> bool {
        let mut inbox = self.lock();
        let coalesced = match inbox.signals.iter_mut().find(|(s, _)| s == space) {
            Some((_, pending)) => {
                *pending = (*pending).max(cursor);
                true
            }
            None => {
                inbox.signals.push((space.clone(), cursor));
                false
            }
        };
        drop(inbox);
        self.wake.notify_one();
        coalesced
    }

    fn revoke(&self, space: &SpaceId) {
        let mut inbox = self.lock();
        inbox.signals.retain(|(s, _)| s != space);
        inbox.revoked.push(space.clone());
        drop(inbox);
        self.wake.notify_one();
    }

    /// Waits until something was posted (returns at once if something was
    /// posted since the last wait), then takes it all.
    pub async fn next(&self) -> Inbox {
        loop {
            self.wake.notified().await;
            let inbox = std::mem::take(&mut *self.lock());
            if !inbox.is_empty() {
                return inbox;
            }
        }
    }

    /// Takes whatever is pending without waiting.
    pub fn take(&self) -> Inbox {
        std::mem::take(&mut *self.lock())
    }

    /// The user this connection acts for.
    pub fn user(&self) -> &UserId {
        &self.user
    }
}

#[derive(Debug, Default)]
struct Followers {
    /// The highest cursor published for the space: a signal at or below it
    /// (this node's own commit heard back from the database, a late
    /// duplicate) is not news.
    last: AtomicU64,
    mailboxes: HashMap<u64, Arc<Mailbox>>,
}

/// Every subscription of this node, by space.
#[derive(Debug, Default)]
pub struct Hub {
    spaces: RwLock<HashMap<SpaceId, Followers>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A mailbox for a new connection of `user`; subscribe it to spaces with
    /// [`Hub::follow`] and drop the subscriptions with [`Hub::leave`].
    pub fn mailbox(&self, user: UserId) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            inbox: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// Subscribes `mailbox` to `space`.
    pub fn follow(&self, mailbox: &Arc<Mailbox>, space: &SpaceId) {
        let mut spaces = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
        spaces
            .entry(space.clone())
            .or_default()
            .mailboxes
            .insert(mailbox.id, mailbox.clone());
    }

    /// Unsubscribes `mailbox` from `spaces`.
    pub fn leave<'a>(&self, mailbox: &Mailbox, spaces: impl IntoIterator<Item = &'a SpaceId>) {
        let mut map = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
        for space in spaces {
            if let Some(followers) = map.get_mut(space) {
                followers.mailboxes.remove(&mailbox.id);
                if followers.mailboxes.is_empty() {
                    map.remove(space);
                }
            }
        }
    }

    /// Tells every follower of `space` that its head is now `cursor`,
    /// unless a cursor as high was published already.
    pub fn publish(&self, space: &SpaceId, cursor: u64) -> Published {
        let spaces = self.spaces.read().unwrap_or_else(PoisonError::into_inner);
        let mut published = Published::default();
        let Some(followers) = spaces.get(space) else {
            return published;
        };
        if followers.last.fetch_max(cursor, Ordering::AcqRel) >= cursor {
            return published;
        }
        for mailbox in followers.mailboxes.values() {
            published.posted += 1;
            if mailbox.post(space, cursor) {
                published.coalesced += 1;
            }
        }
        published
    }

    /// Ends the subscriptions of `user` to `space`, telling their
    /// connections. Returns how many there were.
    pub fn revoke(&self, space: &SpaceId, user: &UserId) -> usize {
        let mut map = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
        let Some(followers) = map.get_mut(space) else {
            return 0;
        };
        let mut revoked = 0;
        followers.mailboxes.retain(|_, mailbox| {
            let keep = &mailbox.user != user;
            if !keep {
                mailbox.revoke(space);
                revoked += 1;
            }
            keep
        });
        if followers.mailboxes.is_empty() {
            map.remove(space);
        }
        revoked
    }

    /// The spaces anyone on this node follows.
    pub fn followed(&self) -> Vec<SpaceId> {
        let spaces = self.spaces.read().unwrap_or_else(PoisonError::into_inner);
        spaces.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(s: &str) -> SpaceId {
        SpaceId::new(s).unwrap()
    }

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[tokio::test]
    async fn followers_get_the_latest_cursor_once() {
        let hub = Hub::default();
        let a = hub.mailbox(user("u1"));
        let b = hub.mailbox(user("u2"));
        hub.follow(&a, &space("s"));
        hub.follow(&b, &space("s"));
        hub.follow(&a, &space("t"));
        assert_eq!(
            hub.publish(&space("s"), 1),
            Published {
                posted: 2,
                coalesced: 0
            }
        );
        assert_eq!(
            hub.publish(&space("s"), 3),
            Published {
                posted: 2,
                coalesced: 2
            }
        );
        // Old news: nothing posted.
        assert_eq!(hub.publish(&space("s"), 2), Published::default());
        assert_eq!(hub.publish(&space("t"), 5).posted, 1);
        assert_eq!(hub.publish(&space("nobody"), 5), Published::default());
        let inbox = a.next().await;
        assert_eq!(inbox.signals, vec![(space("s"), 3), (space("t"), 5)]);
        assert_eq!(b.next().await.signals, vec![(space("s"), 3)]);
        assert!(a.take().is_empty());
    }

    #[tokio::test]
    async fn leaving_and_revoking_stop_signals() {
        let hub = Hub::default();
        let a = hub.mailbox(user("u1"));
        let b = hub.mailbox(user("u2"));
        hub.follow(&a, &space("s"));
        hub.follow(&b, &space("s"));
        hub.publish(&space("s"), 1);
        assert_eq!(hub.revoke(&space("s"), &user("u1")), 1);
        // The pending signal went with the subscription.
        let inbox = a.next().await;
        assert!(inbox.signals.is_empty());
        assert_eq!(inbox.revoked, vec![space("s")]);
        hub.leave(&b, [&space("s")]);
        assert!(hub.followed().is_empty());
        assert_eq!(hub.publish(&space("s"), 2), Published::default());
        assert_eq!(hub.revoke(&space("s"), &user("u1")), 0);
    }

    #[test]
    fn a_space_starts_over_once_nobody_follows_it() {
        let hub = Hub::default();
        let a = hub.mailbox(user("u1"));
        hub.follow(&a, &space("s"));
        hub.publish(&space("s"), 9);
        hub.leave(&a, [&space("s")]);
        hub.follow(&a, &space("s"));
        assert_eq!(hub.publish(&space("s"), 4).posted, 1);
    }
}
