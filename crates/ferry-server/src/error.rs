//! `ApiError`: every error answer of the HTTP API, mapped once to a status,
//! a stable code and a log level (PROTOCOL.md §10). Internals never reach a
//! response body; they go to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::protocol::{DecodeError, ErrorBody, ErrorDetail};
use serde_json::{Value, json};

use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Adds `details` to the body.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`: no credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 401 `invalid_token`: bad or expired credentials.
    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take that method",
        )
    }

    /// 402 `payment_required`: the billing gate.
    pub fn payment_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, "payment_required", message)
    }

    /// 402 `quota_exceeded`: the caller's files take all they may.
    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, "quota_exceeded", message)
    }

    /// 411 `length_required`.
    pub fn length_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::LENGTH_REQUIRED, "length_required", message)
    }

    /// 416 `range_not_satisfiable`.
    pub fn range_not_satisfiable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            message,
        )
    }

    /// 422 `hash_mismatch`: uploaded bytes are not the ones named.
    pub fn hash_mismatch(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 410 `cursor_expired`.
    pub fn cursor_expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "cursor_expired", message)
    }

    /// `408 request_timeout`: the body did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// `413 too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 422 `invalid_change`.
    pub fn invalid_change(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_change", message)
    }

    /// 422 `clock_skew`.
    pub fn clock_skew(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "clock_skew", message)
    }

    /// 429 `rate_limited`, with a `Retry-After` of `retry_after_secs`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 503 `unavailable`, with a `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// The §10 body of this error, for answers that are not HTTP responses
    /// (realtime messages).
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        }
    }

    /// 500 `internal`: a bug. The cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(message) => ApiError::conflict(message),
            StoreError::CursorExpired {
                cursor,
                horizon,
                head,
            } => ApiError::cursor_expired(format!(
                "cursor {cursor} cannot be served (the space keeps changes after {horizon} \
                 and is at {head}); reset the cursor to 0 and pull everything, sending no changes \
                 until the pull is done"
            ))
            .with_details(json!({"cursor": cursor, "horizon": horizon, "head": head})),
            StoreError::RecordTooLarge {
                collection,
                id,
                bytes,
            } => {
                let max = ferry_core::protocol::MAX_RECORD_BYTES;
                ApiError::too_large(format!(
                    "record {collection}/{id} would hold {bytes} bytes of fields; the most is {max}"
                ))
                .with_details(
                    json!({"collection": collection, "id": id, "bytes": bytes, "max": max}),
                )
            }
            StoreError::ReplicaOfAnother(client) => ApiError::forbidden(format!(
                "client id {client} is the replica of another user; a replica syncs for one \
                 person: sign out with its data wiped (which gives it a new id) before \
                 another person signs in"
            )),
            StoreError::Invalid { index, violation } => {
                ApiError::invalid_change(format!("change {index}: {violation}")).with_details(
                    json!({"index": index, "collection": violation.collection, "id": violation.id,
                           "field": violation.field, "rule": violation.rule}),
                )
            }
            StoreError::Forbidden { index, forbidden } => {
                ApiError::forbidden(format!("change {index}: {forbidden}")).with_details(
                    json!({"index": index, "collection": forbidden.collection, "id": forbidden.id,
                           "field": forbidden.field, "rule": forbidden.rule}),
                )
            }
            // The sync layer loads the new schema and pushes again; a push
            // that keeps meeting newer ones is told to retry.
            StoreError::SchemaChanged { .. } => {
                ApiError::unavailable("the app's schema changed during the request; retry")
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry shortly")
            }
            StoreError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        let message = e.to_string();
        match e {
            DecodeError::Json(_) => ApiError::invalid_json(message),
            DecodeError::Request(_) => ApiError::invalid_request(message),
            DecodeError::TooManyChanges { count, max } => {
                ApiError::too_large(message).with_details(json!({"changes": count, "max": max}))
            }
            DecodeError::Change { index, reason } => ApiError::invalid_change(message)
                .with_details(json!({"index": index, "reason": reason})),
            DecodeError::ValueTooLarge {
                index,
                field,
                bytes,
                max,
            } => ApiError::too_large(message)
                .with_details(json!({"index": index, "field": field, "bytes": bytes, "max": max})),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, status = %self.status, "request failed");
        } else {
            tracing::debug!(code = self.code, status = %self.status, message = %self.message, "request refused");
        }
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response = (status, Json(self.into_body())).into_response();
        if status == StatusCode::REQUEST_TIMEOUT {
            // What is left of the body is not worth waiting for.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
