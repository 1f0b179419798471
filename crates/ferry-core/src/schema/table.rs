//! A collection mirrored into a table of the app's own (docs/tables.md):
//! how its keys in the schema map the collection onto the table's columns,
//! with the defaults filled in, each field's SQL type, and the checks that
//! the mapping makes sense. The server writes and reads the table; this is
//! the one description of it every part of Ferry reads.

use super::{CollectionSchema, FieldSchema, FieldType, ItemType, Schema, SchemaError};
use crate::names::{Collection, FieldName};

/// The table schema of a mirrored collection when it names none.
pub const DEFAULT_TABLE_SCHEMA: &str = "public";
/// The column holding each row's space when the collection names none.
pub const DEFAULT_SPACE_COLUMN: &str = "space_id";
/// The column holding each row's record id when the collection names none.
pub const DEFAULT_ID_COLUMN: &str = "id";
/// The tombstone column when the collection names none.
pub const DEFAULT_SOFT_DELETE_COLUMN: &str = "deleted_at";
/// The column of when Ferry last wrote a row, when the collection names none.
pub const DEFAULT_UPDATED_COLUMN: &str = "updated_at";

/// A mirrored collection's table, every name resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror<'a> {
    /// The table's PostgreSQL schema.
    pub table_schema: &'a str,
    /// The table.
    pub table: &'a str,
    /// The space of each row (`text`).
    pub space_column: &'a str,
    /// The record id of each row (`text`).
    pub id_column: &'a str,
    /// When the record was deleted (`timestamptz`), null while it lives.
    pub soft_delete_column: &'a str,
    /// When Ferry last wrote the row (`timestamptz`).
    pub updated_column: &'a str,
    /// Each declared field of a type this Ferry knows, with its column.
    pub columns: Vec<MirroredField<'a>>,
}

/// One declared field of a mirrored collection.
#[derive(Debug, Clone, PartialEq)]
pub struct MirroredField<'a> {
    /// The field.
    pub field: &'a FieldName,
    /// Its column.
    pub column: &'a str,
    /// The column's type.
    pub sql_type: &'static str,
    /// The field's declaration.
    pub declared: &'a FieldSchema,
}

impl CollectionSchema {
    /// The table this collection is mirrored into, if it names one.
    pub fn mirror(&self) -> Option<Mirror<'_>> {
        let table = self.table.as_deref()?;
        let columns = self
            .fields
            .iter()
            .filter_map(|(field, declared)| {
                Some(MirroredField {
                    field,
                    column: declared.column.as_deref().unwrap_or(field.as_str()),
                    sql_type: sql_type(declared)?,
                    declared,
                })
            })
            .collect();
        Some(Mirror {
            table_schema: self.table_schema.as_deref().unwrap_or(DEFAULT_TABLE_SCHEMA),
            table,
            space_column: self.space_column.as_deref().unwrap_or(DEFAULT_SPACE_COLUMN),
            id_column: self.id_column.as_deref().unwrap_or(DEFAULT_ID_COLUMN),
            soft_delete_column: self
                .soft_delete_column
                .as_deref()
                .unwrap_or(DEFAULT_SOFT_DELETE_COLUMN),
            updated_column: self
                .updated_column
                .as_deref()
                .unwrap_or(DEFAULT_UPDATED_COLUMN),
            columns,
        })
    }
}

impl Schema {
    /// The table the collection named `collection` is mirrored into, if
    /// the schema declares it and it names one.
    pub fn mirror_of(&self, collection: &str) -> Option<Mirror<'_>> {
        let name = Collection::new(collection).ok()?;
        self.collection(&name)?.mirror()
    }
}

/// The PostgreSQL type of a field's column; `None` for a type this Ferry
/// does not know (not mirrored).
pub fn sql_type(field: &FieldSchema) -> Option<&'static str> {
    Some(match field.kind {
        FieldType::String | FieldType::Enum | FieldType::Ref => "text",
        FieldType::Integer => "bigint",
        FieldType::Number => "double precision",
        FieldType::Boolean => "boolean",
        FieldType::Timestamp => "timestamptz",
        FieldType::Json | FieldType::File => "jsonb",
        FieldType::Array => match field.items? {
            ItemType::String => "text[]",
            ItemType::Integer => "bigint[]",
            ItemType::Number => "double precision[]",
            ItemType::Boolean => "boolean[]",
            ItemType::Timestamp => "timestamptz[]",
            ItemType::Unknown => return None,
        },
        FieldType::Unknown => return None,
    })
}

/// Whether `name` is an identifier Ferry can use for a table, schema or
/// column: lower-case ASCII letters, digits and `_`, starting with a
/// letter or `_`, at most 63 bytes (PostgreSQL's limit), so it reads the
/// same quoted or not in the app's own SQL.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first && rest && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a name Ferry can give a table or column: lower-case letters, \
             digits and _, starting with a letter or _, at most 63 bytes"
        ))
    }
}

