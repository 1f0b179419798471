//! Applying a batch, the part every backend shares: group the changes by
//! record, merge them in order with ferry-core over the stored states, and
//! number the changed records with the space's next `seq`s. A backend only
//! reads the stored rows of [`BatchPlan::keys`] in one query and writes
//! [`Merged::rows`] back in one statement, inside its transaction.

use std::collections::HashMap;

use ferry_core::protocol::MAX_RECORD_BYTES;
use ferry_core::schema::{Actor, Pending, Schema};
use ferry_core::{
    Change, Collection, Conflict, Displaced, Fields, Hlc, RecordId, RecordState, UserId,
    apply_change,
};

use super::stored::corrupt;
use super::{Batch, StoreError};

/// The distinct records a batch touches, in first-seen order.
#[derive(Debug)]
pub struct BatchPlan {
    keys: Vec<(Collection, RecordId)>,
    index: HashMap<Collection, HashMap<RecordId, usize>>,
    slot_of: Vec<usize>,
    states: Vec<RecordState>,
    /// The stored size of each record's fields, as loaded.
    sizes: Vec<usize>,
    /// Each record's author, as loaded (or as the batch created it).
    authors: Vec<Option<UserId>>,
}

/// A record row to write: `(collection, id, seq, fields JSON, deleted HLC)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowOut {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// Its new `seq`.
    pub seq: u64,
    /// Its fields as the JSON text to store.
    pub fields: String,
    /// The HLC of its delete, on a tombstone.
    pub deleted: Option<String>,
}

/// What merging a batch produced.
#[derive(Debug)]
pub struct Merged {
    /// How many changes altered stored state.
    pub applied: u64,
    /// The writes that lost.
    pub conflicts: Vec<Conflict>,
    /// Stored writes the batch replaced unseen, each with the `seq` its
    /// record takes: reported to their authors with that page of a pull.
    pub displaced: Vec<(u64, Displaced)>,
    /// The rows to write, in `seq` order.
    pub rows: Vec<RowOut>,
    /// Each row's record as merged, in the same order (for the rows of
    /// mirrored tables, without parsing `fields` again).
    pub states: Vec<RecordState>,
    /// The space's `seq` after the batch.
    pub head: u64,
}

impl BatchPlan {
    /// Groups `changes` by record.
    pub fn new(changes: &[Change]) -> BatchPlan {
        let mut keys = Vec::new();
        let mut index: HashMap<Collection, HashMap<RecordId, usize>> = HashMap::new();
        let mut slot_of = Vec::with_capacity(changes.len());
        for change in changes {
            let (collection, id) = (change.collection(), change.id());
            // Look up by reference first: names are cloned once per record,
            // not once per change.
            let ids = match index.get_mut(collection.as_str()) {
                Some(ids) => ids,
                None => index.entry(collection.clone()).or_default(),
            };
            let slot = match ids.get(id.as_str()) {
                Some(slot) => *slot,
                None => {
                    let slot = keys.len();
                    ids.insert(id.clone(), slot);
                    keys.push((collection.clone(), id.clone()));
                    slot
                }
            };
            slot_of.push(slot);
        }
        let states = vec![RecordState::default(); keys.len()];
        let sizes = vec![0; keys.len()];
        let authors = vec![None; keys.len()];
        BatchPlan {
            keys,
            index,
            slot_of,
            states,
            sizes,
            authors,
        }
    }

    /// The records to read, as `(collection, id)`.
    pub fn keys(&self) -> &[(Collection, RecordId)] {
        &self.keys
    }

