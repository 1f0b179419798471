//! Live queries for the browser (docs/live-queries.md): ferry-core's
//! [`LiveQuery`] engines, one per watched query, held in wasm and fed each
//! changed record once for all the queries over its collection. Records
//! cross as JSON (`[[id, fields], ...]`, fields as plain values); what a
//! query's window did crosses back as `{"reset": [ids]}` or `{"splices":
//! [["-", i] | ["+", i, id] | ["=", i, id], ...]}`.

use std::collections::HashMap;

use ferry_core::live::{LiveQuery, Splice, WindowChange, run};
use ferry_core::query::Query;
use serde_json::{Map, Value, json};
use wasm_bindgen::prelude::*;

use crate::{Result, js, to_json};

type Records = Vec<(String, Map<String, Value>)>;

fn parse_query(json: &str) -> Result<Query> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("a query is JSON: {e}"))?;
    Query::from_json(&value).map_err(|e| e.to_string())
}

fn parse_records(json: &str) -> Result<Records> {
    serde_json::from_str(json).map_err(|e| format!("not a list of [id, fields]: {e}"))
}

fn parse_fields(json: &str) -> Result<Option<Map<String, Value>>> {
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json).map_err(|e| format!("fields are not a JSON object: {e}"))
}

/// `query` run once over `records`: the ids of its result, in order, as
/// JSON. What `list()` returns.
pub fn run_query_inner(query: &str, records: &str) -> Result<String> {
    let query = parse_query(query)?;
    let records = parse_records(records)?;
    let ids = run(&query, records.iter().map(|(id, f)| (id.as_str(), f)));
    to_json(&ids.iter().map(|id| &**id).collect::<Vec<&str>>())
}

/// See [`run_query_inner`].
#[wasm_bindgen(js_name = runQuery)]
pub fn run_query(query: &str, records: &str) -> std::result::Result<String, JsError> {
    js(run_query_inner(query, records))
}

/// The engines of every live query this tab watches, by handle.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct LiveQueries {
    engines: HashMap<u32, LiveQuery>,
    next: u32,
}

impl LiveQueries {
    /// A new engine for `query` (its JSON form); its handle.
    pub fn open_inner(&mut self, query: &str) -> Result<u32> {
        let query = parse_query(query)?;
        self.next = self.next.wrapping_add(1);
        self.engines.insert(self.next, LiveQuery::new(query));
        Ok(self.next)
    }

    /// Loads a query's engine with `records`; returns the positions (in
    /// `records`) of those that match, as JSON.
    pub fn load_inner(&mut self, handle: u32, records: &str) -> Result<String> {
        let engine = self.engines.get_mut(&handle).ok_or("no such live query")?;
        let records = parse_records(records)?;
        let query = engine.query().clone();
        let matching: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, (_, f))| query.matches(|n| f.get(n)))
            .map(|(i, _)| i)
            .collect();
        engine.load(records.iter().map(|(id, f)| (id.as_str(), f)));
        to_json(&matching)
    }

    /// One record's new fields (JSON; empty: deleted or gone) into the
    /// engines `handles`; whether it matches any of them.
    pub fn apply_inner(&mut self, handles: &[u32], id: &str, fields: &str) -> Result<bool> {
        let fields = parse_fields(fields)?;
        let mut any = false;
        for handle in handles {
            if let Some(engine) = self.engines.get_mut(handle) {
                any |= engine.apply(id, fields.as_ref());
            }
        }
        Ok(any)
    }

    /// What the window of `handle` did since last asked, as JSON (`null`:
    /// nothing).
    pub fn take_inner(&mut self, handle: u32) -> Result<String> {
        let engine = self.engines.get_mut(&handle).ok_or("no such live query")?;
        let out = match engine.take() {
            None => Value::Null,
            Some(WindowChange::Reset(ids)) => {
                json!({ "reset": ids.iter().map(|id| &**id).collect::<Vec<&str>>() })
            }
            Some(WindowChange::Splices(splices)) => {
                let splices: Vec<Value> = splices
                    .iter()
                    .map(|s| match s {
                        Splice::Remove(i) => json!(["-", i]),
                        Splice::Insert(i, id) => json!(["+", i, &**id]),
                        Splice::Replace(i, id) => json!(["=", i, &**id]),
                    })
                    .collect();
                json!({ "splices": splices })
            }
        };
        to_json(&out)
    }
}

#[wasm_bindgen]
impl LiveQueries {
    #[wasm_bindgen(constructor)]
    pub fn new() -> LiveQueries {
        LiveQueries::default()
    }

    /// See [`LiveQueries::open_inner`]; throws the core's reason for a
    /// query that is not one.
    pub fn open(&mut self, query: &str) -> std::result::Result<u32, JsError> {
        js(self.open_inner(query))
    }

    /// Drops the engine `handle`.
    pub fn close(&mut self, handle: u32) {
        self.engines.remove(&handle);
    }

    /// See [`LiveQueries::load_inner`].
    pub fn load(&mut self, handle: u32, records: &str) -> std::result::Result<String, JsError> {
        js(self.load_inner(handle, records))
    }

    /// See [`LiveQueries::apply_inner`].
    pub fn apply(
        &mut self,
        handles: &[u32],
        id: &str,
        fields: &str,
    ) -> std::result::Result<bool, JsError> {
        js(self.apply_inner(handles, id, fields))
    }

    /// See [`LiveQueries::take_inner`].
    pub fn take(&mut self, handle: u32) -> std::result::Result<String, JsError> {
        js(self.take_inner(handle))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_browser_runs_and_follows_queries_with_the_core() {
        let records = r#"[["a", {"n": 2}], ["b", {"n": 1}], ["c", {"m": 1}]]"#;
        let q = r#"{"where": [["n", "!=", 3]], "orderBy": ["n", "desc"]}"#;
        assert_eq!(run_query_inner(q, records).unwrap(), r#"["a","b","c"]"#);
        let mut live = LiveQueries::new();
        let h = live.open_inner(r#"{"where": [["n", ">", 1]]}"#).unwrap();
        assert_eq!(live.load_inner(h, records).unwrap(), "[0]");
        assert_eq!(live.take_inner(h).unwrap(), r#"{"reset":["a"]}"#);
        assert!(live.apply_inner(&[h], "b", r#"{"n": 5}"#).unwrap());
        assert!(!live.apply_inner(&[h], "a", "").unwrap());
        assert_eq!(
            live.take_inner(h).unwrap(),
            r#"{"splices":[["+",1,"b"],["-",0]]}"#
        );
        assert_eq!(live.take_inner(h).unwrap(), "null");
        assert!(live.open_inner(r#"{"where": [["n", "~", 1]]}"#).is_err());
        assert!(live.apply_inner(&[h], "a", "[1]").is_err());
        live.close(h);
        assert!(live.take_inner(h).is_err());
    }
}
