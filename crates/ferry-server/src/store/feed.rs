//! What server nodes sharing one database tell each other: a space's head
//! moved, a member left a space, or an API token was revoked. The PostgreSQL backend carries these
//! events over `LISTEN/NOTIFY`; SQLite has no other node to tell.
//!
//! Events are hints, never data: a node that misses one (its listening
//! connection dropped) re-reads the heads it cares about, and clients sync
//! on their own schedule anyway.

use async_trait::async_trait;
use ferry_core::{SpaceId, UserId};

use super::StoreError;

/// One thing that happened on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A commit moved `space`'s `seq` to `cursor`.
    Commit {
        /// The space.
        space: SpaceId,
        /// Its `seq` after the commit.
        cursor: u64,
    },
    /// `user` is no longer a member of `space`.
    Revoke {
        /// The space.
        space: SpaceId,
        /// Who left or was removed.
        user: UserId,
    },
    /// The API token `id` was revoked: connections it opened end.
    TokenRevoked {
        /// The token's public id.
        id: String,
    },
    /// The app's backend wrote to a mirrored table (docs/tables.md): a
    /// write waits in `captured` for a node to apply it. Sent by the
    /// capture trigger, never by a node.
    Captured,
}

impl NodeEvent {
    /// The event as a notification payload: `c <cursor> <space>` or
    /// `r <space> <user>` (ids never contain spaces).
    pub fn encode(&self) -> String {
        match self {
            NodeEvent::Commit { space, cursor } => format!("c {cursor} {space}"),
            NodeEvent::Revoke { space, user } => format!("r {space} {user}"),
            NodeEvent::TokenRevoked { id } => format!("t {id}"),
            NodeEvent::Captured => "k".to_owned(),
        }
    }

    /// Reads a payload written by [`NodeEvent::encode`]; `None` for anything
    /// else (a newer node's event kind, or a stray `NOTIFY`).
    pub fn decode(payload: &str) -> Option<NodeEvent> {
        if payload == "k" {
            return Some(NodeEvent::Captured);
        }
        if let Some(id) = payload.strip_prefix("t ") {
            let ok = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            return ok.then(|| NodeEvent::TokenRevoked { id: id.to_owned() });
        }
        let mut parts = payload.split(' ');
        let event = match (parts.next()?, parts.next()?, parts.next()?) {
            ("c", cursor, space) => NodeEvent::Commit {
                space: SpaceId::new(space).ok()?,
                cursor: cursor.parse().ok()?,
            },
            ("r", space, user) => NodeEvent::Revoke {
                space: SpaceId::new(space).ok()?,
                user: UserId::new(user).ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(event)
    }
}

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// An event of another node (or of this one: each node hears its own
    /// too).
    Event(NodeEvent),
    /// The listening connection was lost and is back: events sent meanwhile
    /// are lost, so whatever they would have said must be re-read.
    Reconnected,
}

/// The channel between the nodes sharing a database.
#[async_trait]
pub trait Feed: Send + Sync + std::fmt::Debug {
    /// Tells every node (this one included) about `events`.
    async fn announce(&self, events: &[NodeEvent]) -> Result<(), StoreError>;

    /// Starts listening.
    async fn listen(&self) -> Result<Box<dyn FeedListener>, StoreError>;
}

/// A node's one listening connection.
#[async_trait]
pub trait FeedListener: Send {
    /// The next thing heard. Reconnects by itself when its connection was
    /// lost, and then says so with [`Heard::Reconnected`]; an error means it
    /// could not reconnect this time (the caller waits and asks again).
    async fn next(&mut self) -> Result<Heard, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = [
            NodeEvent::Commit {
                space: SpaceId::new("user:u_1").unwrap(),
                cursor: 57,
            },
            NodeEvent::Revoke {
                space: SpaceId::new("team-a").unwrap(),
                user: UserId::new("u_2").unwrap(),
            },
            NodeEvent::TokenRevoked {
                id: "AbC-_9".to_owned(),
            },
            NodeEvent::Captured,
        ];
        for event in events {
            assert_eq!(NodeEvent::decode(&event.encode()), Some(event));
        }
    }

    #[test]
    fn stray_payloads_are_ignored() {
        for payload in [
            "",
            "c",
            "c 1",
            "c x team",
            "c -1 team",
            "c 1 team extra",
            "c 1 bad/space",
            "r team",
            "r team bad user",
            "x 1 team",
            "k 1",
            "t ",
            "t a b",
        ] {
            assert_eq!(NodeEvent::decode(payload), None, "{payload:?}");
        }
    }
}
