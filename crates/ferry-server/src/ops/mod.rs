//! Operations: `/health`, `/metrics`, and the landing page at `/`.

pub mod metrics;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

async fn health(State(state): State<AppState>) -> Response {
    match state.store.health().await {
        Ok(()) => Json(json!({"status": "ok", "db": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "db": "unreachable",
                    "error": {"code": "unavailable", "message": "the database is unreachable"}
                })),
            )
                .into_response()
        }
    }
}

async fn landing() -> Html<&'static str> {
    Html(include_str!("landing.html"))
}

/// `/`, `/health` and `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(landing))
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
}
