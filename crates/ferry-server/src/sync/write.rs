//! The write path shared by sync and the REST records API: check the
//! changes against the server's clock, apply them in one transaction, and
//! account for the commit.

use ferry_core::schema::Actor;
use ferry_core::{Change, SpaceId};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Batch, PushOutcome, StoreError};

/// `422 clock_skew` when a change's HLC is further ahead of the server's wall
/// clock than allowed; names the first offending change.
pub fn check_clock_skew(state: &AppState, changes: &[Change]) -> Result<(), ApiError> {
    let limit = state
        .clock
        .now_ms()
        .saturating_add(state.settings.max_clock_skew_ms);
    for (index, change) in changes.iter().enumerate() {
        if let Some(hlc) = change.max_hlc().filter(|h| h.physical() > limit) {
            return Err(ApiError::clock_skew(format!(
                "change {index}: its HLC {hlc} is more than {} s ahead of the server's clock; \
                 fix the device's clock",
                state.settings.max_clock_skew_ms / 1000
            ))
            .with_details(json!({"index": index, "hlc": hlc.to_string()})));
        }
    }
    Ok(())
}

/// Applies `batch` to `space`: the one way changes reach the store.
///
/// The push and what follows its commit (metrics, the realtime signal) run
/// as a task of their own: a client that hangs up mid-request cancels the
/// handler, and must not cancel the announcement of a commit that happened.
pub async fn apply(
    state: &AppState,
    space: &SpaceId,
    batch: Batch,
) -> Result<PushOutcome, ApiError> {
    check_clock_skew(state, &batch.changes)?;
    if let Some(max) = batch.changes.iter().filter_map(Change::max_hlc).max() {
        state.clock.observe(max);
    }
    let (state, space) = (state.clone(), space.clone());
    tokio::spawn(async move { commit(&state, &space, batch).await })
        .await
        .map_err(|e| ApiError::internal(format!("the push task failed: {e}")))?
}

async fn commit(
    state: &AppState,
    space: &SpaceId,
    mut batch: Batch,
) -> Result<PushOutcome, ApiError> {
    // Every write through the API is checked against the app's schema,
    // the newest: one applied elsewhere since this node loaded its copy is
    // loaded, and the batch pushed again under it.
    let mut tries = 0;
    let outcome = loop {
        batch.schema = Some(state.app_schema.current());
        match state.store.push(space, batch).await {
            Err(StoreError::SchemaChanged {
                version,
                batch: Some(returned),
            }) if tries < 3 => {
                tracing::info!(version, "the app schema changed; loading it");
                state.app_schema.reload(state.store.as_ref()).await?;
                batch = *returned;
                tries += 1;
            }
            pushed => break pushed?,
        }
    };
    state.metrics.observe_push(
        outcome.applied,
        outcome.conflicts.len() as u64 + outcome.reported,
        outcome.replayed,
    );
    if outcome.applied > 0 && !outcome.replayed {
        tracing::debug!(%space, head = outcome.head, applied = outcome.applied, "committed");
        // After the commit, never before (a signal must not beat its data).
        state.realtime.committed(space, outcome.head);
    }
    Ok(outcome)
}

/// Applies one change made by the server itself (a REST write) for
/// `actor`: stamped by the caller with the server's clock, under the
/// server's node id, with no batch id to retry by.
pub async fn apply_server_change(
    state: &AppState,
    space: &SpaceId,
    actor: Actor,
    change: Change,
) -> Result<PushOutcome, ApiError> {
    let batch = Batch {
        user: actor.user.clone(),
        client_id: state.settings.node_id.clone(),
        batch_id: None,
        cursor: None,
        changes: vec![change],
        schema: None,
        actor: Some(actor),
    };
    apply(state, space, batch).await
}
