//! What both stores share in applying the app's backend writes to
//! mirrored tables (docs/tables.md): a queued write, the change it makes
//! of its record (stamped after what the record holds, with the bases
//! that report what it replaced unseen), and setting aside a write the
//! push refused so the rest apply.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::schema::Schema;
use ferry_core::schema::row::RowWrite;
use ferry_core::{
    Change, ClientId, Collection, FieldValue, RecordId, RecordState, UserId, apply_change,
};
use serde_json::{Map, Value};

use super::stored::corrupt;
use super::{AppSchema, Batch, PushOutcome, StoreError};
use crate::clock::ServerClock;

/// The most queued writes one drain applies in one transaction.
pub const MAX_TAKEN: i64 = 1000;
/// The most bytes of queued rows one drain reads.
pub const MAX_TAKEN_BYTES: i64 = 8 << 20;
/// The largest queued row taken: a record's limit, with room for the old
/// row beside the new one and for JSON's keys.
pub const MAX_ROW_BYTES: usize = 2 * ferry_core::protocol::MAX_RECORD_BYTES + 64 * 1024;
/// The op of a row queued by `ferry adopt`: taken in as the table holds it
/// when applied.
pub const ADOPT: &str = "ADOPT";

/// The user a captured write is made by.
pub const BACKEND_USER: &str = "backend";

/// One queued write.
#[derive(Debug)]
pub struct Queued {
    /// Its place in the queue.
    pub id: i64,
    /// The collection its table mirrors.
    pub collection: String,
    /// `INSERT`, `UPDATE`, `DELETE`, or [`ADOPT`].
    pub op: String,
    /// The row after it (its key alone for an adoption, until read).
    pub new_row: Option<Map<String, Value>>,
    /// The row before it.
    pub old_row: Option<Map<String, Value>>,
}

/// The collection and record id each queued write names (from its row),
/// for reading the records they change.
pub fn queued_keys<'q>(schema: &Schema, queued: &'q [Queued]) -> Vec<(&'q str, &'q str)> {
    let mut keys = Vec::new();
    for q in queued {
        let Some(mirror) = schema.mirror_of(&q.collection) else {
            continue;
        };
        let row = q.new_row.as_ref().or(q.old_row.as_ref());
        if let Some(Value::String(id)) = row.and_then(|r| r.get(mirror.id_column)) {
            keys.push((q.collection.as_str(), id.as_str()));
        }
    }
    keys
}

/// A queued row's JSON text as an object.
pub fn object(text: Option<String>) -> Result<Option<Map<String, Value>>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt("captured row", e)))
        .transpose()
}

/// A record's collection and id.
pub type Key = (String, String);

/// The change each queued write makes, in order, with its place in the
/// queue; a write that is not one Ferry can make goes to `refusals`
/// with why.
/// With `replacing`, an insert onto a record that lives is taken as an
/// update from the row Ferry holds for it ([`as_replacement`]).
pub fn changes_of(
    schema: &Schema,
    queued: &mut [Queued],
    states: &mut HashMap<Key, RecordState>,
    clock: &ServerClock,
    refusals: &mut Vec<(i64, String)>,
    replacing: bool,
) -> Vec<(i64, Change)> {
    let mut changes = Vec::new();
    for q in queued.iter_mut() {
        if replacing {
            as_replacement(schema, q, states);
        }
        match change_of(schema, q, states, clock) {
            Ok(Some(change)) => changes.push((q.id, change)),
            Ok(None) => {}
            Err(why) => refusals.push((q.id, why)),
        }
    }
    changes
}

/// SQLite's `INSERT OR REPLACE` onto a row that exists deletes the old
/// row without its delete trigger (unless the writer turned
/// `recursive_triggers` on), so only the insert is queued: an insert of
/// a record that lives becomes an update from the row Ferry holds for
/// it, and a column it leaves null clears its field, as the row now
/// shows.
fn as_replacement(schema: &Schema, q: &mut Queued, states: &HashMap<Key, RecordState>) {
    if q.op != "INSERT" {
        return;
    }
    let Some(mirror) = schema.mirror_of(&q.collection) else {
        return;
    };
    let Some(new) = q.new_row.as_ref() else {
        return;
    };
    let (Some(Value::String(space)), Some(Value::String(id))) =
        (new.get(mirror.space_column), new.get(mirror.id_column))
    else {
        return;
    };
    let key = (q.collection.clone(), id.clone());
    let Some(stored) = states.get(&key).filter(|s| s.deleted.is_none()) else {
        return;
    };
    q.old_row = Some(mirror.row(space, id, stored));
    q.op = "UPDATE".to_owned();
}

