//! Conflicts as a replica keeps them: how a `record_deleted` conflict
//! carries the values a delete dropped, how an inbox folds a new report
//! into the one it holds about the same field or record, and when a report
//! arrives already settled by the replica's own later write.
//!
//! The server detects conflicts ([`crate::merge`]); both clients keep them
//! with these functions (the browser through wasm), so an app sees the same
//! inbox on every device.
//!
//! ```
//! use ferry_core::conflict::{fold, lost_to_delete, restorable};
//! use ferry_core::{Change, ClientId, Collection, FieldName, FieldValue, Hlc, RecordId};
//! use serde_json::json;
//!
//! let at = |p| Hlc::new(p, 0, ClientId::new("phone").unwrap()).unwrap();
//! let (notes, n1) = (Collection::new("notes").unwrap(), RecordId::new("n-1").unwrap());
//! let edit = |field: &str, text: &str, p| Change::Upsert {
//!     collection: notes.clone(),
//!     id: n1.clone(),
//!     fields: [(FieldName::new(field).unwrap(), FieldValue { value: json!(text), hlc: at(p) })].into(),
//!     base: None,
//! };
//! // Two edits the person made offline, dropped when the record's delete arrived.
//! let first = lost_to_delete(&notes, &n1, &[edit("title", "Plans", 1)], None).unwrap();
//! let second = lost_to_delete(&notes, &n1, &[edit("body", "Call Ann", 2)], None).unwrap();
//! let kept = fold(&first, &second).unwrap();
//! assert_eq!(restorable(&kept), json!({"title": "Plans", "body": "Call Ann"}).as_object().unwrap().clone());
//! ```

use serde_json::{Map, Value};

use crate::change::{Change, Conflict, ConflictKind, FieldValue, Fields, RecordState};
use crate::hlc::Hlc;
use crate::names::{ClientId, Collection, FieldName, RecordId};

/// A `record_deleted` conflict for the values in `lost` (a client's
/// writes that a delete stamped `deleted` dropped): `yours` holds them as a
/// record's fields (`{name: {value, hlc}}`), stamped with the highest of
/// their HLCs. `None` when `lost` is empty.
pub fn record_deleted<'a>(
    collection: &Collection,
    id: &RecordId,
    lost: impl IntoIterator<Item = (&'a FieldName, &'a FieldValue)>,
    deleted: Option<&Hlc>,
) -> Option<Conflict> {
    let lost: Fields = lost
        .into_iter()
        .map(|(name, field)| (name.clone(), field.clone()))
        .collect();
    let newest = lost.values().map(|f| &f.hlc).max()?.clone();
    Some(Conflict {
        collection: collection.clone(),
        id: id.clone(),
        field: None,
        kind: ConflictKind::RecordDeleted,
        yours: Some(FieldValue {
            value: fields_value(&lost),
            hlc: newest,
        }),
        winner: deleted.map(|hlc| FieldValue {
            value: Value::Null,
            hlc: hlc.clone(),
        }),
    })
}

/// The `record_deleted` conflict for a replica's pending `changes` to a
/// record (in the order made) that it drops because the record was deleted
/// (at `deleted`, when known) before they reached the server: what they
/// wrote, each field's newest value. `None` when they wrote nothing (only
/// deletes).
pub fn lost_to_delete(
    collection: &Collection,
    id: &RecordId,
    changes: &[Change],
    deleted: Option<&Hlc>,
) -> Option<Conflict> {
    let mut lost = Fields::new();
    for change in changes {
        if let Change::Upsert { fields, .. } = change {
            for (name, field) in fields {
                match lost.get(name) {
                    Some(kept) if kept.hlc >= field.hlc => {}
                    _ => {
                        lost.insert(name.clone(), field.clone());
                    }
                }
            }
        }
    }
    record_deleted(collection, id, &lost, deleted)
}

/// The one `record_deleted` conflict a replica keeps when it learns that
/// a record was deleted (at `deleted`): the values of its pending
/// `dropped` changes, which will never be sent, and of the reports it
/// `held` about the record (field writes that lost, earlier reports of the
/// delete), each field's newest. `None` when nothing of the replica's is
/// left to keep, or when `local` (the record as the replica held it) is a
/// delete of its own: the person deleted the record, nothing is lost.
pub fn deleted_under(
    collection: &Collection,
    id: &RecordId,
    dropped: &[Change],
    held: &[Conflict],
    deleted: Option<&Hlc>,
    local: &RecordState,
    me: &ClientId,
) -> Option<Conflict> {
    if local.deleted.as_ref().is_some_and(|d| d.node() == me) {
        return None;
    }
    let mut kept = lost_to_delete(collection, id, dropped, deleted);
    for c in held
        .iter()
        .filter(|c| c.collection == *collection && c.id == *id)
    {
        let as_deleted = match (c.kind, &c.field, &c.yours) {
            (ConflictKind::StaleWrite, Some(field), Some(yours)) => {
                record_deleted(collection, id, [(field, yours)], deleted)
            }
            (ConflictKind::RecordDeleted, _, _) => Some(c.clone()),
            _ => None,
        };
        kept = match (kept, as_deleted) {
            (Some(a), Some(b)) => fold(&a, &b),
            (a, b) => a.or(b),
        };
    }
    kept
}

