//! Sign-in by magic link (PROTOCOL.md §6): the mail with a single-use link,
//! its redemption for an access and a refresh token, rotation of refresh
//! tokens with reuse detection, and logout.
//!
//! Tokens are 256 random bits; the database keeps only their SHA-256, so a
//! copy of it signs no one in.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_core::protocol::UserInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::mail::Mail;
use crate::clock::wall_ms;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ids;
use crate::spaces::normalize_email;
use crate::state::AppState;
use crate::store::{RefreshToken, Rotation, User};

/// The longest token accepted; real ones are 43 characters.
const MAX_TOKEN_CHARS: usize = 128;

/// 256 random bits, base64url.
fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token.
fn token_hash(token: &str) -> String {
    ids::hex(&Sha256::digest(token.as_bytes()))
}

/// A token as a client sent it, checked for shape only.
fn presented(token: &str) -> Result<&str, ApiError> {
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(token)
    } else {
        Err(ApiError::invalid_token("that is not a Ferry token"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkRequest {
    email: String,
}

/// The client's address, when the server was told it (it is, by
/// `server::run`; tests that drive the router directly have none): the
/// peer's, or behind a trusted proxy the one it forwarded for
/// ([`crate::http::proxy`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|ConnectInfo(addr)| addr);
        Ok(ClientAddr(peer.map(|peer| {
            state.settings.trusted_proxies.client(peer, &parts.headers)
        })))
    }
}

/// `POST /v1/auth/magic-link`: always `202 {}` for a well-formed email,
/// known or not, so the answer tells nothing about who has an account.
pub async fn magic_link(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    ApiJson(body): ApiJson<MagicLinkRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let email = normalize_email(&body.email)?;
    state.sign_in_limits.check(&email, address)?;
    let token = random_token()?;
    let settings = &state.settings;
    let expires = wall_ms().saturating_add(settings.login_ttl_secs.saturating_mul(1000));
    state
        .store
        .create_login_token(&token_hash(&token), &email, expires)
        .await?;
    let base = settings.public_url.trim_end_matches('/');
    let link = format!("{base}/auth/magic-link#token={token}");
    let minutes = settings.login_ttl_secs / 60;
    let mail = Mail {
        to: email,
        subject: "Your sign-in link".into(),
        body: format!(
            "Open this link to sign in (it works once, for {minutes} minutes):\n\n{link}\n\n\
             Or, from a terminal:\n\n\
             curl -X POST {base}/v1/auth/verify -H 'Content-Type: application/json' \
             -d '{{\"token\": \"{token}\"}}'\n\n\
             If you did not ask to sign in, ignore this mail.\n"
        ),
    };
    // Sent after answering, so the answer takes as long whatever the mail
    // server does.
    let mailer = state.mailer.clone();
    tokio::spawn(async move {
        if let Err(e) = mailer.send(&mail).await {
            tracing::error!(error = %e, "cannot send the sign-in mail");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

/// The answer of `verify` and `refresh`.
#[derive(Debug, Serialize)]
pub struct Session {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    user: UserInfo,
}

/// An access token and, when `family` is `None`, a new refresh token
/// family; otherwise `refresh_token` is the already stored successor.
async fn session(
    state: &AppState,
    user: User,
    refresh_token: String,
    new_family: bool,
) -> Result<Json<Session>, ApiError> {
    let settings = &state.settings;
    if new_family {
        let mut family = [0u8; 16];
        getrandom::fill(&mut family).map_err(|e| ApiError::internal(format!("random: {e}")))?;
        state
            .store
            .create_refresh_token(&RefreshToken {
                hash: token_hash(&refresh_token),
                family: URL_SAFE_NO_PAD.encode(family),
                user: user.id.clone(),
                expires_at_ms: refresh_expiry(state),
            })
            .await?;
    }
    let access_token =
        state
            .issuer
            .get()
            .mint(&user.id, wall_ms() / 1000, settings.access_ttl_secs)?;
    Ok(Json(Session {
        access_token,
        refresh_token,
        expires_in: settings.access_ttl_secs,
        user: UserInfo {
            id: user.id,
            email: user.email,
        },
    }))
}

fn refresh_expiry(state: &AppState) -> u64 {
    wall_ms().saturating_add(state.settings.refresh_ttl_secs.saturating_mul(1000))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    token: String,
}

/// `POST /v1/auth/verify`: redeems a sign-in token, once.
pub async fn verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<Session>, ApiError> {
    let token = presented(&body.token)?;
    let email = state
        .store
        .redeem_login_token(&token_hash(token), wall_ms())
        .await?
        .ok_or_else(|| {
            ApiError::invalid_token(
                "this sign-in link was used already, has expired, or is unknown",
            )
        })?;
    // First sign-in creates the user and their personal space.
    let user = state
        .store
        .user_by_email(&email, &ids::new_user_id()?)
        .await?;
    session(&state, user, random_token()?, true).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// `POST /v1/auth/refresh`: a new pair for a current refresh token; a used
/// one revokes its family.
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    let token = presented(&body.refresh_token)?;
    let next = random_token()?;
    let rotation = state
        .store
        .rotate_refresh_token(
            &token_hash(token),
            &token_hash(&next),
            refresh_expiry(&state),
            wall_ms(),
        )
        .await?;
    match rotation {
        Rotation::Rotated { user } => {
            let user = state
                .store
                .user(&user)
                .await?
                .ok_or_else(|| ApiError::invalid_token("the token's user no longer exists"))?;
            session(&state, user, next, false).await
        }
        Rotation::Reused => Err(ApiError::invalid_token(
            "this refresh token was used before; its whole session is signed out",
        )),
        Rotation::Revoked => Err(ApiError::invalid_token(
            "this session was signed out; sign in again",
        )),
        Rotation::Invalid => Err(ApiError::invalid_token(
            "the refresh token is expired or unknown",
        )),
    }
}

/// `POST /v1/auth/logout`: revokes the refresh token's family. `204` also
/// for an unknown token, which tells nothing.
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let token = presented(&body.refresh_token)?;
    state
        .store
        .revoke_refresh_family(&token_hash(token), wall_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(presented(&a).is_ok());
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(presented("").is_err());
        assert!(presented("a b").is_err());
        assert!(presented(&"a".repeat(MAX_TOKEN_CHARS + 1)).is_err());
    }
}
