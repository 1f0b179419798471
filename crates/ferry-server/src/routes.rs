//! The router: every area's routes, and the layers they share.

use std::any::Any;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::ops::metrics;
use crate::state::AppState;
use crate::{app_schema, auth, billing, ops, realtime, spaces, sync};

/// Responses of at most this many bytes are sent as they are.
const COMPRESS_ABOVE: u16 = 1024;

/// The largest request body accepted (PROTOCOL.md limits).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

fn panic_response(cause: Box<dyn Any + Send + 'static>) -> Response {
    let cause = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {cause}")).into_response()
}

/// The span of a request: its method and path, never its query, which may
/// carry an access token (`?access_token=` of event streams).
fn request_span(req: &Request) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// The whole HTTP API over `state`. Tests drive it without a socket.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(auth::routes())
        .merge(app_schema::routes())
        .merge(spaces::routes())
        .merge(sync::routes())
        .merge(realtime::routes())
        .merge(billing::routes())
        .merge(crate::files::routes())
        .fallback(not_found);
    let web = match &state.settings.app_dir {
        None => ops::app::demo_routes().fallback(not_found),
        Some(dir) => ops::app::dir_routes(dir),
    };
    Router::new()
        .nest("/v1", v1)
        .merge(ops::routes())
        .merge(auth::well_known_routes())
        .merge(web)
        .method_not_allowed_fallback(method_not_allowed)
        // After the fallbacks, so that it answers preflights (`OPTIONS`)
        // before they reach a 405.
        .layer(realtime::origin::cors(&state.settings))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            (
                state.settings.http.body_timeout,
                state.settings.files.max_file_bytes,
            ),
            crate::http::deadline::limit,
        ))
        // gzip at its fastest level: pages of JSON shrink about tenfold
        // even so, and a large initial sync is not held up by the server's
        // CPU. Not below 1 KiB (a push's answer): a compressor's state costs
        // more to set up for each response than the bytes it would save.
        .layer(
            CompressionLayer::new()
                .quality(CompressionLevel::Fastest)
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE))),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}