/// Whether two conflicts are about the same thing: one field of a record
/// (`stale_write`), or a record's delete (`record_deleted`).
pub fn same_subject(a: &Conflict, b: &Conflict) -> bool {
    a.kind == b.kind && a.collection == b.collection && a.id == b.id && a.field == b.field
}

/// The one conflict an inbox keeps when it holds `held` and is given
/// `incoming` about the same subject; `None` when the subjects differ
/// (both are kept).
///
/// - About a field, the report of the newer lost write is kept (the
///   person's latest intent for it), with the newer winner: a report seen
///   twice leaves the inbox as it was.
/// - About a deleted record, the lost values are put together (each
///   field's newest), so the inbox holds everything the delete took from
///   this replica, whichever way it was reported.
pub fn fold(held: &Conflict, incoming: &Conflict) -> Option<Conflict> {
    if !same_subject(held, incoming) {
        return None;
    }
    let winner = newest(held.winner.as_ref(), incoming.winner.as_ref()).cloned();
    let yours = match held.kind {
        ConflictKind::StaleWrite => newest(held.yours.as_ref(), incoming.yours.as_ref()).cloned(),
        ConflictKind::RecordDeleted => union(held.yours.as_ref(), incoming.yours.as_ref()),
    };
    Some(Conflict {
        yours,
        winner,
        ..held.clone()
    })
}

fn newest<'a>(a: Option<&'a FieldValue>, b: Option<&'a FieldValue>) -> Option<&'a FieldValue> {
    match (a, b) {
        (Some(a), Some(b)) if b.hlc > a.hlc => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// Two reports' lost values as one: each field's newest write.
fn union(a: Option<&FieldValue>, b: Option<&FieldValue>) -> Option<FieldValue> {
    let (Some(a), Some(b)) = (a, b) else {
        return a.or(b).cloned();
    };
    let mut all = lost_fields(a);
    for (name, field) in lost_fields(b) {
        match all.get(&name) {
            Some(kept) if kept.hlc >= field.hlc => {}
            _ => {
                all.insert(name, field);
            }
        }
    }
    Some(FieldValue {
        value: fields_value(&all),
        hlc: a.hlc.clone().max(b.hlc.clone()),
    })
}

fn fields_value(fields: &Fields) -> Value {
    // Fields are names and JSON values: they always serialize.
    serde_json::to_value(fields).unwrap_or(Value::Null)
}

/// The lost writes a `record_deleted` conflict carries in `yours` (a
/// record's fields, `{name: {value, hlc}}`); entries of another shape (a
/// server before protocol v1.2 sent none) are left out.
pub fn lost_fields(yours: &FieldValue) -> Fields {
    match &yours.value {
        Value::Object(map) => map
            .iter()
            .filter_map(|(name, f)| {
                let name = FieldName::new(name).ok()?;
                let field: FieldValue = serde_json::from_value(f.clone()).ok()?;
                Some((name, field))
            })
            .collect(),
        _ => Fields::new(),
    }
}

/// The values a `record_deleted` conflict's lost writes held, as the
/// fields of a record to write again (`{"title": "..."}`): what restoring
/// it as a new record writes.
pub fn restorable(conflict: &Conflict) -> Map<String, Value> {
    conflict
        .yours
        .as_ref()
        .map(lost_fields)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, f)| (name.into_string(), f.value))
        .collect()
}

