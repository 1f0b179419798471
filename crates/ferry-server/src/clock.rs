//! The server's hybrid logical clock. Every response carries its reading,
//! REST writes are stamped with it, and it observes every HLC a client sends
//! so that it always reads after what it has seen.

use std::sync::{Mutex, PoisonError};

use ferry_core::{ClientId, Hlc};

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The server node's clock.
#[derive(Debug)]
pub struct ServerClock {
    last: Mutex<Hlc>,
}

impl ServerClock {
    /// A clock for node `node`.
    pub fn new(node: ClientId) -> Self {
        ServerClock {
            last: Mutex::new(Hlc::zero(node)),
        }
    }

    /// The next timestamp of this node.
    pub fn tick(&self) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = last.tick(wall_ms());
        last.clone()
    }

    /// Moves the clock past `remote`.
    pub fn observe(&self, remote: &Hlc) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = last.observe(remote, wall_ms());
    }
}