/// The server batch of the queued writes' `changes`, made by the
/// backend through node `node`, checked against `schema`.
pub fn backend_batch(
    changes: &[(i64, Change)],
    node: &ClientId,
    schema: &Arc<AppSchema>,
) -> Result<Batch, StoreError> {
    Ok(Batch {
        user: UserId::new(BACKEND_USER).map_err(|e| StoreError::Internal(e.to_string()))?,
        client_id: node.clone(),
        batch_id: None,
        cursor: None,
        changes: changes.iter().map(|(_, c)| c.clone()).collect(),
        schema: Some(schema.clone()),
        actor: None,
    })
}

/// After a push of the queued writes' `changes` (each with its place in
/// the queue) was tried: its outcome, or `None` when it refused one write
/// for itself (the schema, a row its table refuses, a record grown too
/// large), which is moved to `refusals` with the reason so the rest can
/// be pushed again. Anything else is the drain's error.
pub fn set_aside(
    pushed: Result<PushOutcome, StoreError>,
    changes: &mut Vec<(i64, Change)>,
    refusals: &mut Vec<(i64, String)>,
) -> Result<Option<PushOutcome>, StoreError> {
    match pushed {
        Err(StoreError::Invalid { index, violation }) if index < changes.len() => {
            let (id, _) = changes.remove(index);
            refusals.push((id, violation.to_string()));
            Ok(None)
        }
        Err(StoreError::RecordTooLarge {
            collection,
            id,
            bytes,
        }) => {
            let why = format!(
                "record {collection}/{id} would hold {bytes} bytes of fields, past the limit"
            );
            let before = changes.len();
            changes.retain(|(captured, change)| {
                let named =
                    change.collection().as_str() == collection && change.id().as_str() == id;
                if named {
                    refusals.push((*captured, why.clone()));
                }
                !named
            });
            if changes.len() == before {
                return Err(StoreError::Internal(why));
            }
            Ok(None)
        }
        Err(StoreError::SchemaChanged { version, .. }) => Err(StoreError::SchemaChanged {
            version,
            batch: None,
        }),
        other => other.map(Some),
    }
}

/// The change one queued write makes, stamped by `clock` after what its
/// record holds; `None` when it changes nothing Ferry mirrors; why not,
/// when it is not a write Ferry can make. `states` follows the changes.
pub fn change_of(
    schema: &Schema,
    q: &Queued,
    states: &mut HashMap<Key, RecordState>,
    clock: &ServerClock,
) -> Result<Option<Change>, String> {
    let collection = Collection::new(q.collection.as_str()).map_err(|e| e.to_string())?;
    let mirror = schema
        .collection(&collection)
        .and_then(|c| c.mirror())
        .ok_or_else(|| format!("the collection {collection} is no longer mirrored"))?;
    let write = if q.op == ADOPT {
        // Taken in as the row is now, against the record as it is.
        let Some(row) = q.new_row.as_ref() else {
            return Ok(None);
        };
        let id = row.get(mirror.id_column).and_then(Value::as_str);
        let held = id.and_then(|id| states.get(&(q.collection.clone(), id.to_owned())));
        mirror.adopt(row, held)?
    } else {
        mirror.write_of(&q.op, q.new_row.as_ref(), q.old_row.as_ref())?
    };
    let Some(write) = write else {
        return Ok(None);
    };
    let id = RecordId::new(write.id.as_str())
        .map_err(|e| format!("its {} is not a record id: {e}", mirror.id_column))?;
    let key = (q.collection.clone(), write.id.clone());
    let stored = states.get(&key).cloned().unwrap_or_default();
    // An adoption saw the record as Ferry holds it: no one is told of a
    // loss. Any other write saw the row before it.
    let seen = (q.op == ADOPT).then(|| mirror.row(&write.space, &write.id, &stored));
    let old = if q.op == ADOPT {
        seen.as_ref()
    } else {
        q.old_row.as_ref()
    };
    for held in stored
        .fields
        .values()
        .map(|f| &f.hlc)
        .chain(&stored.deleted)
    {
        clock.observe(held);
    }
    let hlc = clock.tick();
    let change = match write.write {
        RowWrite::Fields(values) => {
            let base = mirror.bases(&values, &stored, old);
            let fields = values
                .into_iter()
                .map(|(name, value)| {
                    let hlc = hlc.clone();
                    (name, FieldValue { value, hlc })
                })
                .collect();
            Change::Upsert {
                collection,
                id,
                fields,
                base: Some(base),
            }
        }
        RowWrite::Delete => {
            let values = stored
                .fields
                .iter()
                .map(|(name, held)| (name.clone(), held.value.clone()))
                .collect();
            let mut base = mirror.bases(&values, &stored, old);
            // Fields the table does not show were not the backend's to see.
            for (name, held) in &stored.fields {
                if !mirror.columns.iter().any(|c| c.field == name) {
                    base.insert(name.clone(), Some(held.hlc.clone()));
                }
            }
            Change::Delete {
                collection,
                id,
                hlc,
                base: Some(base),
            }
        }
    };
    let after = apply_change(stored, change.clone()).state;
    states.insert(key, after);
    Ok(Some(change))
}
