//! Authentication: bearer JWTs from Ferry's own issuer ([`issuer`]), the
//! extractor that turns a request into an [`AuthUser`], and the JWKS route.
//! Magic links and external identity providers join here.

pub mod api_token;
pub mod external;
pub mod issuer;
pub mod jwks;
pub mod limits;
pub mod mail;
pub mod signin;
pub mod tokens;
pub mod verified;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ferry_core::UserId;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::api_tokens::ApiToken;

/// The caller, authenticated. Every handler that touches user data takes
/// one; the user id comes from the verified token and nowhere else.
///
/// As an extractor it takes a session's access token only: an API token
/// is refused (`403 forbidden`) unless the route takes a [`Caller`].
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The caller's user id (an API token's owner).
    pub id: UserId,
    /// The API token the request came with, when it came with one rather
    /// than a session's access token.
    pub token: Option<Arc<ApiToken>>,
}

impl AuthUser {
    /// A session's caller.
    pub fn session(id: UserId) -> AuthUser {
        AuthUser { id, token: None }
    }
}

/// The caller of a route of space data (sync, pulls, records, the event
/// streams, the list of spaces, the schema): a session or an API token.
#[derive(Debug, Clone)]
pub struct Caller(pub AuthUser);

/// Whom this process has already resolved to a user that exists, by
/// `(issuer, subject)` (Ferry's own issuer is `""`, its subject the user
/// id): the first request of a user creates them (and their personal space)
/// and later ones cost no database write.
#[derive(Debug, Default)]
pub struct KnownUsers(Mutex<HashMap<(String, String), UserId>>);

impl KnownUsers {
    /// Beyond this many, the map starts over (it is only a cache).
    const MAX: usize = 100_000;

    fn get(&self, issuer: &str, subject: &str) -> Option<UserId> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(issuer.to_owned(), subject.to_owned()))
            .cloned()
    }

    fn insert(&self, issuer: String, subject: String, id: UserId) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert((issuer, subject), id);
    }
}

/// The token of an `Authorization: Bearer` header, if any.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("send an access token: Authorization: Bearer <token>")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::invalid_token("expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::invalid_token(
            "expected Authorization: Bearer <token>",
        ));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        if api_token::is_api_token(token) {
            return Err(ApiError::forbidden(
                "an API token cannot be used here: this endpoint takes a signed-in session's \
                 access token",
            ));
        }
        authenticate(state, token).await.map(AuthUser::session)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate_caller(state, bearer(&parts.headers)?)
            .await
            .map(Caller)
    }
}

/// The caller a bearer token names: an API token's grant, or a session's
/// user ([`authenticate`]).
pub async fn authenticate_caller(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    if api_token::is_api_token(token) {
        let grant = api_token::verify(state, token).await?;
        return Ok(AuthUser {
            id: grant.user.clone(),
            token: Some(grant),
        });
    }
    authenticate(state, token).await.map(AuthUser::session)
}

/// When a token that [`authenticate`] accepted stops working (its `exp`, in
/// seconds since the epoch): long-lived connections end then. Reads the
/// claims without verifying them, which `authenticate` has done. `exp` is
/// a JSON number, which may have a fraction (RFC 7519's NumericDate): it is
/// read as the verifiers read it, rounded down, so a connection never
/// outlives the token. `None` when it cannot be read at all.
pub fn expiry(token: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: serde_json::Number,
    }
    let claims = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    let exp = serde_json::from_slice::<Exp>(&json).ok()?.exp;
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            // Saturating: a NumericDate past u64 is "never", as an integer one.
            .map(|f| f.floor() as u64)
    })
}

/// The user a bearer token names: a token of Ferry's own issuer (EdDSA with
/// one of its key ids), of a provider sharing an HS256 secret, or of a
/// provider publishing a JWKS. The header's algorithm and key id pick the
/// verifier; a token no configured verifier takes is refused.
pub async fn authenticate(state: &AppState, token: &str) -> Result<UserId, ApiError> {
    let header = issuer::screen(token)?;
    let own = match (header.alg, header.kid.as_deref()) {
        (Algorithm::EdDSA, Some(kid)) => state.issuer.knows(state.store.as_ref(), kid).await?,
        _ => false,
    };
    let identity = if own || (header.alg == Algorithm::EdDSA && state.jwks.is_none()) {
        let id = state.issuer.get().verify(token)?;
        if state.known_users.get("", id.as_str()).is_none() {
            state.store.ensure_user(&id).await?;
            state
                .known_users
                .insert(String::new(), id.to_string(), id.clone());
        }
        return Ok(id);
    } else if let (Algorithm::HS256, Some(provider)) = (header.alg, &state.shared_secret) {
        provider.verify(token)?
    } else if let Some(provider) = state.jwks.as_ref().filter(|p| p.accepts(header.alg)) {
        provider.verify(token).await?
    } else {
        return Err(ApiError::invalid_token(
            "the token's algorithm is not accepted",
        ));
    };
    if let Some(id) = state.known_users.get(&identity.issuer, &identity.subject) {
        return Ok(id);
    }
    let user = state
        .store
        .user_for_identity(
            &identity.issuer,
            &identity.subject,
            identity.email.as_deref(),
            &crate::ids::new_user_id()?,
        )
        .await?;
    state
        .known_users
        .insert(identity.issuer, identity.subject, user.id.clone());
    Ok(user.id)
}

async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.issuer.get().jwks().clone())
}

/// Routes outside `/v1`: the issuer's public keys. (The page sign-in
/// links open belongs to the web app: `ops::app`.)
pub fn well_known_routes() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

/// The routes of sign-in, under `/v1`; never gated.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/magic-link", post(signin::magic_link))
        .route("/auth/verify", post(signin::verify))
        .route("/auth/refresh", post(signin::refresh))
        .route("/auth/logout", post(signin::logout))
        .merge(tokens::routes())
}
