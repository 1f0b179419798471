//! Serving the API on a listener until the caller says stop.

use std::future::Future;

use tokio::net::TcpListener;

use crate::realtime::bridge;
use crate::routes::app;
use crate::state::AppState;

/// Serves on `listener` until `shutdown` completes, then closes the
/// realtime connections, finishes the requests in flight and returns. With
/// PostgreSQL, also runs the bridge that carries realtime signals between
/// nodes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let realtime = state.realtime.clone();
    let bridge = bridge::spawn(realtime.clone(), state.store.clone());
    // Realtime connections never end by themselves: close them first, or
    // the graceful shutdown would wait for them forever.
    let closing = realtime.clone();
    let shutdown = async move {
        shutdown.await;
        closing.shutdown();
    };
    // With the peer's address, for per-address rate limits.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    realtime.drained(std::time::Duration::from_secs(2)).await;
    if let Some(bridge) = bridge {
        bridge.abort();
    }
    served
}
