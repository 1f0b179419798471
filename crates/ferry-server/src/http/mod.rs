//! What one connection may cost: how long its headers and body may take to
//! arrive, how long it may sit idle, and how many connections a node holds
//! at once. [`crate::server::run`] applies them to every connection;
//! [`deadline`] bounds the time a request body may take.

pub mod deadline;
pub mod per_address;
pub mod percent;
pub mod proxy;

use std::time::Duration;

/// The limits of the HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may wait for a request's headers to arrive in
    /// full, counted from when it starts waiting: for a new connection,
    /// from its accept; for a kept-alive one, from the end of its last
    /// answer (so it is also the keep-alive idle time). Then it is closed.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive in full, from when the
    /// request's headers arrived, plus a second for every
    /// [`MIN_BODY_RATE`] bytes its `Content-Length` announces (so a large
    /// batch from a slow uplink still makes it). A body still arriving
    /// then is answered `408 request_timeout` and its connection closed.
    pub body_timeout: Duration,
    /// How long a write may wait for the client to take data (its receive
    /// window shut) before the connection is closed.
    pub write_timeout: Duration,
    /// The most connections one client address (an IPv6 one by its /64)
    /// holds at once; 0 for no cap. Trusted proxies are not counted.
    pub max_connections_per_address: usize,
    /// Whether connections from loopback (a reverse proxy on the same
    /// machine, whose clients all come from there) go uncounted.
    pub exempt_loopback: bool,
    /// The most connections held open at once (realtime ones included);
    /// beyond it, new connections wait in the listen queue until one
    /// closes. Keep it below the process's open-files limit, so that the
    /// node can always open its database files and sockets.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections_per_address: 256,
            exempt_loopback: true,
            max_connections: 10_000,
        }
    }
}

/// The slowest upload a body deadline allows for: 64 KiB a second.
pub const MIN_BODY_RATE: u64 = 64 * 1024;

/// Open files kept for everything but client connections: database
/// files and connections, the listener, logs.
pub const RESERVED_FILES: u64 = 128;

/// The most connections a process allowed `open_files` files can hold
/// and still open what else it needs; at least one.
pub fn connections_within(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_file_limit() {
        assert_eq!(connections_within(400), 272);
        assert_eq!(connections_within(100), 1);
        assert_eq!(connections_within(1_048_576), 1_048_448);
    }
}
