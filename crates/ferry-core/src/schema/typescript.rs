//! TypeScript types of an app's schema (`ferry schema typescript`): one
//! type per collection and a `Schema` type naming them by collection,
//! which the browser client takes (`Ferry.open<Schema>()`) so that `tsc`
//! checks every `put`, `patch`, `get`, `list` and filter against the schema.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{FieldSchema, FieldType, ItemType, Mode, Schema};

/// The TypeScript module for `schema`.
pub fn typescript(schema: &Schema) -> String {
    let mut out = String::from(
        "// The app's schema as TypeScript types, written by `ferry schema typescript`\n\
         // from the schema file: edit that file and write this one again.\n",
    );
    let mut taken = BTreeSet::new();
    let mut names = Vec::new();
    for (collection, declared) in &schema.collections {
        let name = unique(type_name(collection.as_str()), &mut taken);
        let _ = writeln!(out, "\n/** A record of `{collection}`. */");
        // A type, not an interface: only types are assignable to
        // `Record<string, unknown>`, which the client's methods take.
        let _ = writeln!(out, "export type {name} = {{");
        for (field, f) in &declared.fields {
            let optional = if f.required { "" } else { "?" };
            let _ = writeln!(out, "  {field}{optional}: {};", field_type(f));
        }
        if declared.mode == Mode::Open {
            let _ = writeln!(
                out,
                "  /** Fields the collection does not declare (it is open). */"
            );
            let _ = writeln!(out, "  [field: string]: unknown;");
        }
        let _ = writeln!(out, "}};");
        names.push((collection.as_str().to_owned(), name));
    }
    let _ = writeln!(
        out,
        "\n/** Every declared collection's record type, by name. */"
    );
    let _ = writeln!(out, "export type Schema = {{");
    for (collection, name) in &names {
        let _ = writeln!(out, "  {}: {name};", key(collection));
    }
    let _ = writeln!(out, "}};");
    out
}

fn field_type(f: &FieldSchema) -> String {
    let base = match f.kind {
        FieldType::String | FieldType::Timestamp | FieldType::Ref => "string".to_owned(),
        FieldType::Integer | FieldType::Number => "number".to_owned(),
        FieldType::Boolean => "boolean".to_owned(),
        FieldType::File => {
            "{ sha256: string; size: number; media_type: string; name?: string }".to_owned()
        }
        FieldType::Json | FieldType::Unknown => return "unknown".to_owned(),
        FieldType::Enum => {
            let values: Vec<String> = f
                .values
                .iter()
                .flatten()
                .map(|v| serde_json::Value::String(v.clone()).to_string())
                .collect();
            values.join(" | ")
        }
        FieldType::Array => {
            let item = match f.items.unwrap_or(ItemType::String) {
                ItemType::String | ItemType::Timestamp => "string",
                ItemType::Integer | ItemType::Number => "number",
                ItemType::Boolean => "boolean",
                ItemType::Unknown => "unknown",
            };
            format!("{item}[]")
        }
    };
    // An optional field may be null (not set); a required one only when
    // nullable.
    if !f.required || f.nullable {
        format!("{base} | null")
    } else {
        base
    }
}

/// `todo_items` and `todo-items` as `TodoItems`; a leading digit gets `C`.
fn type_name(collection: &str) -> String {
    let mut name: String = collection
        .split(['_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, 'C');
    }
    if name == "Schema" {
        name.push_str("Record");
    }
    name
}

fn unique(name: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}{n}");
        n += 1;
    }
    candidate
}

/// A collection name as a property key: quoted unless an identifier.
fn key(collection: &str) -> String {
    let identifier = collection
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier {
        collection.to_owned()
    } else {
        serde_json::Value::String(collection.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_type_becomes_its_typescript() {
        let schema = Schema::parse(
            r#"{"collections": {
                "todo-items": {"mode": "strict", "fields": {
                    "title": {"type": "string", "required": true},
                    "note": {"type": "string"},
                    "due": {"type": "timestamp", "required": true, "nullable": true},
                    "n": {"type": "integer"},
                    "tags": {"type": "array", "items": "boolean"},
                    "level": {"type": "enum", "values": ["low", "say \"hi\""]},
                    "extra": {"type": "json"}}},
                "todo_items": {},
                "9lives": {"fields": {"x": {"type": "ref", "collection": "todo_items"}}}
            }}"#,
        )
        .unwrap();
        let ts = typescript(&schema);
        for line in [
            "export type TodoItems = {",
            "  title: string;",
            "  note?: string | null;",
            "  due: string | null;",
            "  n?: number | null;",
            "  tags?: boolean[] | null;",
            r#"  level?: "low" | "say \"hi\"" | null;"#,
            "  extra?: unknown;",
            "export type TodoItems2 = {",
            "export type C9lives = {",
            "  x?: string | null;",
            "  [field: string]: unknown;",
            r#"  "todo-items": TodoItems;"#,
            "  todo_items: TodoItems2;",
            r#"  "9lives": C9lives;"#,
        ] {
            assert!(ts.lines().any(|l| l == line), "missing {line:?} in\n{ts}");
        }
        // A strict collection has no index signature.
        let strict = ts.split("export type TodoItems = {").nth(1).unwrap();
        let strict = strict.split('}').next().unwrap();
        assert!(!strict.contains("[field: string]"), "{strict}");
    }
}
