//! Typed collections: the schema an app declares once (docs/schema.md),
//! and the one validator the server and both clients call.
//!
//! - this file: the schema's types, as the file declares them and as the
//!   server stores and sends them (JSON; the CLI reads TOML into the same
//!   types), and [`Schema::parse`], which refuses a schema that does not
//!   make sense (an option of another type, a reference to an undeclared
//!   collection, `min` above `max`...).
//! - [`check`]: a change against the record it applies to.
//! - [`diff`]: what changed between two schemas, compatible or breaking.
//! - [`typescript`]: the schema as TypeScript types for the app.
//! - [`table`]: a collection mirrored into a table of the app's own.
//! - [`row`]: a record as the row of that table, and a row as a write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{Collection, FieldName};

pub mod adopt;
mod check;
mod diff;
mod permissions;
pub mod row;
pub mod table;
mod typescript;
mod value;

pub use check::{Pending, Rule, Violation};
pub use diff::{Difference, Impact, diff};
pub use permissions::{Action, Actor, Forbidden, Grantee, PermissionRule, Permissions};
pub use typescript::typescript;

/// An app's data model: its collections and what writes to them must be.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Collections nobody declared: allowed (the default) or refused.
    #[serde(default, skip_serializing_if = "is_default")]
    pub undeclared: Undeclared,
    /// The declared collections.
    #[serde(default)]
    pub collections: BTreeMap<Collection, CollectionSchema>,
}

/// What happens to writes to collections the schema does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undeclared {
    /// They are taken as they come, as without a schema.
    #[default]
    Allow,
    /// They are refused.
    Refuse,
}

/// One collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionSchema {
    /// Whether fields the collection does not declare may be written.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: Mode,
    /// The declared fields.
    #[serde(default)]
    pub fields: BTreeMap<FieldName, FieldSchema>,
    /// The table of the app's own the collection is mirrored into
    /// (docs/tables.md; [`CollectionSchema::mirror`] resolves the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The table's PostgreSQL schema (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<String>,
    /// The column of each row's space (default `space_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_column: Option<String>,
    /// The column of each row's record id (default `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    /// The tombstone column, null while the record lives (default
    /// `deleted_at`; the app's own soft-delete column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_column: Option<String>,
    /// The column of when Ferry last wrote the row (default `updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_column: Option<String>,
    /// Who may create, update and delete its records (docs/schema.md);
    /// without it, every role that writes may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

/// Whether a collection takes fields it does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Undeclared fields are written as they come.
    #[default]
    Open,
    /// Undeclared fields are refused.
    Strict,
}

/// The types a field's value may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A number without a fraction, within ±2^53.
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 date and time with an offset.
    Timestamp,
    /// One of the field's `values`.
    Enum,
    /// Any JSON value.
    Json,
    /// An array of `items`.
    Array,
    /// The id of a record of the field's `collection`, in the same space.
    Ref,
    /// A reference to a file of the same space (docs/files.md): a
    /// [`crate::FileRef`].
    File,
    /// A type added by a later version of Ferry: its values are not
    /// checked here. [`Schema::parse`] refuses it; a schema served by a
    /// newer server is read with it ([`Schema::parse_served`]).
    #[serde(other)]
    Unknown,
}

/// The types an array's items may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemType {
    /// Strings.
    String,
    /// Integers.
    Integer,
    /// Numbers.
    Number,
    /// Booleans.
    Boolean,
    /// Timestamps.
    Timestamp,
    /// A type added by a later version of Ferry (not checked).
    #[serde(other)]
    Unknown,
}

/// One field: its type, the options of that type, and whether a record
/// must hold it. The options of other types are refused by
/// [`Schema::parse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// A record must hold a value here (after the merge).
    #[serde(default, skip_serializing_if = "is_default")]
    pub required: bool,
    /// A required field may hold null. (An optional field may always be
    /// null or absent: both read as not set.)
    #[serde(default, skip_serializing_if = "is_default")]
    pub nullable: bool,
    /// `string`, `array` of strings: the most characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// `string`: the fewest characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// `integer`, `number`: the smallest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `integer`, `number`: the largest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `enum`: the values it may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// `array`: the type of its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemType>,
    /// `array`: the most items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    /// `ref`: the collection of the record it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<Collection>,
    /// In a mirrored collection, the field's column (default: the field's
    /// name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Clients keep an index over the field, and queries filtering on it
    /// read through it (docs/live-queries.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub index: bool,
    /// Only the server writes it: clients' writes to it are refused
    /// (docs/server-rules.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub server_only: bool,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A schema that does not make sense, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

impl Schema {
    /// Reads a schema an app wrote (the file `ferry schema` applies):
    /// checks that it makes sense, and refuses keys and types this version
    /// of Ferry does not know, so that a typo never passes silently.
    pub fn parse(json: &str) -> Result<Schema, SchemaError> {
        let mut unknown = Vec::new();
        let mut de = serde_json::Deserializer::from_str(json);
        let schema: Schema = serde_ignored::deserialize(&mut de, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| SchemaError(format!("not a schema: {e}")))?;
        if let Some(key) = unknown.first() {
            return Err(SchemaError(format!("not a schema: unknown key {key}")));
        }
        for (collection, declared) in &schema.collections {
            if let Some(p) = &declared.permissions {
                permissions::validate(p, true)
                    .map_err(|why| SchemaError(format!("{collection}: {why}")))?;
            }
            for (name, field) in &declared.fields {
                if field.kind == FieldType::Unknown || field.items == Some(ItemType::Unknown) {
                    return Err(SchemaError(format!(
                        "{collection}.{name}: not a schema: a type this version of Ferry \
                         does not know"
                    )));
                }
            }
        }
        schema.validate()?;
        // Table mappings matter to the server that keeps the tables, which
        // stores only schemas read here (clients never need to judge them).
        table::validate(&schema)?;
        Ok(schema)
    }

