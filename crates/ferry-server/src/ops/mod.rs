//! Operations: `/health`, `/metrics`, and the web app at `/`.

pub mod app;
pub mod compaction;
pub mod metrics;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// How long `/health` waits for the database before calling it down.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

async fn health(State(state): State<AppState>) -> Response {
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, state.store.health()).await;
    match answer {
        Ok(Ok(())) => Json(json!({"status": "ok", "db": "ok"})).into_response(),
        Ok(Err(e)) => unhealthy(&e.to_string()),
        Err(_) => unhealthy("no answer within 2 s"),
    }
}

fn unhealthy(cause: &str) -> Response {
    tracing::warn!(%cause, "health check: database unreachable");
    let body = json!({
        "status": "unavailable",
        "db": "unreachable",
        "error": {"code": "unavailable", "message": "the database is unreachable"}
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `/health` and `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
}