/// Checks every collection's table keys: names Ferry can use, no key of a
/// table without `table`, every column named once, and no two collections
/// mirrored into one table.
pub(super) fn validate(schema: &Schema) -> Result<(), SchemaError> {
    let mut tables: Vec<(&str, &str, &Collection)> = Vec::new();
    for (name, collection) in &schema.collections {
        let at = |why: String| SchemaError(format!("{name}: {why}"));
        let Some(mirror) = collection.mirror() else {
            let stray = [
                ("table_schema", collection.table_schema.is_some()),
                ("space_column", collection.space_column.is_some()),
                ("id_column", collection.id_column.is_some()),
                (
                    "soft_delete_column",
                    collection.soft_delete_column.is_some(),
                ),
                ("updated_column", collection.updated_column.is_some()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(at(format!(
                    "{key} applies to a collection mirrored into a table: set table too"
                )));
            }
            if let Some((field, _)) = collection.fields.iter().find(|(_, f)| f.column.is_some()) {
                return Err(SchemaError(format!(
                    "{name}.{field}: column applies to a collection mirrored into a table: \
                     set the collection's table too"
                )));
            }
            continue;
        };
        let mut columns = vec![
            mirror.space_column,
            mirror.id_column,
            mirror.soft_delete_column,
            mirror.updated_column,
        ];
        columns.extend(mirror.columns.iter().map(|c| c.column));
        for identifier in [mirror.table_schema, mirror.table]
            .into_iter()
            .chain(columns.iter().copied())
        {
            check_identifier(identifier).map_err(at)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = columns.iter().find(|c| !seen.insert(**c)) {
            return Err(at(format!(
                "the column {twice} of table {}.{} is named twice",
                mirror.table_schema, mirror.table
            )));
        }
        if let Some((_, _, other)) = tables
            .iter()
            .find(|(s, t, _)| *s == mirror.table_schema && *t == mirror.table)
        {
            return Err(at(format!(
                "the table {}.{} already mirrors {other}",
                mirror.table_schema, mirror.table
            )));
        }
        tables.push((mirror.table_schema, mirror.table, name));
    }
    Ok(())
}

/// How the mirroring of a collection changed from `before` to `after`, if
/// it did: whether the change needs forcing, and what it is. Adding a
/// mirror is compatible (existing records are taken in by adoption);
/// removing one, or moving its table or columns, is breaking: the app's
/// backend would go on writing where Ferry no longer looks. Fields added
/// or removed are judged as fields (a column added or left alone).
pub(super) fn mirror_change(
    before: &CollectionSchema,
    after: &CollectionSchema,
) -> Option<(bool, String)> {
    let named = |m: &Mirror<'_>| format!("{}.{}", m.table_schema, m.table);
    match (before.mirror(), after.mirror()) {
        (None, None) => None,
        (None, Some(m)) => Some((false, format!("mirrored into table {}", named(&m)))),
        (Some(m), None) => Some((
            true,
            format!(
                "no longer mirrored into table {}: the app's writes there stop reaching devices",
                named(&m)
            ),
        )),
        (Some(a), Some(b)) => {
            fn table<'a>(m: &Mirror<'a>) -> [&'a str; 6] {
                [
                    m.table_schema,
                    m.table,
                    m.space_column,
                    m.id_column,
                    m.soft_delete_column,
                    m.updated_column,
                ]
            }
            let moved_column = a.columns.iter().any(|old| {
                b.columns
                    .iter()
                    .any(|new| new.field == old.field && new.column != old.column)
            });
            (table(&a) != table(&b) || moved_column).then(|| {
                (
                    true,
                    format!("table mapping changed ({} to {})", named(&a), named(&b)),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::schema::{Impact, diff};

    const CARDS: &str = r#"{"collections": {
        "workspaces": {"fields": {"name": {"type": "string"}}},
        "cards": {"table": "cards", "space_column": "workspace_id",
                  "soft_delete_column": "removed_at", "fields": {
            "title": {"type": "string", "required": true},
            "url": {"type": "string", "column": "link"},
            "pos": {"type": "number"},
            "votes": {"type": "integer"},
            "done": {"type": "boolean"},
            "due": {"type": "timestamp"},
            "kind": {"type": "enum", "values": ["a"]},
            "meta": {"type": "json"},
            "tags": {"type": "array", "items": "string"},
            "stamps": {"type": "array", "items": "timestamp"},
            "workspace": {"type": "ref", "collection": "workspaces"}}}}}"#;

    fn with(json: &str) -> Result<Schema, SchemaError> {
        Schema::parse(json)
    }

    #[test]
    fn a_mirror_resolves_its_names_and_column_types() {
        let schema = with(CARDS).unwrap();
        let cards = schema
            .collection(&Collection::new("cards").unwrap())
            .unwrap();
        let mirror = cards.mirror().unwrap();
        assert_eq!(
            (
                mirror.table_schema,
                mirror.table,
                mirror.space_column,
                mirror.id_column,
                mirror.soft_delete_column,
                mirror.updated_column
            ),
            (
                "public",
                "cards",
                "workspace_id",
                "id",
                "removed_at",
                "updated_at"
            )
        );
        let columns: Vec<(&str, &str, &str)> = mirror
            .columns
            .iter()
            .map(|c| (c.field.as_str(), c.column, c.sql_type))
            .collect();
        assert_eq!(
            columns,
            [
                ("done", "done", "boolean"),
                ("due", "due", "timestamptz"),
                ("kind", "kind", "text"),
                ("meta", "meta", "jsonb"),
                ("pos", "pos", "double precision"),
                ("stamps", "stamps", "timestamptz[]"),
                ("tags", "tags", "text[]"),
                ("title", "title", "text"),
                ("url", "link", "text"),
                ("votes", "votes", "bigint"),
                ("workspace", "workspace", "text"),
            ]
        );
        // Not mirrored: no table.
        let workspaces = schema.collection(&Collection::new("workspaces").unwrap());
        assert_eq!(workspaces.unwrap().mirror(), None);
        // What the server stores and sends keeps the keys.
        let again = Schema::parse(&serde_json::to_string(&schema).unwrap()).unwrap();
        assert_eq!(again, schema);
    }

    #[test]
    fn mappings_that_make_no_sense_are_refused_with_where() {
        let refused = |json: &str, says: &str| {
            let e = with(json).unwrap_err().to_string();
            assert!(e.contains(says), "{e} (wanted {says})");
        };
        refused(
            r#"{"collections": {"cards": {"table": "Cards"}}}"#,
            "cards: \"Cards\" is not a name",
        );
        refused(
            r#"{"collections": {"cards": {"table": "cards", "table_schema": "a-b"}}}"#,
            "\"a-b\" is not a name",
        );
        refused(
            r#"{"collections": {"cards": {"space_column": "ws"}}}"#,
            "cards: space_column applies to a collection mirrored into a table",
        );
        refused(
            r#"{"collections": {"cards": {"fields": {"t": {"type": "string", "column": "x"}}}}}"#,
            "cards.t: column applies",
        );
        refused(
            r#"{"collections": {"cards": {"table": "cards", "fields": {
                "t": {"type": "string", "column": "id"}}}}}"#,
            "the column id of table public.cards is named twice",
        );
        refused(
            r#"{"collections": {"a": {"table": "t"}, "b": {"table": "t"}}}"#,
            "b: the table public.t already mirrors a",
        );
        // The same table name in two PostgreSQL schemas is two tables.
        with(
            r#"{"collections": {"a": {"table": "t"}, "b": {"table": "t", "table_schema": "app"}}}"#,
        )
        .unwrap();
    }

    #[test]
    fn moving_or_dropping_a_mirror_is_breaking_and_adding_one_is_not() {
        let plain =
            with(r#"{"collections": {"cards": {"fields": {"t": {"type": "string"}}}}}"#).unwrap();
        let mirrored = with(
            r#"{"collections": {"cards": {"table": "cards", "fields": {"t": {"type": "string"}}}}}"#,
        )
        .unwrap();
        let impacts = |a: &Schema, b: &Schema| -> Vec<(Impact, String)> {
            diff(a, b).into_iter().map(|d| (d.impact, d.what)).collect()
        };
        assert_eq!(
            impacts(&plain, &mirrored),
            [(
                Impact::Compatible,
                "mirrored into table public.cards".to_owned()
            )]
        );
        assert_eq!(impacts(&mirrored, &plain)[0].0, Impact::Breaking);
        let moved = with(
            r#"{"collections": {"cards": {"table": "notes", "fields": {"t": {"type": "string"}}}}}"#,
        )
        .unwrap();
        assert_eq!(impacts(&mirrored, &moved)[0].0, Impact::Breaking);
        let renamed = with(
            r#"{"collections": {"cards": {"table": "cards", "fields": {
                "t": {"type": "string", "column": "title"}}}}}"#,
        )
        .unwrap();
        assert_eq!(impacts(&mirrored, &renamed)[0].0, Impact::Breaking);
        // A new optional field is a new column: compatible, as anywhere.
        let grown = with(
            r#"{"collections": {"cards": {"table": "cards", "fields": {
                "t": {"type": "string"}, "u": {"type": "integer"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            impacts(&mirrored, &grown),
            [(Impact::Compatible, "optional field added".to_owned())]
        );
    }
}
