//! Changes, records and conflicts: the data of PROTOCOL.md §2, with serde
//! matching its JSON exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::names::{Collection, FieldName, RecordId};

/// One field's value and the HLC of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldValue {
    /// Any JSON value, `null` included.
    pub value: serde_json::Value,
    /// When it was written.
    pub hlc: Hlc,
}

/// The fields of a record or of an upsert, by name.
pub type Fields = BTreeMap<FieldName, FieldValue>;

/// What a write's author had seen: for each field the write replaces, the
/// HLC of the value the author's replica held there when it wrote (`null`
/// when it held none). A write that replaces a stored value other than its
/// base replaced a value its author had not seen: that value's author has
/// lost to a concurrent edit and is told (see [`crate::merge`]).
pub type Bases = BTreeMap<FieldName, Option<Hlc>>;

/// A write sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Sets the named fields; fields not named are untouched.
    Upsert {
        /// The record's collection.
        collection: Collection,
        /// The record's id.
        id: RecordId,
        /// One or more fields.
        fields: Fields,
        /// The base of each field written; absent from writers that do
        /// not say (older clients, plain HTTP), whose writes make no
        /// conflict for the authors of the values they replace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<Bases>,
    },
    /// Turns the record into a tombstone.
    Delete {
        /// The record's collection.
        collection: Collection,
        /// The record's id.
        id: RecordId,
        /// When it was deleted.
        hlc: Hlc,
        /// The record's fields as the deleting replica held them; absent
        /// as for an upsert.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<Bases>,
    },
}

impl Change {
    /// The collection of the record this change writes.
    pub fn collection(&self) -> &Collection {
        match self {
            Change::Upsert { collection, .. } | Change::Delete { collection, .. } => collection,
        }
    }

    /// The id of the record this change writes.
    pub fn id(&self) -> &RecordId {
        match self {
            Change::Upsert { id, .. } | Change::Delete { id, .. } => id,
        }
    }

    /// The highest HLC this change carries.
    pub fn max_hlc(&self) -> Option<&Hlc> {
        match self {
            Change::Upsert { fields, .. } => fields.values().map(|f| &f.hlc).max(),
            Change::Delete { hlc, .. } => Some(hlc),
        }
    }
}

/// The state of one record, without its address: live fields, or a tombstone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    /// The current fields; always empty on a tombstone.
    pub fields: Fields,
    /// `Some(hlc)` when the record is a tombstone.
    pub deleted: Option<Hlc>,
}

impl RecordState {
    /// Whether the record is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }
}

/// A record as the server returns it: the whole current state. Keys a
/// later server adds are ignored (a server sends them only to clients that
/// say they speak the version that added them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record's collection.
    pub collection: Collection,
    /// The record's id.
    pub id: RecordId,
    /// The space sequence number of the last change that altered it.
    pub seq: u64,
    /// The current fields; `{}` on a tombstone.
    pub fields: Fields,
    /// The HLC of the delete, on a tombstone; `null` otherwise.
    pub deleted: Option<Hlc>,
    /// The user whose change created it (v1.5; absent for records stored
    /// before the server recorded authors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<crate::names::UserId>,
}

impl Record {
    /// The record's state without its address.
    pub fn state(&self) -> RecordState {
        RecordState {
            fields: self.fields.clone(),
            deleted: self.deleted.clone(),
        }
    }
}

/// Why a write lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A newer write from another node already won that field.
    StaleWrite,
    /// The record is a tombstone.
    RecordDeleted,
}

/// A write that lost, reported to the client that made it.
///
/// For `record_deleted`, `field` is `null`; `yours` holds the writes of
/// the client that the delete dropped, as a record's fields (`{"note":
/// {"value": "...", "hlc": "..."}}`) stamped with the highest of their
/// HLCs, so that an app can restore them as a new record; `winner` is
/// `{"value": null, "hlc": <the delete's HLC>}`. Servers before protocol
/// v1.2 sent `null` for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conflict {
    /// The record's collection.
    pub collection: Collection,
    /// The record's id.
    pub id: RecordId,
    /// The field that lost; `null` for `record_deleted`.
    pub field: Option<FieldName>,
    /// Why it lost.
    pub kind: ConflictKind,
    /// The write that lost (for `record_deleted`, the values dropped).
    pub yours: Option<FieldValue>,
    /// The write that won (for `record_deleted`, the delete).
    pub winner: Option<FieldValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H1: &str = "001763798400000:00000:laptop-7f3a";
    const H2: &str = "001763798400001:00000:phone-1";

    #[test]
    fn upsert_json_is_the_protocols() {
        let wire = json!({"op": "upsert", "collection": "todos", "id": "t-1",
            "fields": {"title": {"value": "Buy milk", "hlc": H1},
                       "done": {"value": false, "hlc": H1}}});
        let change: Change = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(change.collection().as_str(), "todos");
        assert_eq!(change.id().as_str(), "t-1");
        assert_eq!(serde_json::to_value(&change).unwrap(), wire);
    }

    #[test]
    fn delete_json_is_the_protocols() {
        let wire = json!({"op": "delete", "collection": "todos", "id": "t-1", "hlc": H2});
        let change: Change = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(change.max_hlc().unwrap().to_string(), H2);
        assert_eq!(serde_json::to_value(&change).unwrap(), wire);
    }

    #[test]
    fn a_null_value_is_a_value_but_a_missing_one_is_an_error() {
        let ok = json!({"op": "upsert", "collection": "c", "id": "i",
            "fields": {"x": {"value": null, "hlc": H1}}});
        assert!(serde_json::from_value::<Change>(ok).is_ok());
        let missing = json!({"op": "upsert", "collection": "c", "id": "i",
            "fields": {"x": {"hlc": H1}}});
        assert!(serde_json::from_value::<Change>(missing).is_err());
    }

    #[test]
    fn unknown_ops_and_keys_are_refused() {
        for bad in [
            json!({"op": "merge", "collection": "c", "id": "i", "hlc": H1}),
            json!({"op": "delete", "collection": "c", "id": "i", "hlc": H1, "x": 1}),
            json!({"op": "delete", "collection": "c", "id": "i"}),
            json!({"op": "upsert", "collection": "c", "id": "i", "fields": {"_x": {"value": 1, "hlc": H1}}}),
        ] {
            assert!(
                serde_json::from_value::<Change>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn record_and_conflict_json_are_the_protocols() {
        let record = json!({"collection": "todos", "id": "t-1", "seq": 42,
            "fields": {"title": {"value": "Buy milk", "hlc": H1}}, "deleted": null});
        let parsed: Record = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), record);

        let tombstone = json!({"collection": "todos", "id": "t-1", "seq": 43,
            "fields": {}, "deleted": H2});
        let parsed: Record = serde_json::from_value(tombstone.clone()).unwrap();
        assert!(parsed.state().is_deleted());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), tombstone);

        let conflict = json!({"collection": "todos", "id": "t-1", "field": "title",
            "kind": "stale_write",
            "yours": {"value": "Buy milk", "hlc": H1},
            "winner": {"value": "Buy eggs", "hlc": H2}});
        let parsed: Conflict = serde_json::from_value(conflict.clone()).unwrap();
        assert_eq!(parsed.kind, ConflictKind::StaleWrite);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), conflict);

        let deleted = json!({"collection": "todos", "id": "t-1", "field": null,
            "kind": "record_deleted", "yours": null, "winner": null});
        let parsed: Conflict = serde_json::from_value(deleted.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), deleted);
    }
}
