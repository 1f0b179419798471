//! The server, as the sync loop sees it: `POST /v1/spaces/{space}/sync`
//! with the caller's credentials, and every answer that is not a success
//! turned into an [`Error`] the loop can act on (refresh on 401, resync on
//! 410, pause on 402, back off on 429/503 and network errors).

use std::sync::Arc;
use std::time::Duration;

use ferry_core::SpaceId;
use ferry_core::protocol::SyncRequest;
use reqwest::StatusCode;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sync::Answer;

/// Where the access token comes from.
pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// The current access token.
    fn token(&self) -> Option<String>;

    /// Called after a `401`: gets a fresh token if it can (a refresh token,
    /// an identity provider's SDK). `false` when signing in again is the
    /// only way.
    fn refresh<'a>(
        &'a self,
        remote: &'a Remote,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>>;
}

/// A fixed access token (an external provider's, or one minted by `ferry
/// admin token`): nothing to refresh.
#[derive(Debug, Clone)]
pub struct Token(pub String);

impl Credentials for Token {
    fn token(&self) -> Option<String> {
        Some(self.0.clone())
    }

    fn refresh<'a>(
        &'a self,
        _: &'a Remote,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>> {
        Box::pin(async { Ok(false) })
    }
}

/// A Ferry server.
#[derive(Debug, Clone)]
pub struct Remote {
    http: reqwest::Client,
    base: String,
    credentials: Arc<dyn Credentials>,
}

/// How long one request may take before it counts as a network failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Remote {
    /// The server at `base` (`https://sync.example.com`), with
    /// `credentials`.
    pub fn new(base: &str, credentials: Arc<dyn Credentials>) -> Result<Remote> {
        // Every request names the protocol version this client speaks.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            ferry_core::protocol::PROTOCOL_HEADER,
            reqwest::header::HeaderValue::from_static(ferry_core::protocol::PROTOCOL_VERSION),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Remote {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client, for credentials that talk to the server.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The credentials.
    pub fn credentials(&self) -> &Arc<dyn Credentials> {
        &self.credentials
    }

    /// `POST /v1/spaces/{space}/sync`, refreshing the token once on `401`.
    pub async fn sync(&self, space: &SpaceId, request: &SyncRequest) -> Result<Answer> {
        let url = format!("{}/v1/spaces/{space}/sync", self.base);
        self.authed(|| self.http.post(&url).json(request)).await
    }

    /// `GET /v1/schema`: the app's schema in force, refreshing the token
    /// once on `401`.
    pub async fn app_schema(&self) -> Result<crate::typed::HeldSchema> {
        let url = format!("{}/v1/schema", self.base);
        let held: crate::typed::HeldSchema = self.authed(|| self.http.get(&url)).await?;
        if let Some(schema) = &held.schema {
            schema
                .validate()
                .map_err(|e| Error::Invalid(format!("the server's schema: {e}")))?;
        }
        Ok(held)
    }

    /// `method path` with an optional JSON body, as the signed-in user,
    /// refreshing the token once on `401`: for the server's routes that
    /// have no method of their own here (`/v1/tokens`, members). An answer
    /// without a body reads as `null`.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        self.authed(|| {
            let builder = self.http.request(method.clone(), &url);
            match body {
                Some(body) => builder.json(body),
                None => builder,
            }
        })
        .await
    }

    /// The answer to the request `build` makes, with the access token, and
    /// once more with a refreshed one when the server answers `401`; the
    /// caller reads the status (files' `HEAD`, `PUT`, `GET`).
    pub(crate) async fn send_raw(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut refreshed = false;
        loop {
            let mut builder = build();
            if let Some(token) = self.credentials.token() {
                builder = builder.bearer_auth(token);
            }
            let response = builder
                .send()
                .await
                .map_err(|e| Error::Offline(e.to_string()))?;
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                if self.credentials.refresh(self).await? {
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// Sends the request `build` makes with the access token, and once
    /// more with a refreshed one when the server answers `401`.
    async fn authed<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T> {
        let mut refreshed = false;
        loop {
            let mut builder = build();
            if let Some(token) = self.credentials.token() {
                builder = builder.bearer_auth(token);
            }
            match send(builder).await {
                Err(e) if e.status() == Some(401) && !refreshed => {
                    refreshed = true;
                    if !self.credentials.refresh(self).await? {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

/// Sends a request and decodes a success, or the error of §10.
pub async fn send<T: serde::de::DeserializeOwned>(builder: reqwest::RequestBuilder) -> Result<T> {
    let response = builder
        .send()
        .await
        .map_err(|e| Error::Offline(e.to_string()))?;
    let status = response.status();
    let retry_after = retry_after(&response);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::Offline(e.to_string()))?;
    if status.is_success() {
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        return serde_json::from_slice(bytes).map_err(|e| Error::Server {
            status: status.as_u16(),
            code: "invalid_answer".into(),
            message: format!("the server's answer does not parse: {e}"),
            retry_after: None,
            change: None,
        });
    }
    Err(error_from(status, retry_after, &bytes))
}

/// The error an answer that is not a success carries (§10).
pub(crate) fn error_from(status: StatusCode, retry_after: Option<Duration>, bytes: &[u8]) -> Error {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let text = |key: &str| body["error"][key].as_str().map(str::to_owned);
    Error::Server {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| default_code(status).to_owned()),
        message: text("message").unwrap_or_else(|| format!("the server answered {status}")),
        retry_after,
        change: body["error"]["details"]["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok()),
    }
}

/// The error of a `response` that is not a success, its body read.
pub(crate) async fn failure(response: reqwest::Response) -> Error {
    let status = response.status();
    let retry_after = retry_after(&response);
    match response.bytes().await {
        Ok(bytes) => error_from(status, retry_after, &bytes),
        Err(e) => Error::Offline(e.to_string()),
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A code for answers without a body (a proxy's error page).
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        402 => "payment_required",
        403 => "forbidden",
        404 => "not_found",
        408 => "request_timeout",
        409 => "conflict",
        413 => "too_large",
        429 => "rate_limited",
        _ => "unavailable",
    }
}
