//! Sync (PROTOCOL.md §4): push-then-pull, the pull alone, and the REST
//! records API, all over one write path ([`write`]).

pub mod capture;
mod records;
pub mod write;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_core::protocol::{
    self, DEFAULT_PULL_LIMIT, MAX_PULL_LIMIT, PROTOCOL_HEADER, PullResponse, SyncRequest,
    SyncResponse,
};
use ferry_core::{ClientId, Collection, SpaceId};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, Body};
use crate::spaces::access;
use crate::state::AppState;
use crate::store::delivery::ConflictsFor;
use crate::store::{Batch, PullQuery, RecordRow};

/// The page size of a pull: the default, or the asked one if in range.
fn pull_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PULL_LIMIT),
        Some(l) if (1..=MAX_PULL_LIMIT).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::invalid_request(format!(
            "limit must be between 1 and {MAX_PULL_LIMIT}, got {l}"
        ))),
    }
}

/// Drops from `records` what a client older than v1.5 would refuse (their
/// `author`), unless its request says it speaks v1.5.
fn for_client(headers: &HeaderMap, records: &mut [RecordRow]) {
    let header = headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    if !protocol::speaks(header, 1, 5) {
        for record in records {
            record.author = None;
        }
    }
}

async fn sync(
    State(state): State<AppState>,
    Caller(user): Caller,
    headers: HeaderMap,
    ApiPath(space): ApiPath<SpaceId>,
    Body(body): Body,
) -> Result<Json<SyncResponse<RecordRow>>, ApiError> {
    let role = access::data(&state, &user, &space).await?;
    let req = SyncRequest::from_json(&body)?;
    let limit = pull_limit(req.limit)?;
    let reports = ConflictsFor {
        client_id: req.client_id.clone(),
        user: user.id.clone(),
        // Reports below the cursor came with the pages that covered them.
        after: req.conflict_cursor.unwrap_or(0).max(req.cursor),
    };
    let (applied, conflicts) = if req.changes.is_empty() {
        (0, Vec::new())
    } else {
        access::require_write(role)?;
        let outcome = write::apply(
            &state,
            &space,
            Batch {
                user: user.id.clone(),
                client_id: req.client_id,
                batch_id: req.batch_id,
                cursor: Some(req.cursor),
                changes: req.changes,
                schema: None,
                actor: Some(access::actor(&user, role, false)),
            },
        )
        .await?;
        (outcome.applied, outcome.conflicts)
    };
    let page = state
        .store
        .pull(
            &space,
            PullQuery {
                cursor: req.cursor,
                limit,
                collections: None,
                conflicts: Some(reports),
            },
        )
        .await?;
    let mut page = page;
    for_client(&headers, &mut page.records);
    Ok(Json(SyncResponse {
        applied,
        conflicts,
        reported: page.conflicts,
        changes: page.records,
        cursor: page.cursor,
        has_more: page.has_more,
        hlc: state.clock.tick(),
        // After the push committed: a database hiccup here costs only a
        // second's news of a new schema, never a failed answer.
        schema_version: match state.app_schema.fresh(state.store.as_ref()).await {
            Ok(held) => held.version,
            Err(_) => state.app_schema.current().version,
        },
        role: Some(role),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    #[serde(default)]
    cursor: u64,
    limit: Option<u32>,
    collections: Option<String>,
    /// The replica pulling: its conflict reports come with the page.
    client_id: Option<ClientId>,
    conflict_cursor: Option<u64>,
}

/// `a,b` into collections; an empty list means no filter.
fn parse_collections(list: Option<&str>) -> Result<Option<Vec<Collection>>, ApiError> {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    list.split(',')
        .map(|c| Collection::new(c).map_err(|e| ApiError::invalid_request(e.to_string())))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

async fn changes(
    State(state): State<AppState>,
    Caller(user): Caller,
    headers: HeaderMap,
    ApiPath(space): ApiPath<SpaceId>,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<PullResponse<RecordRow>>, ApiError> {
    let role = access::data(&state, &user, &space).await?;
    let reports = query.client_id.map(|client_id| ConflictsFor {
        client_id,
        user: user.id.clone(),
        after: query.conflict_cursor.unwrap_or(0).max(query.cursor),
    });
    let page = state
        .store
        .pull(
            &space,
            PullQuery {
                cursor: query.cursor,
                limit: pull_limit(query.limit)?,
                collections: parse_collections(query.collections.as_deref())?,
                conflicts: reports,
            },
        )
        .await?;
    let mut page = page;
    for_client(&headers, &mut page.records);
    Ok(Json(PullResponse {
        changes: page.records,
        reported: page.conflicts,
        cursor: page.cursor,
        has_more: page.has_more,
        hlc: state.clock.tick(),
        // After the push committed: a database hiccup here costs only a
        // second's news of a new schema, never a failed answer.
        schema_version: match state.app_schema.fresh(state.store.as_ref()).await {
            Ok(held) => held.version,
            Err(_) => state.app_schema.current().version,
        },
        role: Some(role),
    }))
}

/// The routes of this area, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/spaces/{space}/sync", post(sync))
        .route("/spaces/{space}/changes", get(changes))
        .merge(records::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(pull_limit(None).unwrap(), 1000);
        assert_eq!(pull_limit(Some(10_000)).unwrap(), 10_000);
        assert!(pull_limit(Some(0)).is_err());
        assert!(pull_limit(Some(10_001)).is_err());
    }

    #[test]
    fn collections_are_parsed() {
        assert_eq!(parse_collections(None).unwrap(), None);
        assert_eq!(parse_collections(Some("")).unwrap(), None);
        assert_eq!(parse_collections(Some("a,b")).unwrap().unwrap().len(), 2);
        assert!(parse_collections(Some("a,,b")).is_err());
        assert!(parse_collections(Some("a/b")).is_err());
    }
}
