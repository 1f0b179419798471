//! The one place that decides who may touch a space. Every handler of space
//! data calls [`data`] (records, sync, pulls) or [`member`] (members) with
//! the authenticated user first; a space the caller is not a member of (or
//! that the caller's API token does not reach) is indistinguishable from
//! one that does not exist.

use ferry_core::schema::Actor;
use ferry_core::{Role, SpaceId};

use crate::auth::AuthUser;
use crate::billing;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::api_tokens::TokenAccess;

/// The caller's role in `space`; `404 not_found` when not a member. For
/// an API token: `404` also for a space outside its list, and a `read`
/// token acts as a viewer whatever its owner's role. The owner's role is
/// read now, so a token never reaches past what its owner may do today.
pub async fn member(state: &AppState, user: &AuthUser, space: &SpaceId) -> Result<Role, ApiError> {
    if user.token.as_ref().is_some_and(|t| !t.reaches(space)) {
        return Err(not_found(space));
    }
    let role = state
        .store
        .role(space, &user.id)
        .await?
        .ok_or_else(|| not_found(space))?;
    Ok(match &user.token {
        Some(t) if t.access == TokenAccess::Read => Role::Viewer,
        _ => role,
    })
}

/// The caller's role in `space` for reading or writing its records over
/// the network: [`member`], then the billing gate (`402
/// payment_required` for a caller without the plan sync needs).
pub async fn data(state: &AppState, user: &AuthUser, space: &SpaceId) -> Result<Role, ApiError> {
    let role = member(state, user, space).await?;
    billing::require_sync(state, &user.id).await?;
    Ok(role)
}

/// The actor of a write, as the schema's permissions judge it: the caller
/// with `role`. A REST write (`rest`) of an owner may set server-only
/// fields: by session, or by an API token made with `server_fields`. Sync
/// never may.
pub fn actor(user: &AuthUser, role: Role, rest: bool) -> Actor {
    Actor {
        user: user.id.clone(),
        role,
        server_fields: rest
            && role == Role::Owner
            && user.token.as_ref().is_none_or(|t| t.server_fields),
    }
}

/// The 404 for a space the caller cannot see.
pub fn not_found(space: &SpaceId) -> ApiError {
    ApiError::not_found(format!("space {space} not found"))
}

/// `403 forbidden` unless `role` may write records.
pub fn require_write(role: Role) -> Result<(), ApiError> {
    if role.can_write() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a {} of this space cannot write to it",
            role.as_str()
        )))
    }
}

/// `403 forbidden` unless `role` is owner.
pub fn require_owner(role: Role) -> Result<(), ApiError> {
    if role == Role::Owner {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only an owner of this space can manage its members",
        ))
    }
}
