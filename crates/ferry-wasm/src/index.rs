//! Index keys for the browser's IndexedDB (docs/live-queries.md,
//! "Indexes"): the entries a record contributes to the one multi-entry
//! index of the records store, and the key ranges a query reads through
//! it. Both come from ferry-core's `query_index`, by the fields the app's
//! schema marks `index = true`.

use ferry_core::Collection;
use ferry_core::query_index::index_key;
use serde_json::{Map, Value, json};
use wasm_bindgen::prelude::*;

use crate::{Result, js, to_json, with_schema};

fn indexed(schema: &str, collection: &str) -> Result<Vec<String>> {
    let collection = Collection::new(collection).map_err(|e| e.to_string())?;
    with_schema(schema, |s| {
        s.map(|s| {
            s.indexed(&collection)
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    })
}

/// The fields of `collection` the schema (JSON, `""`: none) indexes, as
/// a JSON list.
pub fn indexed_fields_inner(schema: &str, collection: &str) -> Result<String> {
    to_json(&indexed(schema, collection)?)
}

/// See [`indexed_fields_inner`].
#[wasm_bindgen(js_name = indexedFields)]
pub fn indexed_fields(schema: &str, collection: &str) -> std::result::Result<String, JsError> {
    js(indexed_fields_inner(schema, collection))
}

/// A record's index entries for the `indexed` fields (a JSON list): one
/// `[field, kind, value?]` each, a missing field as null.
pub fn index_entries_inner(indexed: &str, fields: &str) -> Result<String> {
    let indexed: Vec<String> =
        serde_json::from_str(indexed).map_err(|e| format!("not a list of fields: {e}"))?;
    let fields: Map<String, Value> =
        serde_json::from_str(fields).map_err(|e| format!("fields are not an object: {e}"))?;
    let entries: Vec<Value> = indexed
        .iter()
        .map(|name| {
            let mut entry = vec![json!(name)];
            if let Value::Array(key) = index_key(fields.get(name)) {
                entry.extend(key);
            }
            Value::Array(entry)
        })
        .collect();
    to_json(&entries)
}

/// See [`index_entries_inner`].
#[wasm_bindgen(js_name = indexEntries)]
pub fn index_entries(indexed: &str, fields: &str) -> std::result::Result<String, JsError> {
    js(index_entries_inner(indexed, fields))
}

/// How a query (JSON) reads through the index of `indexed` (a JSON list of
/// fields whose entries every record of the collection has): `{"field":
/// f, "ranges": [[lower | null, lowerOpen, upper | null, upperOpen], ...]}`
/// with bounds as `[kind, value?]`, or `null` for a scan.
pub fn index_plan_inner(query: &str, indexed: &str) -> Result<String> {
    let value: Value = serde_json::from_str(query).map_err(|e| format!("a query is JSON: {e}"))?;
    let query = ferry_core::query::Query::from_json(&value).map_err(|e| e.to_string())?;
    let indexed: Vec<String> =
        serde_json::from_str(indexed).map_err(|e| format!("not a list of fields: {e}"))?;
    let names: Vec<&str> = indexed.iter().map(String::as_str).collect();
    let plan = query.index_plan(&names).map(|plan| {
        let bound = |b: &Option<(Value, bool)>| match b {
            Some((key, open)) => (key.clone(), *open),
            None => (Value::Null, false),
        };
        let ranges: Vec<Value> = plan
            .ranges
            .iter()
            .map(|r| {
                let (lower, lower_open) = bound(&r.lower);
                let (upper, upper_open) = bound(&r.upper);
                json!([lower, lower_open, upper, upper_open])
            })
            .collect();
        json!({"field": plan.field, "ranges": ranges})
    });
    to_json(&plan)
}

/// See [`index_plan_inner`].
#[wasm_bindgen(js_name = indexPlan)]
pub fn index_plan(query: &str, indexed: &str) -> std::result::Result<String, JsError> {
    js(index_plan_inner(query, indexed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_get_entries_and_queries_get_ranges_from_the_schema() {
        let schema = r#"{"collections": {"cards": {"fields": {
            "pos": {"type": "integer", "index": true}, "title": {"type": "string"}}}}}"#;
        assert_eq!(indexed_fields_inner(schema, "cards").unwrap(), r#"["pos"]"#);
        assert_eq!(indexed_fields_inner("", "cards").unwrap(), "[]");
        assert_eq!(
            index_entries_inner(r#"["pos","gone"]"#, r#"{"pos": 3}"#).unwrap(),
            r#"[["pos",2,3],["gone",0]]"#
        );
        assert_eq!(
            index_plan_inner(r#"{"where": [["pos", ">=", 2]]}"#, r#"["pos"]"#).unwrap(),
            r#"{"field":"pos","ranges":[[[2,2],false,null,false]]}"#
        );
        assert_eq!(
            index_plan_inner(r#"{"where": [["title", "=", "a"]]}"#, r#"["pos"]"#).unwrap(),
            "null"
        );
    }
}
