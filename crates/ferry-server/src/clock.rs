//! The server's hybrid logical clock. Every response carries its reading,
//! REST writes are stamped with it, and it observes every HLC a client sends
//! so that it always reads after what it has seen.

use std::sync::{Arc, Mutex, PoisonError};

use ferry_core::{ClientId, Hlc};

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a clock reads milliseconds since the Unix epoch.
type TimeSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The server node's clock.
pub struct ServerClock {
    last: Mutex<Hlc>,
    time: Option<TimeSource>,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock")
            .field("last", &self.last)
            .field("custom_time", &self.time.is_some())
            .finish()
    }
}

impl ServerClock {
    /// A clock for node `node`, on the wall clock.
    pub fn new(node: ClientId) -> Self {
        ServerClock {
            last: Mutex::new(Hlc::zero(node)),
            time: None,
        }
    }

    /// A clock for node `node` reading the time from `now` (milliseconds
    /// since the Unix epoch): for simulations that drive time themselves.
    /// Both the HLC and the clock-skew check read it.
    pub fn with_time(node: ClientId, now: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        ServerClock {
            last: Mutex::new(Hlc::zero(node)),
            time: Some(Arc::new(now)),
        }
    }

    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> u64 {
        match &self.time {
            Some(now) => now(),
            None => wall_ms(),
        }
    }

    /// The next timestamp of this node.
    pub fn tick(&self) -> Hlc {
        let now = self.now_ms();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = last.tick(now);
        last.clone()
    }

    /// Moves the clock past `remote`.
    pub fn observe(&self, remote: &Hlc) {
        let now = self.now_ms();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = last.observe(remote, now);
    }
}