    /// Records the stored state of one of [`Self::keys`], from its row.
    pub fn load(
        &mut self,
        collection: &str,
        id: &str,
        fields: &str,
        deleted: Option<&str>,
        author: Option<&str>,
    ) -> Result<(), StoreError> {
        let slot = *self
            .index
            .get(collection)
            .and_then(|ids| ids.get(id))
            .ok_or_else(|| corrupt("key", "a row the batch did not ask for"))?;
        let text = fields;
        let fields: Fields = serde_json::from_str(text).map_err(|e| corrupt("fields", e))?;
        let deleted: Option<Hlc> = deleted
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt("hlc", e))?;
        self.states[slot] = RecordState { fields, deleted };
        self.sizes[slot] = text.len();
        self.authors[slot] = author
            .map(|a| UserId::new(a).map_err(|e| corrupt("author", e)))
            .transpose()?;
        Ok(())
    }

    /// Merges `changes` (the ones the plan was made from, in order) over the
    /// loaded states, each checked against `schema` when there is one (the
    /// record as the batch's earlier changes left it), and against its
    /// permissions for `actor` when there is one; changed records take
    /// `seq`s after `head`, in the order of the change that last altered
    /// each.
    pub fn merge(
        mut self,
        changes: Vec<Change>,
        head: u64,
        schema: Option<&Schema>,
        actor: Option<&Actor>,
    ) -> Result<Merged, StoreError> {
        let mut applied = 0u64;
        let mut conflicts = Vec::new();
        let mut displaced: Vec<(usize, Displaced)> = Vec::new();
        let mut last_change: Vec<Option<usize>> = vec![None; self.keys.len()];
        for (i, (change, slot)) in changes.into_iter().zip(&self.slot_of).enumerate() {
            let before = std::mem::take(&mut self.states[*slot]);
            let invalid = |violation| StoreError::Invalid {
                index: i,
                violation: Box::new(violation),
            };
            if let (Some(schema), Some(actor)) = (schema, actor) {
                let author = self.authors[*slot].as_ref();
                schema
                    .permit(actor, &before, author, &change)
                    .map_err(|forbidden| StoreError::Forbidden {
                        index: i,
                        forbidden: Box::new(forbidden),
                    })?;
            }
            let created = before.fields.is_empty() && before.deleted.is_none();
            let pending = match schema {
                Some(schema) => schema.check_change(&before, &change).map_err(invalid)?,
                None => Pending::default(),
            };
            let merged = apply_change(before, change);
            pending.verify(&merged.state).map_err(invalid)?;
            conflicts.extend(merged.conflicts);
            displaced.extend(merged.displaced.into_iter().map(|d| (*slot, d)));
            if merged.changed {
                applied += 1;
                last_change[*slot] = Some(i);
                // The batch made the record: its writer is its author for
                // the batch's later changes (the store records the same).
                if created && let Some(actor) = actor {
                    self.authors[*slot] = Some(actor.user.clone());
                }
            }
            self.states[*slot] = merged.state;
        }
        let mut changed: Vec<(usize, usize)> = last_change
            .iter()
            .enumerate()
            .filter_map(|(slot, last)| last.map(|i| (i, slot)))
            .collect();
        changed.sort_unstable();
        let mut seq = head;
        let mut rows = Vec::with_capacity(changed.len());
        let mut states = Vec::with_capacity(changed.len());
        let mut seq_of = vec![0u64; self.keys.len()];
        // Each slot is written once, so its names can move into its row.
        let mut keys: Vec<Option<(Collection, RecordId)>> =
            self.keys.into_iter().map(Some).collect();
        for (_, slot) in changed {
            let (collection, id) = keys[slot]
                .take()
                .ok_or_else(|| StoreError::Internal("a record written twice".into()))?;
            let state = &self.states[slot];
            let fields = serde_json::to_string(&state.fields)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            // A record may not grow past the limit (one that is already
            // past it, from before the limit, may still shrink).
            if fields.len() > MAX_RECORD_BYTES && fields.len() > self.sizes[slot] {
                return Err(StoreError::RecordTooLarge {
                    collection: collection.into_string(),
                    id: id.into_string(),
                    bytes: fields.len(),
                });
            }
            seq += 1;
            seq_of[slot] = seq;
            rows.push(RowOut {
                collection: collection.into_string(),
                id: id.into_string(),
                seq,
                fields,
                deleted: state.deleted.as_ref().map(Hlc::to_string),
            });
            states.push(std::mem::take(&mut self.states[slot]));
        }
        // A displaced write's record changed (its value was replaced), so
        // it has a seq.
        let displaced = displaced
            .into_iter()
            .map(|(slot, d)| (seq_of[slot], d))
            .collect();
        Ok(Merged {
            applied,
            conflicts,
            displaced,
            rows,
            states,
            head: seq,
        })
    }
}

/// Where each record of a collection mirrored into a table is first
/// changed in `batch`, keyed by collection and id: the index a row its
/// table refuses is reported at. Empty when nothing is mirrored.
pub fn first_changes(batch: &Batch) -> HashMap<(String, String), usize> {
    let mirrors = batch
        .schema
        .as_ref()
        .and_then(|held| held.schema.as_ref())
        .is_some_and(|s| s.collections.values().any(|c| c.table.is_some()));
    if !mirrors {
        return HashMap::new();
    }
    batch
        .changes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, c)| ((c.collection().to_string(), c.id().to_string()), i))
        .collect()
}

/// A cursor below the horizon may have missed compacted tombstones; one
/// above the head comes from another database (restored, or replaced).
/// A pull from 0 is a client starting over, which is always served.
pub fn check_cursor(cursor: u64, horizon: u64, head: u64) -> Result<(), StoreError> {
    if cursor == 0 {
        return Ok(());
    }
    check_push_cursor(cursor, horizon, head)
}

/// The cursor of a push: no exception for 0. Changes sent from a cursor
/// below the horizon were made without knowing of deletes the server has
/// since forgotten (compacted), and could bring deleted records back; the
/// client must pull the space from 0 first, sending nothing, and then send
/// them from the cursor that pull ended at.
pub fn check_push_cursor(cursor: u64, horizon: u64, head: u64) -> Result<(), StoreError> {
    if cursor < horizon || cursor > head {
        return Err(StoreError::CursorExpired {
            cursor,
            horizon,
            head,
        });
    }
    Ok(())
}
