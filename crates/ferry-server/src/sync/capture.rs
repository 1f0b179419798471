//! The node's part in carrying the app's backend writes to devices
//! (docs/tables.md): a task that applies what the capture trigger queued,
//! when the trigger's notification is heard (PostgreSQL), and every
//! `Store::capture_poll` whatever was heard (writes queued while no node
//! listened, or before this one started; on SQLite, every write), and
//! announces each commit like any other.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::AppState;
use crate::store::StoreError;

/// Starts the drain; it runs until the node stops.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let poll = state.store.capture_poll();
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = state.realtime.closing() => return,
                () = state.realtime.captured.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            match drain(&state).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot apply the app's captured writes");
                    tokio::select! {
                        () = state.realtime.closing() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// Applies queued writes until none is left.
async fn drain(state: &AppState) -> Result<(), StoreError> {
    let node = state.settings.node_id.clone();
    loop {
        let schema = state.app_schema.current();
        let drained = match state
            .store
            .drain_captured(schema, &state.clock, &node)
            .await
        {
            Ok(Some(drained)) => drained,
            Ok(None) => return Ok(()),
            Err(StoreError::SchemaChanged { version, .. }) => {
                tracing::info!(version, "the app schema changed; loading it");
                state.app_schema.reload(state.store.as_ref()).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let applied = drained.outcome.as_ref().map_or(0, |o| o.applied);
        state.metrics.observe_capture(
            drained.taken.saturating_sub(drained.refused),
            drained.refused,
        );
        if let (Some(space), Some(outcome)) = (&drained.space, &drained.outcome) {
            state.metrics.observe_push(
                outcome.applied,
                outcome.conflicts.len() as u64 + outcome.reported,
                false,
            );
            if applied > 0 {
                tracing::debug!(%space, head = outcome.head, applied, "committed the app's writes");
                state.realtime.committed(space, outcome.head);
            }
        }
    }
}
