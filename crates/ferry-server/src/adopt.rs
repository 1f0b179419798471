//! Adopting the rows a mirrored table held before Ferry kept it
//! (`ferry adopt`, docs/tables.md): rows written for the records Ferry
//! holds that the table lacks, then every row of the table queued to be
//! taken in by the nodes' capture drain (created where Ferry has no
//! record, merged field by field where it has), while the app keeps
//! running; waits for the nodes to apply them.

use std::time::{Duration, Instant};

use ferry_core::Collection;

use crate::store::{Store, StoreError};

/// Rows queued per transaction.
const CHUNK: i64 = 1000;

/// What an adoption came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Rows written for records the table lacked.
    pub filled: u64,
    /// Rows of the table queued to be taken in.
    pub queued: u64,
    /// Queued rows no node had applied when the wait ended.
    pub left: u64,
    /// Rows refused while waiting (kept in `capture_refused`).
    pub refused: u64,
    /// Records whose rows the table refused.
    pub unfilled: u64,
}

/// Adopts `collection`'s table; `tell` hears each step. Waits for the
/// queue to empty while it keeps shrinking, and gives up waiting after
/// `patience` without progress (no node running: the rows wait for one).
pub async fn adopt(
    store: &dyn Store,
    collection: &Collection,
    patience: Duration,
    tell: &mut (dyn FnMut(&str) + Send),
) -> Result<Adopted, StoreError> {
    let held = crate::app_schema::load(store).await?;
    let schema = held.schema.ok_or_else(|| {
        StoreError::Conflict(format!(
            "no schema is applied: apply one that mirrors {collection} into a table first"
        ))
    })?;
    let (filled, unfilled) = store.fill_mirror(&schema, collection).await?;
    tell(&format!(
        "{collection}: wrote {filled} rows for records Ferry holds that the table lacked"
    ));
    for refused in &unfilled {
        tell(&format!(
            "{collection}: the table refused the row of {refused}"
        ));
    }
    let (_, refused_before) = store.adoption_left(collection).await?;
    let (mut after, mut queued) = (None, 0);
    while let Some((last, n)) = store
        .queue_adoption(&schema, collection, after.as_ref(), CHUNK)
        .await?
    {
        queued += n;
        after = Some(last);
    }
    tell(&format!(
        "{collection}: queued {queued} rows of the table to be taken in"
    ));
    let (mut fewest, mut moved_at) = (u64::MAX, Instant::now());
    loop {
        let (left, refused) = store.adoption_left(collection).await?;
        let refused = refused.saturating_sub(refused_before);
        if left == 0 || moved_at.elapsed() >= patience {
            return Ok(Adopted {
                filled,
                queued,
                left,
                refused,
                unfilled: unfilled.len() as u64,
            });
        }
        if left < fewest {
            if fewest != u64::MAX {
                tell(&format!("{collection}: {left} rows left to take in"));
            }
            (fewest, moved_at) = (left, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