/// Whether a report reached replica `me` already settled by what it did
/// since: it deleted the record itself, or (for a field) wrote the field
/// again, which replaced the lost write knowing it. `local` is the record
/// as the replica holds it.
pub fn settled_locally(conflict: &Conflict, local: &RecordState, me: &ClientId) -> bool {
    if local.deleted.as_ref().is_some_and(|d| d.node() == me) {
        return true;
    }
    let (ConflictKind::StaleWrite, Some(field), Some(yours)) =
        (conflict.kind, &conflict.field, &conflict.yours)
    else {
        return false;
    };
    local
        .fields
        .get(field)
        .is_some_and(|held| held.hlc.node() == me && held.hlc > yours.hlc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hlc(p: u64, node: &str) -> Hlc {
        Hlc::new(p, 0, ClientId::new(node).unwrap()).unwrap()
    }

    fn fv(v: Value, p: u64, node: &str) -> FieldValue {
        FieldValue {
            value: v,
            hlc: hlc(p, node),
        }
    }

    fn stale(field: &str, yours: FieldValue, winner: FieldValue) -> Conflict {
        Conflict {
            collection: Collection::new("todos").unwrap(),
            id: RecordId::new("t").unwrap(),
            field: Some(FieldName::new(field).unwrap()),
            kind: ConflictKind::StaleWrite,
            yours: Some(yours),
            winner: Some(winner),
        }
    }

    #[test]
    fn a_field_keeps_the_newest_lost_write_and_winner() {
        let a = stale("title", fv(json!("a1"), 1, "a"), fv(json!("b"), 5, "b"));
        let b = stale("title", fv(json!("a2"), 3, "a"), fv(json!("c"), 4, "c"));
        let kept = fold(&a, &b).unwrap();
        assert_eq!(kept.yours.unwrap().value, json!("a2"));
        assert_eq!(kept.winner.unwrap().value, json!("b"));
        assert_eq!(fold(&a, &a).unwrap(), a);
        let other = stale("done", fv(json!(true), 1, "a"), fv(json!(false), 2, "b"));
        assert_eq!(fold(&a, &other), None);
    }

    #[test]
    fn a_deleted_record_gathers_every_lost_value() {
        let (c, id) = (
            Collection::new("todos").unwrap(),
            RecordId::new("t").unwrap(),
        );
        let one: Fields = [(FieldName::new("title").unwrap(), fv(json!("x"), 1, "a"))].into();
        let two: Fields = [
            (FieldName::new("title").unwrap(), fv(json!("y"), 3, "a")),
            (FieldName::new("note").unwrap(), fv(json!("n"), 2, "a")),
        ]
        .into();
        let del = hlc(9, "b");
        let first = record_deleted(&c, &id, &one, Some(&del)).unwrap();
        let second = record_deleted(&c, &id, &two, Some(&del)).unwrap();
        let kept = fold(&second, &first).unwrap();
        assert_eq!(
            Value::Object(restorable(&kept)),
            json!({"title": "y", "note": "n"})
        );
        assert_eq!(kept.yours.as_ref().unwrap().hlc, hlc(3, "a"));
        assert_eq!(lost_fields(kept.yours.as_ref().unwrap()).len(), 2);
        assert_eq!(kept.winner.unwrap().hlc, del);
        assert_eq!(record_deleted(&c, &id, &Fields::new(), None), None);
    }

    #[test]
    fn pending_changes_dropped_by_a_delete_keep_each_fields_newest_value() {
        let (c, id) = (
            Collection::new("todos").unwrap(),
            RecordId::new("t").unwrap(),
        );
        let up = |pairs: &[(&str, Value, u64)]| Change::Upsert {
            collection: c.clone(),
            id: id.clone(),
            fields: pairs
                .iter()
                .map(|(n, v, p)| (FieldName::new(*n).unwrap(), fv(v.clone(), *p, "a")))
                .collect(),
            base: None,
        };
        let changes = [
            up(&[("title", json!("first"), 1), ("n", json!(1), 1)]),
            up(&[("title", json!("second"), 2)]),
        ];
        let lost = lost_to_delete(&c, &id, &changes, None).unwrap();
        assert_eq!(
            Value::Object(restorable(&lost)),
            json!({"title": "second", "n": 1})
        );
        assert_eq!(lost.winner, None);
        let only_delete = Change::Delete {
            collection: c.clone(),
            id: id.clone(),
            hlc: hlc(3, "a"),
            base: None,
        };
        assert_eq!(lost_to_delete(&c, &id, &[only_delete], None), None);
    }

    #[test]
    fn a_report_of_a_field_written_again_here_is_settled() {
        let me = ClientId::new("a").unwrap();
        let c = stale("title", fv(json!("a1"), 1, "a"), fv(json!("b"), 2, "b"));
        let state = |f: FieldValue| RecordState {
            fields: [(FieldName::new("title").unwrap(), f)].into(),
            deleted: None,
        };
        assert!(settled_locally(&c, &state(fv(json!("a2"), 3, "a")), &me));
        assert!(!settled_locally(&c, &state(fv(json!("b"), 2, "b")), &me));
        assert!(!settled_locally(&c, &state(fv(json!("a1"), 1, "a")), &me));
        assert!(!settled_locally(&c, &RecordState::default(), &me));
    }
}
