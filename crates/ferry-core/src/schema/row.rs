//! A record as the row of its mirrored table, and a row the app's backend
//! wrote as a write to its record (docs/tables.md). The server calls both;
//! the one rule about values here ([`unstorable`]) is also judged by both
//! clients, through [`super::Schema::check_change`], so a write the table
//! could not hold is refused at the call.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::table::Mirror;
use super::value::misfit;
use super::{FieldSchema, FieldType, ItemType};
use crate::change::{Bases, RecordState};
use crate::names::FieldName;

/// PostgreSQL's widest time zone offset, in seconds (±15:59).
const MAX_OFFSET_SECONDS: i32 = 15 * 3600 + 59 * 60;

/// Why a value that fits `field` still cannot go into the field's column:
/// PostgreSQL's `text` and `jsonb` hold no U+0000, and its `timestamptz`
/// no year 0 and no offset past ±15:59. A sentence that follows "and".
pub fn unstorable(field: &FieldSchema, value: &Value) -> Option<String> {
    match field.kind {
        FieldType::String
        | FieldType::Enum
        | FieldType::Ref
        | FieldType::Json
        | FieldType::File => has_nul(value).then(nul),
        FieldType::Timestamp => value.as_str().and_then(bad_timestamp),
        FieldType::Array => value.as_array()?.iter().find_map(|item| match field.items {
            Some(ItemType::Timestamp) => item.as_str().and_then(bad_timestamp),
            _ => has_nul(item).then(nul),
        }),
        _ => None,
    }
}

fn nul() -> String {
    "may not hold the character U+0000 (a PostgreSQL column cannot)".to_owned()
}

/// Whether a string anywhere in `value` (an object's keys included) holds
/// U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn bad_timestamp(s: &str) -> Option<String> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let year = at.to_offset(time::UtcOffset::UTC).year();
    if at.offset().whole_seconds().abs() > MAX_OFFSET_SECONDS {
        Some(format!(
            "its timestamp {s} has an offset past ±15:59, which a PostgreSQL column cannot hold"
        ))
    } else if !(1..=9999).contains(&year) {
        Some(format!(
            "its timestamp {s} is outside years 1 to 9999 in UTC, which a PostgreSQL column cannot hold"
        ))
    } else {
        None
    }
}

/// A timestamp as Ferry writes it where it is kept as text (an SQLite
/// table): in UTC with six digits of fraction and `Z`, so that the texts
/// sort as the times do and SQLite's date functions read them. `None`
/// for text that is not an RFC 3339 timestamp.
pub fn sortable_timestamp(s: &str) -> Option<String> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    sortable(at)
}

/// [`sortable_timestamp`] of a time in milliseconds since the epoch.
pub fn sortable_timestamp_ms(ms: i64) -> Option<String> {
    sortable(OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?)
}

fn sortable(at: OffsetDateTime) -> Option<String> {
    // To the microsecond, rounded, as a PostgreSQL column keeps it.
    let micros = (at.unix_timestamp_nanos() + 500).div_euclid(1000);
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok()?;
    // Years past 9999 or before 1 would not sort as text.
    if !(1..=9999).contains(&at.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    ))
}

/// What a row the app's backend wrote asks of its record.
#[derive(Debug, Clone, PartialEq)]
pub enum RowWrite {
    /// Set these fields (each a value as the row holds it; null clears).
    Fields(BTreeMap<FieldName, Value>),
    /// Delete the record.
    Delete,
}

/// One row write turned into a write of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The record's space, from the space column.
    pub space: String,
    /// The record's id, from the id column.
    pub id: String,
    /// What to do to it.
    pub write: RowWrite,
}

