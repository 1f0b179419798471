//! Records over plain REST (PROTOCOL.md §4), for scripts and integrations
//! that keep no replica. Writes are stamped with the server's HLC and go
//! through the same write path as a sync.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ferry_core::protocol::{MAX_VALUE_BYTES, RecordsPage, WriteRecord, serialized_len};
use ferry_core::{
    Change, Collection, ConflictKind, FieldName, FieldValue, Fields, RecordId, SpaceId,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::write;
use crate::auth::{AuthUser, Caller};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::spaces::access;
use crate::state::AppState;
use crate::store::RecordRow;
use ferry_core::schema::Actor;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    after: Option<RecordId>,
}

async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, collection)): ApiPath<(SpaceId, Collection)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RecordsPage<RecordRow>>, ApiError> {
    access::data(&state, &user, &space).await?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let page = state
        .store
        .list_records(&space, &collection, query.after.as_ref(), limit)
        .await?;
    let records = page.records;
    let next = if page.more {
        records
            .last()
            .map(|r| RecordId::new(r.id.clone()))
            .transpose()
            .map_err(ApiError::internal)?
    } else {
        None
    };
    Ok(Json(RecordsPage { records, next }))
}

/// The live record, or `404`.
async fn live_record(
    state: &AppState,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
) -> Result<Option<RecordRow>, ApiError> {
    Ok(state
        .store
        .record(space, collection, id)
        .await?
        .filter(|r| r.deleted.is_none()))
}

fn record_not_found(collection: &Collection, id: &RecordId) -> ApiError {
    ApiError::not_found(format!("record {collection}/{id} not found"))
}

async fn get_one(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, collection, id)): ApiPath<(SpaceId, Collection, RecordId)>,
) -> Result<Json<RecordRow>, ApiError> {
    access::data(&state, &user, &space).await?;
    live_record(&state, &space, &collection, &id)
        .await?
        .map(Json)
        .ok_or_else(|| record_not_found(&collection, &id))
}

/// Checks the body of a write: at least one field, each value within size.
fn check_write(body: &WriteRecord) -> Result<(), ApiError> {
    if body.fields.is_empty() {
        return Err(ApiError::invalid_change(
            "name at least one field in \"fields\"",
        ));
    }
    for (name, value) in &body.fields {
        let bytes = serialized_len(value);
        if bytes > MAX_VALUE_BYTES {
            return Err(ApiError::too_large(format!(
                "field '{name}' is {bytes} bytes, over the limit of {MAX_VALUE_BYTES}"
            ))
            .with_details(json!({"field": name, "bytes": bytes, "max": MAX_VALUE_BYTES})));
        }
    }
    Ok(())
}

/// The actor of a REST write to `space`: `403` for a caller who cannot
/// write there at all.
async fn writer(state: &AppState, user: &AuthUser, space: &SpaceId) -> Result<Actor, ApiError> {
    let role = access::data(state, user, space).await?;
    access::require_write(role)?;
    Ok(access::actor(user, role, true))
}

/// Writes `values` into the record through the shared write path. Answers
/// `deleted_error` when the record is a tombstone, else the stored record.
async fn write_fields(
    state: &AppState,
    space: &SpaceId,
    actor: Actor,
    collection: Collection,
    id: RecordId,
    values: BTreeMap<FieldName, Value>,
    deleted_error: ApiError,
) -> Result<Json<RecordRow>, ApiError> {
    // A REST write is the newest word on the fields it names: stamped after
    // what they hold, even when a client's clock ran ahead of this node's
    // (another node's, or this one's before a restart).
    if let Some(stored) = state.store.record(space, &collection, &id).await? {
        let fields: Fields = serde_json::from_str(stored.fields.get())
            .map_err(|e| ApiError::internal(format!("stored fields: {e}")))?;
        if let Some(newest) = fields.values().map(|f| &f.hlc).max() {
            state.clock.observe(newest);
        }
    }
    let hlc = state.clock.tick();
    let fields: Fields = values
        .into_iter()
        .map(|(name, value)| {
            let hlc = hlc.clone();
            (name, FieldValue { value, hlc })
        })
        .collect();
    let change = Change::Upsert {
        collection: collection.clone(),
        id: id.clone(),
        fields,
        // A REST write is made against what the server holds: it says no
        // base, and so displaces what is there without a conflict.
        base: None,
    };
    let outcome = write::apply_server_change(state, space, actor, change).await?;
    if outcome
        .conflicts
        .iter()
        .any(|c| c.kind == ConflictKind::RecordDeleted)
    {
        return Err(deleted_error);
    }
    live_record(state, space, &collection, &id)
        .await?
        .map(Json)
        .ok_or_else(|| record_not_found(&collection, &id))
}

/// `PUT`: the record becomes exactly the body; fields it held that the body
/// does not name are set to `null` (field-level LWW cannot remove a field).
async fn put(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, collection, id)): ApiPath<(SpaceId, Collection, RecordId)>,
    ApiJson(body): ApiJson<WriteRecord>,
) -> Result<Json<RecordRow>, ApiError> {
    let actor = writer(&state, &user, &space).await?;
    check_write(&body)?;
    let mut values = body.fields;
    if let Some(current) = state.store.record(&space, &collection, &id).await? {
        let stored: BTreeMap<FieldName, Value> =
            serde_json::from_str(current.fields.get()).map_err(ApiError::internal)?;
        // Fields the caller may not write stay as they are.
        let held = state.app_schema.current();
        let declared = held.schema.as_ref().and_then(|s| s.collection(&collection));
        let reserved = |name: &FieldName| {
            !actor.server_fields
                && declared.is_some_and(|c| c.fields.get(name).is_some_and(|f| f.server_only))
        };
        for name in stored.into_keys().filter(|n| !reserved(n)) {
            values.entry(name).or_insert(Value::Null);
        }
    }
    let deleted = ApiError::conflict(format!(
        "record {collection}/{id} was deleted, and deletes are final: write a new record id"
    ));
    write_fields(&state, &space, actor, collection, id, values, deleted).await
}

/// `PATCH`: only the named fields change; `404` if the record is absent.
async fn patch(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, collection, id)): ApiPath<(SpaceId, Collection, RecordId)>,
    ApiJson(body): ApiJson<WriteRecord>,
) -> Result<Json<RecordRow>, ApiError> {
    let actor = writer(&state, &user, &space).await?;
    check_write(&body)?;
    if live_record(&state, &space, &collection, &id)
        .await?
        .is_none()
    {
        return Err(record_not_found(&collection, &id));
    }
    let deleted = record_not_found(&collection, &id);
    write_fields(&state, &space, actor, collection, id, body.fields, deleted).await
}

/// `DELETE`: the record becomes a tombstone (also when it never existed, so
/// that an upsert arriving later from an offline replica stays deleted).
async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, collection, id)): ApiPath<(SpaceId, Collection, RecordId)>,
) -> Result<StatusCode, ApiError> {
    let actor = writer(&state, &user, &space).await?;
    let change = Change::Delete {
        collection,
        id,
        hlc: state.clock.tick(),
        base: None,
    };
    write::apply_server_change(&state, &space, actor, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The REST records routes, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/spaces/{space}/collections/{collection}/records",
            get(list),
        )
        .route(
            "/spaces/{space}/collections/{collection}/records/{id}",
            get(get_one).put(put).patch(patch).delete(delete),
        )
}
