//! Spaces and their members (PROTOCOL.md §5), and `/v1/me`.

pub mod access;
pub mod quota;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ferry_core::protocol::{
    CreateSpace, Invite, Me, Member, MembersList, SetRole, SpaceInfo, SpacesList, UserInfo,
};
use ferry_core::{Role, SpaceId, UserId};

use crate::auth::{AuthUser, Caller};
use crate::billing;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::ids;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::api_tokens::TokenAccess;

/// The longest space name accepted.
const MAX_NAME_CHARS: usize = 200;

async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Me>, ApiError> {
    let stored = state
        .store
        .user(&user.id)
        .await?
        .ok_or_else(|| ApiError::invalid_token("the token's user no longer exists"))?;
    Ok(Json(Me {
        user: UserInfo {
            id: stored.id,
            email: stored.email,
        },
        entitlement: billing::view(&state, &user.id).await?,
    }))
}

/// The caller's spaces; for an API token, those it reaches, each with the
/// role it acts with there.
async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<SpacesList>, ApiError> {
    let mut spaces = state.store.spaces_of(&user.id).await?;
    if let Some(token) = &user.token {
        spaces.retain(|s| token.reaches(&s.id));
        if token.access == TokenAccess::Read {
            for space in &mut spaces {
                space.role = Role::Viewer;
            }
        }
    }
    Ok(Json(SpacesList { spaces }))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateSpace>,
) -> Result<(StatusCode, Json<SpaceInfo>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    // Control characters (NUL among them, which PostgreSQL cannot store)
    // have no place in a name people read.
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(
            "name must not contain control characters",
        ));
    }
    let id = match body.id {
        Some(id) => id,
        None => ids::new_space_id()?,
    };
    if id.as_str().starts_with("user:") {
        return Err(ApiError::invalid_request(
            "space ids starting with 'user:' are reserved for personal spaces",
        ));
    }
    state.creation_limits.space(&user.id)?;
    let quotas = &state.settings.quotas;
    // Spaces this user created: others cannot fill the quota by making
    // them owner of their own spaces.
    let created = state.store.spaces_created_by(&user.id).await?;
    if created >= quotas.max_owned_spaces as u64 {
        return Err(ApiError::forbidden(format!(
            "you created {created} spaces, the most one person may"
        )));
    }
    // A taken id answers the same 409 whoever holds it, and says nothing
    // else of that space (docs/protocol.md §5: chosen ids).
    state
        .store
        .create_space(&id, name, &user.id)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(format!(
                "the space id {id} is not available; choose another, or leave out \"id\" \
                 for a random one"
            )),
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(SpaceInfo {
            id,
            name: name.to_owned(),
            role: Role::Owner,
        }),
    ))
}

async fn members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(space): ApiPath<SpaceId>,
) -> Result<Json<MembersList>, ApiError> {
    access::member(&state, &user, &space).await?;
    let members = state.store.members(&space).await?;
    Ok(Json(MembersList { members }))
}

/// The member as stored, for answers.
async fn member_of(state: &AppState, space: &SpaceId, user: &UserId) -> Result<Member, ApiError> {
    state
        .store
        .members(space)
        .await?
        .into_iter()
        .find(|m| &m.user_id == user)
        .ok_or_else(|| ApiError::not_found("member not found"))
}

async fn set_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((space, member)): ApiPath<(SpaceId, UserId)>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<Json<Member>, ApiError> {
    access::require_owner(access::member(&state, &user, &space).await?)?;
    room_for(&state, &space, |m| m.user_id == member).await?;
    state
        .store
        .set_member(&space, &member, body.role)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::not_found(format!("user {member} not found")),
            other => other.into(),
        })?;
    Ok(Json(member_of(&state, &space, &member).await?))
}

async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((space, member)): ApiPath<(SpaceId, UserId)>,
) -> Result<StatusCode, ApiError> {
    let role = access::member(&state, &user, &space).await?;
    // Anyone may leave; only owners remove others.
    if member != user.id {
        access::require_owner(role)?;
    }
    state.store.remove_member(&space, &member).await?;
    state.realtime.member_removed(&space, &member);
    Ok(StatusCode::NO_CONTENT)
}

/// `403 forbidden` when `space` is full and the one joining (whom `is`
/// recognises among its members) is not already in it.
async fn room_for(
    state: &AppState,
    space: &SpaceId,
    is: impl Fn(&Member) -> bool,
) -> Result<(), ApiError> {
    let members = state.store.members(space).await?;
    if members.len() >= state.settings.quotas.max_members && !members.iter().any(is) {
        return Err(ApiError::forbidden(format!(
            "this space has {} members, the most a space may have",
            members.len()
        )));
    }
    Ok(())
}

/// Lower-cases and checks an email address, loosely: Ferry only needs it to
/// name a person and to send mail to.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if ok {
        Ok(email)
    } else {
        Err(ApiError::invalid_request(format!(
            "{email:?} is not an email address"
        )))
    }
}

async fn invite(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(space): ApiPath<SpaceId>,
    ApiJson(body): ApiJson<Invite>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    access::require_owner(access::member(&state, &user, &space).await?)?;
    let email = normalize_email(&body.email)?;
    state.creation_limits.invite(&user.id)?;
    room_for(&state, &space, |m| {
        m.email.as_deref() == Some(email.as_str())
    })
    .await?;
    let invited = state
        .store
        .user_by_email(&email, &ids::new_user_id()?)
        .await?;
    state
        .store
        .set_member(&space, &invited.id, body.role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(member_of(&state, &space, &invited.id).await?),
    ))
}

/// The routes of this area, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/spaces", get(list).post(create))
        .route("/spaces/{space}/members", get(members))
        .route(
            "/spaces/{space}/members/{user_id}",
            put(set_member).delete(remove_member),
        )
        .route("/spaces/{space}/invites", post(invite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in ["", "ada", "@x", "ada@", "a b@x", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