impl Mirror<'_> {
    /// The row of a record for its table: each mirrored column's value,
    /// keyed by column (the JSON `jsonb_populate_recordset` reads). A
    /// value that does not fit its field (one stored before the schema
    /// said otherwise) goes in as null: the table holds what it can type,
    /// the record keeps the value. The updated-at column is the writer's.
    pub fn row(&self, space: &str, id: &str, state: &RecordState) -> Map<String, Value> {
        let mut row = Map::new();
        row.insert(self.space_column.to_owned(), Value::from(space));
        row.insert(self.id_column.to_owned(), Value::from(id));
        for (column, value) in self.columns.iter().zip(self.cells(state)) {
            row.insert(
                column.column.to_owned(),
                value.cloned().unwrap_or(Value::Null),
            );
        }
        row.insert(
            self.soft_delete_column.to_owned(),
            Self::deleted_at(state).map_or(Value::Null, Value::from),
        );
        row
    }

    /// The value of each of [`Mirror::columns`] in a record's row, in
    /// their order: `None` (null) for a field the record does not hold,
    /// holds as null, or holds a value that does not fit its field (one
    /// stored before the schema said otherwise).
    pub fn cells<'s>(&self, state: &'s RecordState) -> impl Iterator<Item = Option<&'s Value>> {
        self.columns.iter().map(move |column| {
            state
                .fields
                .get(column.field)
                .map(|held| &held.value)
                .filter(|v| {
                    !v.is_null()
                        && misfit(column.declared, v).is_none()
                        && unstorable(column.declared, v).is_none()
                })
        })
    }

    /// When a deleted record was deleted (its tombstone's time, RFC 3339,
    /// for the soft-delete column); `None` while it lives.
    pub fn deleted_at(state: &RecordState) -> Option<String> {
        let hlc = state.deleted.as_ref()?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(hlc.physical()) * 1_000_000)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
    }

    /// The write a row change of the app's backend makes (`op` as a
    /// trigger's `TG_OP`: `INSERT`, `UPDATE`, `DELETE`; the rows as
    /// `to_jsonb` gives them). An insert sets every mirrored column it
    /// holds a value for; an update, the mirrored columns it changed; one
    /// that sets the soft-delete column, and a `DELETE`, delete. `None`
    /// when it changes nothing Ferry mirrors; an error, for a person, when
    /// it is not a write Ferry can make.
    pub fn write_of(
        &self,
        op: &str,
        new: Option<&Map<String, Value>>,
        old: Option<&Map<String, Value>>,
    ) -> Result<Option<RowChange>, String> {
        let key = |row: &Map<String, Value>, column: &str| -> Result<String, String> {
            match row.get(column) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None => Err(format!("its {column} is null")),
                Some(other) => Err(format!("its {column} is {other}, not text")),
            }
        };
        let live =
            |row: &Map<String, Value>| row.get(self.soft_delete_column).is_none_or(Value::is_null);
        let (row, write) = match (op, new, old) {
            ("DELETE", _, Some(old)) => (old, Some(RowWrite::Delete)),
            ("INSERT", Some(new), _) if !live(new) => (new, Some(RowWrite::Delete)),
            ("INSERT", Some(new), _) => {
                let fields: BTreeMap<FieldName, Value> = self
                    .columns
                    .iter()
                    .filter_map(|c| {
                        let value = new.get(c.column).filter(|v| !v.is_null())?;
                        Some((c.field.clone(), value.clone()))
                    })
                    .collect();
                (new, Some(RowWrite::Fields(fields)))
            }
            ("UPDATE", Some(new), Some(old)) => {
                for column in [self.space_column, self.id_column] {
                    if new.get(column) != old.get(column) {
                        return Err(format!(
                            "it changes the row's {column}, which names its record: insert a \
                             new row and delete the old one instead"
                        ));
                    }
                }
                let write = if live(old) && !live(new) {
                    Some(RowWrite::Delete)
                } else {
                    let fields: BTreeMap<FieldName, Value> = self
                        .columns
                        .iter()
                        .filter(|c| match (new.get(c.column), old.get(c.column)) {
                            (Some(a), Some(b)) => a != b && !same_value(c.declared, a, b),
                            (a, b) => a != b,
                        })
                        .map(|c| {
                            let value = new.get(c.column).cloned().unwrap_or(Value::Null);
                            (c.field.clone(), value)
                        })
                        .collect();
                    (!fields.is_empty()).then_some(RowWrite::Fields(fields))
                };
                (new, write)
            }
            // A statement-level capture pairs an update's old and new rows
            // by the key: a row whose key changed arrives as two halves.
            ("UPDATE", _, _) => {
                return Err(format!(
                    "it changes the row's {} or {}, which name its record: insert a new \
                     row and delete the old one instead",
                    self.space_column, self.id_column
                ));
            }
            _ => return Err(format!("a {op} trigger event Ferry does not know")),
        };
        let Some(write) = write else {
            return Ok(None);
        };
        Ok(Some(RowChange {
            space: key(row, self.space_column)?,
            id: key(row, self.id_column)?,
            write,
        }))
    }
}

impl Mirror<'_> {
    /// The base of each field a row write sets: what the backend's
    /// transaction saw there. Where the row's old value (`old`, an
    /// update's) is the record's stored one, the backend saw that write
    /// (its HLC); anywhere else it saw none of Ferry's, and the stored
    /// value it replaces is reported to its author as lost.
    pub fn bases(
        &self,
        fields: &BTreeMap<FieldName, Value>,
        stored: &RecordState,
        old: Option<&Map<String, Value>>,
    ) -> Bases {
        fields
            .keys()
            .map(|name| {
                let seen = self.columns.iter().find(|c| c.field == name).and_then(|c| {
                    let held = stored.fields.get(name)?;
                    let was = old?.get(c.column)?;
                    same_value(c.declared, was, &held.value).then(|| held.hlc.clone())
                });
                (name.clone(), seen)
            })
            .collect()
    }
}

