//! A replica's own writes: turning what an app asks for (put these fields,
//! patch those, delete) into the [`Change`] that goes into the outbox and
//! the record's new state, with the merge of [`crate::merge`].
//!
//! The native client and the browser client (through wasm) both write
//! through [`local_write`], so an app sees the same rules on every device:
//! the fields are a JSON object of valid names, each value at most 1 MiB,
//! and a deleted record stays deleted (a new record id is the way back).
//!
//! ```
//! use ferry_core::local::{LocalWrite, local_write};
//! use ferry_core::{ClientId, Collection, Hlc, RecordId, RecordState};
//! use serde_json::json;
//!
//! let hlc = Hlc::zero(ClientId::new("tab-1").unwrap()).tick(1_763_798_400_000);
//! let (todos, t1) = (Collection::new("todos").unwrap(), RecordId::new("t-1").unwrap());
//! let write = LocalWrite::put(json!({"title": "Milk", "done": false})).unwrap();
//! let done = local_write(RecordState::default(), &todos, &t1, write, &hlc).unwrap();
//! assert_eq!(done.state.fields.len(), 2);
//! ```

use serde_json::{Map, Value};

use crate::change::{Change, FieldValue, RecordState};
use crate::hlc::Hlc;
use crate::merge::apply_change;
use crate::names::{Collection, FieldName, NameError, RecordId};
use crate::protocol::{MAX_VALUE_BYTES, serialized_len};

/// What an app asks a replica to do to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalWrite {
    /// Make the record exactly these fields: the ones it held that are not
    /// named become `null` (last-write-wins cannot remove a field).
    Put(Map<String, Value>),
    /// Set these fields; the others stay as they are.
    Patch(Map<String, Value>),
    /// Turn the record into a tombstone.
    Delete,
}

/// Why a local write was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalWriteError {
    /// The fields are not a JSON object.
    #[error("fields must be a JSON object, like {{\"title\": \"Milk\"}}; got {0}")]
    NotAnObject(String),
    /// An upsert must name a field.
    #[error("name at least one field")]
    NoFields,
    /// A field name breaks PROTOCOL.md §1.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A value is larger than the protocol allows.
    #[error("field {field} is {bytes} bytes of JSON; the most is {MAX_VALUE_BYTES}")]
    TooLarge {
        /// The field.
        field: String,
        /// Its serialized size.
        bytes: usize,
    },
    /// The record is a tombstone.
    #[error("{0} was deleted; deletes are final, so write a new record instead")]
    Deleted(String),
}

impl LocalWrite {
    /// A put of `fields`, which must be a JSON object.
    pub fn put(fields: Value) -> Result<LocalWrite, LocalWriteError> {
        object(fields).map(LocalWrite::Put)
    }

    /// A patch of `fields`, which must be a JSON object.
    pub fn patch(fields: Value) -> Result<LocalWrite, LocalWriteError> {
        object(fields).map(LocalWrite::Patch)
    }

    /// This write as made by a writer who may not write the fields
    /// `reserved` names (a client, and the schema's server-only fields): a
    /// put leaves them as `state` holds them rather than clearing them, as
    /// the server's REST `PUT` does. Other writes are unchanged.
    pub fn keeping(self, state: &RecordState, reserved: impl Fn(&str) -> bool) -> LocalWrite {
        match self {
            LocalWrite::Put(mut fields)
                if state
                    .fields
                    .keys()
                    .any(|n| reserved(n.as_str()) && !fields.contains_key(n.as_str())) =>
            {
                for name in state.fields.keys() {
                    if !reserved(name.as_str()) && !fields.contains_key(name.as_str()) {
                        fields.insert(name.to_string(), Value::Null);
                    }
                }
                LocalWrite::Patch(fields)
            }
            other => other,
        }
    }
}

fn object(fields: Value) -> Result<Map<String, Value>, LocalWriteError> {
    match fields {
        Value::Object(map) => Ok(map),
        other => Err(LocalWriteError::NotAnObject(other.to_string())),
    }
}

/// A local write done: the change to queue, and the record after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDone {
    /// The change for the outbox.
    pub change: Change,
    /// The record's state with the change merged in.
    pub state: RecordState,
}

