//! Serving the API on a listener until the caller says stop.

use std::future::Future;

use tokio::net::TcpListener;

use crate::routes::app;
use crate::state::AppState;

/// Serves on `listener` until `shutdown` completes, then finishes the
/// requests in flight and returns.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the peer's address, for per-address rate limits.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