/// Whether a column's value and a record's are the same value of `field`:
/// timestamps as instants to the microsecond (PostgreSQL writes `+00:00`
/// where a client wrote `Z`, and keeps microseconds), numbers as numbers.
pub(super) fn same_value(field: &FieldSchema, a: &Value, b: &Value) -> bool {
    // To the microsecond, as a column keeps it.
    let instant = |v: &Value| {
        v.as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .map(|at| (at.unix_timestamp_nanos() + 500).div_euclid(1000))
    };
    let same_item = |kind: Option<ItemType>, a: &Value, b: &Value| match kind {
        Some(ItemType::Timestamp) => instant(a).is_some() && instant(a) == instant(b),
        Some(ItemType::Number | ItemType::Integer) => {
            a.as_f64().is_some() && a.as_f64() == b.as_f64()
        }
        _ => a == b,
    };
    match field.kind {
        FieldType::Timestamp => same_item(Some(ItemType::Timestamp), a, b),
        FieldType::Number | FieldType::Integer => same_item(Some(ItemType::Number), a, b),
        FieldType::Array => match (a.as_array(), b.as_array()) {
            (Some(x), Some(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_item(field.items, a, b))
            }
            _ => a == b,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::change::FieldValue;
    use crate::hlc::Hlc;
    use crate::names::{ClientId, Collection};
    use crate::schema::Schema;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(
            r#"{"collections": {"cards": {"table": "cards", "space_column": "workspace_id",
                "fields": {"title": {"type": "string"}, "due": {"type": "timestamp"},
                           "votes": {"type": "integer"}, "meta": {"type": "json"},
                           "url": {"type": "string", "column": "link"}}}}}"#,
        )
        .unwrap()
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn values_a_column_cannot_hold_are_named() {
        let schema = schema();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let field = |name: &str| &cards.fields[&FieldName::new(name).unwrap()];
        assert!(unstorable(field("title"), &json!("a\u{0}b")).is_some());
        assert!(unstorable(field("meta"), &json!({"k": ["x\u{0}"]})).is_some());
        assert!(unstorable(field("meta"), &json!({"k\u{0}": 1})).is_some());
        assert!(unstorable(field("due"), &json!("0000-06-01T00:00:00Z")).is_some());
        assert!(unstorable(field("due"), &json!("2026-01-01T00:00:00-23:59")).is_some());
        assert!(unstorable(field("due"), &json!("0001-01-01T00:00:00+01:00")).is_some());
        assert_eq!(
            unstorable(field("due"), &json!("2026-12-31T23:59:60Z")),
            None
        );
        assert_eq!(unstorable(field("title"), &json!("plain")), None);
        assert_eq!(unstorable(field("votes"), &json!(3)), None);
    }

    #[test]
    fn timestamps_kept_as_text_sort_as_times_do() {
        let a = sortable_timestamp("2026-12-24T18:00:00+05:30").unwrap();
        let b = sortable_timestamp("2026-12-24T12:30:00.5Z").unwrap();
        let c = sortable_timestamp("2026-12-24T12:30:01Z").unwrap();
        assert_eq!(a, "2026-12-24T12:30:00.000000Z");
        assert_eq!(b, "2026-12-24T12:30:00.500000Z");
        assert!(a < b && b < c);
        assert_eq!(sortable_timestamp("yesterday"), None);
        assert_eq!(
            sortable_timestamp("2026-12-24T12:30:00.1234567Z").as_deref(),
            Some("2026-12-24T12:30:00.123457Z")
        );
        assert_eq!(
            sortable_timestamp_ms(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123000Z")
        );
    }

    #[test]
    fn a_record_becomes_its_row_with_misfits_as_null() {
        let schema = schema();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let mirror = cards.mirror().unwrap();
        let hlc = Hlc::new(1_700_000_000_000, 0, ClientId::new("n").unwrap()).unwrap();
        let held = |value: Value| FieldValue {
            value,
            hlc: hlc.clone(),
        };
        let mut state = RecordState::default();
        for (name, value) in [
            ("title", json!("Hello")),
            ("url", json!("https://x")),
            ("votes", json!("many")),
            ("extra", json!(1)),
        ] {
            state
                .fields
                .insert(FieldName::new(name).unwrap(), held(value));
        }
        let row = mirror.row("w1", "c1", &state);
        assert_eq!(
            Value::Object(row),
            json!({"workspace_id": "w1", "id": "c1", "title": "Hello", "link": "https://x",
                   "votes": null, "due": null, "meta": null, "deleted_at": null})
        );
        state.deleted = Some(hlc);
        let row = mirror.row("w1", "c1", &state);
        assert_eq!(row["deleted_at"], json!("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn row_writes_become_record_writes() {
        let schema = schema();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let m = cards.mirror().unwrap();
        let field = |name: &str| FieldName::new(name).unwrap();
        let a = obj(
            json!({"workspace_id": "w1", "id": "c1", "title": "A", "link": null,
                           "votes": 2, "deleted_at": null, "app_only": 7}),
        );
        let inserted = m.write_of("INSERT", Some(&a), None).unwrap().unwrap();
        assert_eq!(
            (inserted.space.as_str(), inserted.id.as_str()),
            ("w1", "c1")
        );
        assert_eq!(
            inserted.write,
            RowWrite::Fields(BTreeMap::from([
                (field("title"), json!("A")),
                (field("votes"), json!(2))
            ]))
        );
        // An update names only the mirrored columns it changed.
        let mut b = a.clone();
        b.insert("link".into(), json!("https://y"));
        b.insert("app_only".into(), json!(8));
        let updated = m.write_of("UPDATE", Some(&b), Some(&a)).unwrap().unwrap();
        assert_eq!(
            updated.write,
            RowWrite::Fields(BTreeMap::from([(field("url"), json!("https://y"))]))
        );
        // A change to columns Ferry does not mirror is no write.
        let mut c = a.clone();
        c.insert("app_only".into(), json!(9));
        assert_eq!(m.write_of("UPDATE", Some(&c), Some(&a)).unwrap(), None);
        // Setting the soft-delete column, or deleting the row, deletes.
        let mut d = a.clone();
        d.insert("deleted_at".into(), json!("2026-12-03T00:00:00+00:00"));
        let soft = m.write_of("UPDATE", Some(&d), Some(&a)).unwrap().unwrap();
        assert_eq!(soft.write, RowWrite::Delete);
        let hard = m.write_of("DELETE", None, Some(&a)).unwrap().unwrap();
        assert_eq!(hard.write, RowWrite::Delete);
        assert_eq!(
            m.write_of("INSERT", Some(&d), None).unwrap().unwrap().write,
            RowWrite::Delete
        );
        // Moving a row to another space is refused, naming the column.
        let mut e = a.clone();
        e.insert("workspace_id".into(), json!("w2"));
        let moved = m.write_of("UPDATE", Some(&e), Some(&a)).unwrap_err();
        assert!(moved.contains("workspace_id"), "{moved}");
        let mut f = a.clone();
        f.insert("id".into(), Value::Null);
        assert!(m.write_of("INSERT", Some(&f), None).is_err());
    }

    #[test]
    fn a_row_write_s_base_is_the_value_its_transaction_saw() {
        let schema = schema();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let m = cards.mirror().unwrap();
        let field = |name: &str| FieldName::new(name).unwrap();
        let hlc = Hlc::new(1_700_000_000_000, 0, ClientId::new("d").unwrap()).unwrap();
        let mut stored = RecordState::default();
        for (name, value) in [
            ("due", json!("2026-01-01T00:00:00Z")),
            ("title", json!("A")),
        ] {
            let held = FieldValue {
                value,
                hlc: hlc.clone(),
            };
            stored.fields.insert(field(name), held);
        }
        // The row as Ferry wrote it (PostgreSQL's own timestamp form), and
        // a title a device wrote since, which the backend did not see.
        let old = obj(json!({"due": "2026-01-01T00:00:00+00:00", "title": "older"}));
        let fields = BTreeMap::from([
            (field("due"), json!("2026-02-01T00:00:00+00:00")),
            (field("title"), json!("B")),
            (field("votes"), json!(1)),
        ]);
        let bases = m.bases(&fields, &stored, Some(&old));
        assert_eq!(
            bases,
            BTreeMap::from([
                (field("due"), Some(hlc)),
                (field("title"), None),
                (field("votes"), None),
            ])
        );
        // An insert saw nothing.
        assert!(
            m.bases(&fields, &stored, None)
                .values()
                .all(Option::is_none)
        );
    }

    #[test]
    fn a_mirrored_collection_refuses_at_the_call_what_its_table_cannot_hold() {
        let schema = schema();
        let hlc = Hlc::new(1, 0, ClientId::new("d").unwrap()).unwrap();
        let change = crate::change::Change::Upsert {
            collection: Collection::new("cards").unwrap(),
            id: crate::names::RecordId::new("c1").unwrap(),
            fields: BTreeMap::from([(
                FieldName::new("title").unwrap(),
                FieldValue {
                    value: json!("a\u{0}"),
                    hlc,
                },
            )]),
            base: None,
        };
        let refused = schema
            .check_write(&RecordState::default(), &change)
            .unwrap_err();
        assert_eq!(refused.rule, crate::schema::Rule::Column);
        assert!(refused.message.contains("U+0000"), "{}", refused.message);
    }
}
