//! `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}`: a
//! signed-in user's API tokens (docs/server-rules.md). These routes take a
//! session only ([`AuthUser`]): a token cannot make, list or revoke tokens.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use ferry_core::SpaceId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AuthUser;
use super::api_token;
use crate::clock::wall_ms;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::spaces::access;
use crate::state::AppState;
use crate::store::api_tokens::{ApiToken, TokenAccess};

/// The longest name of a token, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The most spaces one token names.
const MAX_SPACES: usize = 100;
/// The furthest expiry: ten years, in seconds.
const MAX_EXPIRES_IN_SECS: u64 = 10 * 366 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    /// The spaces it reaches; absent or null for all of the owner's.
    spaces: Option<Vec<SpaceId>>,
    access: TokenAccess,
    #[serde(default)]
    server_fields: bool,
    /// Seconds from now until it stops working; absent for never.
    expires_in: Option<u64>,
}

/// A token as made: the listing's fields and, this once, the token.
#[derive(Debug, Serialize)]
struct Made {
    token: String,
    #[serde(flatten)]
    grant: ApiToken,
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters of text"
        )));
    }
    Ok(name.to_owned())
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<Made>), ApiError> {
    let name = checked_name(&body.name)?;
    let spaces = match body.spaces {
        None => None,
        Some(list) if list.is_empty() || list.len() > MAX_SPACES => {
            return Err(ApiError::invalid_request(format!(
                "spaces must name 1 to {MAX_SPACES} spaces, or be left out for all"
            )));
        }
        Some(list) => {
            let distinct: BTreeSet<SpaceId> = list.into_iter().collect();
            for space in &distinct {
                // A space the user is not in is the same 404 as anywhere.
                access::member(&state, &user, space).await?;
            }
            Some(distinct.into_iter().collect())
        }
    };
    let expires_at = match body.expires_in {
        None => None,
        Some(secs) if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) => {
            Some(wall_ms().saturating_add(secs * 1000))
        }
        Some(_) => {
            return Err(ApiError::invalid_request(format!(
                "expires_in must be 1 to {MAX_EXPIRES_IN_SECS} seconds"
            )));
        }
    };
    let (id, token) = api_token::generate()?;
    let grant = ApiToken {
        id,
        user: user.id.clone(),
        name,
        spaces,
        access: body.access,
        server_fields: body.server_fields,
        created_at: wall_ms(),
        expires_at,
        last_used_at: None,
    };
    let max = state.settings.api_tokens.max_per_user;
    if !state
        .store
        .create_api_token(&grant, &api_token::hash(&token), max)
        .await?
    {
        return Err(ApiError::forbidden(format!(
            "a user holds at most {max} API tokens; revoke one first"
        )));
    }
    tracing::info!(user = %user.id, token = %grant.id, "API token created");
    Ok((StatusCode::CREATED, Json(Made { token, grant })))
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = state.store.api_tokens(&user.id).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Debug, Deserialize)]
struct TokenPath {
    id: String,
}

async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(path): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    let revoked = api_token::valid_id(&path.id)
        && state
            .store
            .revoke_api_token(&user.id, &path.id, wall_ms())
            .await?;
    if !revoked {
        return Err(ApiError::not_found("no such API token"));
    }
    state.realtime.token_revoked(&path.id);
    tracing::info!(user = %user.id, token = %path.id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this area, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}
