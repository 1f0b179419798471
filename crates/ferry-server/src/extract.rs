//! Extractors whose rejections answer in Ferry's error format instead of
//! axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The whole request body, at most the configured body limit.
#[derive(Debug)]
pub struct Body(pub Bytes);

fn body_error(rejection: BytesRejection) -> ApiError {
    if crate::http::deadline::timed_out(&rejection) {
        ApiError::request_timeout("the request body did not arrive in time")
    } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("the request body is over the limit of 10 MiB")
    } else {
        ApiError::invalid_request(rejection.body_text())
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(body_error)
    }
}

/// A JSON body decoded into `T`. Syntax errors are `invalid_json`; JSON of
/// the wrong shape, or with invalid names, is `invalid_request`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Decodes a JSON body, classifying the error.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_request(e.to_string()),
        _ => ApiError::invalid_json(e.to_string()),
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// Path parameters decoded into `T` (validated names included).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e: PathRejection| ApiError::invalid_request(e.body_text()))
    }
}

/// Query parameters decoded into `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e: QueryRejection| ApiError::invalid_request(e.body_text()))
    }
}