    /// Reads a schema as a server stores and serves it: keys and types a
    /// later version of Ferry added are ignored (their rules are not
    /// checked by this version), so an older node or client keeps working
    /// with a schema applied by a newer `ferry schema`.
    pub fn parse_served(json: &str) -> Result<Schema, SchemaError> {
        let schema: Schema =
            serde_json::from_str(json).map_err(|e| SchemaError(format!("not a schema: {e}")))?;
        schema.validate()?;
        Ok(schema)
    }

    /// Checks that every field's options belong to its type and hold
    /// together, and that every reference names a declared collection.
    pub fn validate(&self) -> Result<(), SchemaError> {
        for (collection, declared) in &self.collections {
            if let Some(p) = &declared.permissions {
                permissions::validate(p, false)
                    .map_err(|why| SchemaError(format!("{collection}: {why}")))?;
            }
            for (name, field) in &declared.fields {
                field
                    .validate(self)
                    .map_err(|why| SchemaError(format!("{collection}.{name}: {why}")))?;
            }
        }
        Ok(())
    }

    /// Checks the keys of every collection mirrored into a table (names
    /// Ferry can put in SQL, each column once, one collection per table),
    /// as [`Schema::parse`] does: a store calls it before it makes any
    /// table, whatever read the schema.
    pub fn check_tables(&self) -> Result<(), SchemaError> {
        table::validate(self)
    }

    /// The declaration of `collection`, if any.
    pub fn collection(&self, collection: &Collection) -> Option<&CollectionSchema> {
        self.collections.get(collection)
    }

    /// The fields of `collection` marked `index = true`, by name.
    pub fn indexed(&self, collection: &Collection) -> Vec<&str> {
        self.collection(collection)
            .map(|c| {
                c.fields
                    .iter()
                    .filter(|(_, f)| f.index)
                    .map(|(name, _)| name.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl FieldSchema {
    /// A field of `kind` with no options.
    pub fn of(kind: FieldType) -> FieldSchema {
        FieldSchema {
            kind,
            required: false,
            nullable: false,
            max_length: None,
            min_length: None,
            min: None,
            max: None,
            values: None,
            items: None,
            max_items: None,
            collection: None,
            column: None,
            index: false,
            server_only: false,
        }
    }

    fn validate(&self, schema: &Schema) -> Result<(), String> {
        use FieldType as T;
        if self.kind == T::Unknown {
            return Ok(());
        }
        let allowed: &[&str] = match self.kind {
            T::String => &["max_length", "min_length"],
            T::Integer | T::Number => &["min", "max"],
            T::Enum => &["values"],
            T::Array => &["items", "max_items", "max_length"],
            T::Ref => &["collection"],
            T::Boolean | T::Timestamp | T::Json | T::File | T::Unknown => &[],
        };
        let given = [
            ("max_length", self.max_length.is_some()),
            ("min_length", self.min_length.is_some()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("values", self.values.is_some()),
            ("items", self.items.is_some()),
            ("max_items", self.max_items.is_some()),
            ("collection", self.collection.is_some()),
        ];
        for (option, set) in given {
            if set && !allowed.contains(&option) {
                return Err(format!(
                    "{option} does not apply to a field of type {}",
                    self.kind.name()
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.min_length, self.max_length)
            && min > max
        {
            return Err(format!("min_length {min} is above max_length {max}"));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("min {min} is above max {max}"));
        }
        if self.server_only && self.required {
            return Err(
                "a server-only field cannot be required: clients could never create a record"
                    .into(),
            );
        }
        if self.nullable && !self.required {
            return Err(
                "nullable applies to required fields (an optional field may always be null)".into(),
            );
        }
        match self.kind {
            T::Enum => match &self.values {
                Some(values) if !values.is_empty() => {
                    let mut seen = std::collections::BTreeSet::new();
                    if let Some(twice) = values.iter().find(|v| !seen.insert(*v)) {
                        return Err(format!("the value {twice:?} is listed twice"));
                    }
                }
                _ => return Err("an enum needs values, a list of strings".into()),
            },
            T::Array if self.items.is_none() => {
                return Err(
                    "an array needs items: string, integer, number, boolean or timestamp".into(),
                );
            }
            T::Array if self.max_length.is_some() && self.items != Some(ItemType::String) => {
                return Err("max_length applies to arrays of strings".into());
            }
            T::Ref => match &self.collection {
                Some(target) if schema.collections.contains_key(target) => {}
                Some(target) => {
                    return Err(format!(
                        "it refers to {target}, which the schema does not declare"
                    ));
                }
                None => return Err("a ref needs the collection it refers to".into()),
            },
            _ => {}
        }
        Ok(())
    }
}

impl FieldType {
    /// The type's name in the schema file.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Enum => "enum",
            FieldType::Json => "json",
            FieldType::Array => "array",
            FieldType::Ref => "ref",
            FieldType::File => "file",
            FieldType::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod permissions_tests;
#[cfg(test)]
mod tests;
