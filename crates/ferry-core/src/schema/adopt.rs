//! A row of a mirrored table taken in as its record (`ferry adopt`,
//! docs/tables.md): the row as the table holds it now, compared with the
//! row Ferry would write for the record it holds, column by column.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::row::{RowChange, RowWrite, same_value};
use super::table::Mirror;
use crate::change::RecordState;
use crate::names::FieldName;

impl Mirror<'_> {
    /// What taking in `row` (as `to_jsonb` gives it) writes to its record,
    /// `stored` when Ferry holds one: every column it holds a value for
    /// when Ferry has no record; otherwise the fields whose column holds a
    /// value other than the row Ferry would write (a null column takes
    /// nothing away: a column added for a field the records held is null
    /// in every row, as is a value the column cannot type), or
    /// a delete when the row is soft-deleted and the record lives. `None`
    /// when the two agree, and for a deleted record (deletes are final).
    pub fn adopt(
        &self,
        row: &Map<String, Value>,
        stored: Option<&RecordState>,
    ) -> Result<Option<RowChange>, String> {
        let Some(taken) = self.write_of("INSERT", Some(row), None)? else {
            return Ok(None);
        };
        let Some(stored) = stored else {
            return Ok(Some(taken));
        };
        if stored.deleted.is_some() {
            return Ok(None);
        }
        if taken.write == RowWrite::Delete {
            return Ok(Some(taken));
        }
        let held = self.row(&taken.space, &taken.id, stored);
        let fields: BTreeMap<FieldName, Value> = self
            .columns
            .iter()
            .filter_map(|c| {
                // A null column takes nothing away: a column added for a
                // field the records already held is null in every row.
                let now = row.get(c.column).filter(|v| !v.is_null())?;
                let was = held.get(c.column).unwrap_or(&Value::Null);
                let same = now == was || same_value(c.declared, now, was);
                (!same).then(|| (c.field.clone(), now.clone()))
            })
            .collect();
        Ok((!fields.is_empty()).then_some(RowChange {
            write: RowWrite::Fields(fields),
            ..taken
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::change::FieldValue;
    use crate::schema::Schema;
    use crate::{ClientId, Collection, Hlc};

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_row_is_taken_in_as_what_differs_from_its_record() {
        let schema = Schema::parse(
            r#"{"collections": {"cards": {"table": "cards", "space_column": "workspace_id",
                "fields": {"title": {"type": "string"}, "due": {"type": "timestamp"},
                           "votes": {"type": "integer"}}}}}"#,
        )
        .unwrap();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let mirror = cards.mirror().unwrap();
        let hlc = Hlc::new(1_700_000_000_000, 0, ClientId::new("n").unwrap()).unwrap();
        let mut stored = RecordState::default();
        for (name, value) in [
            ("title", json!("Old")),
            ("due", json!("2026-12-24T18:00:00Z")),
            ("votes", json!("many")),
        ] {
            let held = FieldValue {
                value,
                hlc: hlc.clone(),
            };
            stored.fields.insert(FieldName::new(name).unwrap(), held);
        }
        let row = obj(json!({"workspace_id": "w", "id": "c1", "title": "New",
                             "due": "2026-12-24T18:00:00+00:00", "votes": null,
                             "deleted_at": null}));
        // Unknown to Ferry: every column with a value.
        let created = mirror.adopt(&row, None).unwrap().unwrap();
        let RowWrite::Fields(fields) = &created.write else {
            panic!("{created:?}")
        };
        assert_eq!((created.space.as_str(), created.id.as_str()), ("w", "c1"));
        assert_eq!(fields.len(), 2, "{fields:?}");
        // Known: only the title differs (the same instant written another
        // way is the same; a null column takes nothing away).
        let merged = mirror.adopt(&row, Some(&stored)).unwrap().unwrap();
        let title = FieldName::new("title").unwrap();
        assert_eq!(
            merged.write,
            RowWrite::Fields(BTreeMap::from([(title, json!("New"))]))
        );
        // The same row again: nothing.
        let mut same = row.clone();
        same.insert("title".into(), json!("Old"));
        assert_eq!(mirror.adopt(&same, Some(&stored)).unwrap(), None);
        // A soft-deleted row deletes; a deleted record stays as it is.
        let mut gone = row.clone();
        gone.insert("deleted_at".into(), json!("2026-12-01T00:00:00+00:00"));
        assert_eq!(
            mirror.adopt(&gone, Some(&stored)).unwrap().unwrap().write,
            RowWrite::Delete
        );
        stored.deleted = Some(hlc);
        assert_eq!(mirror.adopt(&row, Some(&stored)).unwrap(), None);
        // A row without its id is refused with why.
        let mut keyless = row;
        keyless.remove("id");
        assert!(mirror.adopt(&keyless, None).unwrap_err().contains("id"));
    }
}