/// Applies `write` to a record whose state is `state`, stamped `hlc` (the
/// replica's next tick). Checks everything the server would, so that a
/// change the server refuses never reaches the outbox.
pub fn local_write(
    state: RecordState,
    collection: &Collection,
    id: &RecordId,
    write: LocalWrite,
    hlc: &Hlc,
) -> Result<LocalDone, LocalWriteError> {
    let change = match write {
        LocalWrite::Delete => Change::Delete {
            collection: collection.clone(),
            id: id.clone(),
            hlc: hlc.clone(),
            // Everything the replica holds of the record is what the
            // delete was made knowing.
            base: Some(
                state
                    .fields
                    .iter()
                    .map(|(name, f)| (name.clone(), Some(f.hlc.clone())))
                    .collect(),
            ),
        },
        LocalWrite::Put(_) | LocalWrite::Patch(_) if state.is_deleted() => {
            return Err(LocalWriteError::Deleted(format!("{collection}/{id}")));
        }
        LocalWrite::Put(fields) => {
            let mut values = checked(fields)?;
            for name in state.fields.keys() {
                if !values.iter().any(|(n, _)| n == name) {
                    values.push((name.clone(), Value::Null));
                }
            }
            upsert(&state, collection, id, values, hlc)
        }
        LocalWrite::Patch(fields) => upsert(&state, collection, id, checked(fields)?, hlc),
    };
    let merged = apply_change(state, change.clone());
    Ok(LocalDone {
        change,
        state: merged.state,
    })
}

/// The fields with their names checked and their sizes measured.
fn checked(fields: Map<String, Value>) -> Result<Vec<(FieldName, Value)>, LocalWriteError> {
    if fields.is_empty() {
        return Err(LocalWriteError::NoFields);
    }
    fields
        .into_iter()
        .map(|(name, value)| {
            let bytes = serialized_len(&value);
            if bytes > MAX_VALUE_BYTES {
                return Err(LocalWriteError::TooLarge { field: name, bytes });
            }
            Ok((FieldName::new(name)?, value))
        })
        .collect()
}

/// An upsert of `values` over `state`: each field's base is the HLC of the
/// value the replica holds there, if any.
fn upsert(
    state: &RecordState,
    collection: &Collection,
    id: &RecordId,
    values: Vec<(FieldName, Value)>,
    hlc: &Hlc,
) -> Change {
    let base = values
        .iter()
        .map(|(name, _)| (name.clone(), state.fields.get(name).map(|f| f.hlc.clone())))
        .collect();
    Change::Upsert {
        collection: collection.clone(),
        id: id.clone(),
        base: Some(base),
        fields: values
            .into_iter()
            .map(|(name, value)| {
                let hlc = hlc.clone();
                (name, FieldValue { value, hlc })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ClientId;
    use serde_json::json;

    fn at(p: u64) -> Hlc {
        Hlc::new(p, 0, ClientId::new("tab").unwrap()).unwrap()
    }

    fn names() -> (Collection, RecordId) {
        (
            Collection::new("todos").unwrap(),
            RecordId::new("t").unwrap(),
        )
    }

    fn write(state: RecordState, w: LocalWrite, p: u64) -> Result<LocalDone, LocalWriteError> {
        let (c, id) = names();
        local_write(state, &c, &id, w, &at(p))
    }

    #[test]
    fn put_nulls_the_fields_it_does_not_name_and_patch_keeps_them() {
        let first = write(
            RecordState::default(),
            LocalWrite::put(json!({"title": "a", "done": false})).unwrap(),
            1,
        )
        .unwrap();
        let patched = write(
            first.state.clone(),
            LocalWrite::patch(json!({"done": true})).unwrap(),
            2,
        )
        .unwrap();
        assert_eq!(patched.state.fields.len(), 2);
        let title = FieldName::new("title").unwrap();
        assert_eq!(patched.state.fields[&title].value, json!("a"));
        let put = write(
            patched.state,
            LocalWrite::put(json!({"done": false})).unwrap(),
            3,
        )
        .unwrap();
        assert_eq!(put.state.fields[&title].value, Value::Null);
        match put.change {
            Change::Upsert { fields, .. } => assert_eq!(fields.len(), 2),
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    #[test]
    fn bad_writes_are_refused() {
        let s = RecordState::default;
        assert!(matches!(
            LocalWrite::put(json!([1])),
            Err(LocalWriteError::NotAnObject(_))
        ));
        assert_eq!(
            write(s(), LocalWrite::patch(json!({})).unwrap(), 1),
            Err(LocalWriteError::NoFields)
        );
        assert!(matches!(
            write(s(), LocalWrite::patch(json!({"_x": 1})).unwrap(), 1),
            Err(LocalWriteError::Name(_))
        ));
        let big = "x".repeat(MAX_VALUE_BYTES);
        assert!(matches!(
            write(s(), LocalWrite::patch(json!({ "a": big })).unwrap(), 1),
            Err(LocalWriteError::TooLarge { .. })
        ));
        let gone = write(s(), LocalWrite::Delete, 1).unwrap();
        assert!(gone.state.is_deleted());
        assert!(matches!(
            write(gone.state, LocalWrite::patch(json!({"a": 1})).unwrap(), 2),
            Err(LocalWriteError::Deleted(_))
        ));
    }
}
