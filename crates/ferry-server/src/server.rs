//! Serving the API on a listener until the caller says stop.
//!
//! Each connection is served by hyper with the limits of
//! [`crate::http::HttpLimits`]: its headers (and its idle time between
//! kept-alive requests) are bounded by the header timeout, its bodies by the
//! body timeout, and the node holds at most `max_connections` at once: past
//! that it stops accepting until one closes, so that sockets nobody talks on
//! cannot use up the open files the node needs for its database and its
//! real clients.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::http::per_address::{AddressSlot, Admission, PerAddress};
use crate::realtime::bridge;
use crate::routes::app;
use crate::state::AppState;

/// Serves on `listener` until `shutdown` completes, then closes the
/// realtime connections, finishes the requests in flight and returns. With
/// PostgreSQL, also runs the bridge that carries realtime signals between
/// nodes; and it reads the app schema every second
/// ([`crate::app_schema::watch`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let realtime = state.realtime.clone();
    let limits = state.settings.http.clone();
    let trusted = state.settings.trusted_proxies.clone();
    // However this future ends (finished, or dropped by its caller), the
    // realtime connections close and the bridge stops: they hold the
    // state, and with it the database pool.
    let _stopping = Stopping {
        realtime: realtime.clone(),
        bridge: bridge::spawn(realtime.clone(), state.store.clone()),
        schema: crate::app_schema::watch(state.clone()),
        capture: crate::sync::capture::spawn(state.clone()),
        webhooks: crate::webhooks::spawn(state.clone()),
        files: crate::files::collector::spawn(state.clone()),
    };
    let router = app(state);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let per_address = PerAddress::new(
        limits.max_connections_per_address,
        limits.exempt_loopback,
        trusted,
    );
    let connections = TaskTracker::new();
    // Dropped (closed) when the node stops: every connection then finishes
    // its request in flight and closes.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of files or memory for a moment: wait rather
                    // than spin (connections closing will free some).
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let address = match per_address.admit(peer.ip()) {
            Admission::Refused => {
                // Told in the protocol's words when the socket takes them
                // at once; closed either way.
                let _ = stream.try_write(TOO_MANY_FROM_ADDRESS);
                tracing::debug!(%peer, "too many connections from one address");
                continue;
            }
            Admission::Counted(slot) => Some(slot),
            Admission::Exempt => None,
        };
        // Signals are small and must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // Whether a request ever arrived on the connection: one that has
        // none yet is closed at once when the node stops (graceful shutdown
        // would wait for its first request).
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                let mut req = req.map(Body::new);
                // For per-address rate limits (axum's `ConnectInfo`).
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let io = TokioIo::new(Counted {
            stream,
            _slot: slot,
            _address: address,
            write_timeout: limits.write_timeout,
            stalled: None,
        });
        let (builder, mut stop) = (builder.clone(), stop_rx.clone());
        connections.spawn(async move {
            let conn = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => log_end(peer, served),
                _ = stop.changed() => {
                    if started.load(Ordering::Relaxed) {
                        conn.as_mut().graceful_shutdown();
                        log_end(peer, conn.await);
                    }
                }
            }
        });
    }
    drop(listener);
    // Realtime connections never end by themselves: close them first, or
    // the graceful shutdown would wait for them forever.
    realtime.shutdown();
    drop(stop_tx);
    connections.close();
    // Requests in flight finish; a connection that does not by then (a
    // client that stopped reading is closed by the write timeout anyway)
    // does not hold the node up.
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "stopping with connections still open after {SHUTDOWN_GRACE:?}"
        );
    }
    realtime.drained(Duration::from_secs(2)).await;
    Ok(())
}

/// Closes the realtime connections and stops the bridge when dropped.
struct Stopping {
    realtime: Arc<crate::realtime::Realtime>,
    bridge: Option<tokio::task::JoinHandle<()>>,
    schema: tokio::task::JoinHandle<()>,
    capture: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
    files: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Stopping {
    fn drop(&mut self) {
        self.realtime.shutdown();
        if let Some(bridge) = &self.bridge {
            bridge.abort();
        }
        self.schema.abort();
        self.capture.abort();
        self.webhooks.abort();
        if let Some(files) = &self.files {
            files.abort();
        }
    }
}

/// The answer to a connection past its address's share.
const TOO_MANY_FROM_ADDRESS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\n\
Content-Type: application/json\r\nRetry-After: 1\r\nContent-Length: 84\r\n\r\n\
{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many connections from this address\"}}";

/// How long a stopping node waits for its requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn log_end(peer: SocketAddr, served: Result<(), hyper::Error>) {
    if let Err(e) = served {
        // A client that hung up or timed out: routine, not an error of
        // Ferry's.
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// A client's socket holding its connection slot until it closes, also
/// when it outlives its HTTP connection as a WebSocket. A write that waits
/// longer than the write timeout for the client to take data (a client
/// that stopped reading, its window shut) fails, and the connection with
/// it: such a client cannot hold a slot, nor a shutdown, forever.
struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
    write_timeout: Duration,
    /// Running while a write waits; reset by every write that goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Counted {
    /// `poll`'s answer, unless it has been waiting longer than the write
    /// timeout.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no data within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.timed(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.timed(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.timed(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
