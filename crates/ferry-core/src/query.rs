//! A query over a collection's live records (docs/live-queries.md):
//! filters, an order, paging, and the one comparison of JSON values both
//! clients judge them by, so that a query gives the same rows in the
//! browser and in the native client.

use std::cmp::Ordering;

use serde_json::Value;

use crate::names::FieldName;

/// How a filter compares a record's field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` (a record without the field compares as null)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`: equal to one of the values of a list.
    In,
}

impl Op {
    /// The operator written as the JSON form writes it.
    pub fn parse(op: &str) -> Option<Op> {
        Some(match op {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "in" => Op::In,
            _ => return None,
        })
    }
}

/// Which way one order field goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One filter: `field op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: FieldName,
    pub op: Op,
    pub value: Value,
}

/// Filters (all must hold), an order (then by record id), and a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub filters: Vec<Filter>,
    pub order: Vec<(FieldName, Direction)>,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// Why a query's JSON is not a query, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn bad(why: impl Into<String>) -> QueryError {
    QueryError(why.into())
}

impl Query {
    /// Reads the JSON form `list()` takes: `{"where": [[field, op,
    /// value], ...], "orderBy": [field, "asc" | "desc"] or a list of
    /// those, "limit": n, "offset": n}`, every key optional.
    pub fn from_json(json: &Value) -> Result<Query, QueryError> {
        let Some(object) = json.as_object() else {
            return Err(bad("a query is a JSON object"));
        };
        if let Some(key) = object
            .keys()
            .find(|k| !["where", "orderBy", "limit", "offset"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "a query has no key {key:?}: use where, orderBy, limit, offset"
            )));
        }
        let field = |v: &Value| -> Result<FieldName, QueryError> {
            let name = v
                .as_str()
                .ok_or_else(|| bad("a field is named by a string"))?;
            FieldName::new(name).map_err(|e| bad(format!("{name:?}: {e}")))
        };
        let mut query = Query::default();
        for filter in array(object.get("where"), "where")? {
            let [name, op, value] = filter.as_array().map(Vec::as_slice).unwrap_or_default() else {
                return Err(bad("each filter is [field, op, value]"));
            };
            let op_name = op.as_str().unwrap_or_default();
            let op = Op::parse(op_name).ok_or_else(|| {
                bad(format!(
                    "unknown operator {op}; use one of = != < <= > >= in"
                ))
            })?;
            if op == Op::In && !value.is_array() {
                return Err(bad("in takes a list of values"));
            }
            query.filters.push(Filter {
                field: field(name)?,
                op,
                value: value.clone(),
            });
        }
        if let Some(order) = object.get("orderBy").filter(|o| !o.is_null()) {
            // One order (`[field, dir]`) or a list of them.
            let one = order
                .as_array()
                .is_some_and(|o| o.first().is_some_and(Value::is_string));
            let orders = if one {
                vec![order]
            } else {
                array(Some(order), "orderBy")?.iter().collect()
            };
            for each in orders {
                let parts = each.as_array().map(Vec::as_slice).unwrap_or_default();
                let (name, direction) = match parts {
                    [name] => (name, Direction::Asc),
                    [name, d] => (
                        name,
                        match d.as_str() {
                            Some("asc") => Direction::Asc,
                            Some("desc") => Direction::Desc,
                            _ => return Err(bad("an order goes \"asc\" or \"desc\"")),
                        },
                    ),
                    _ => {
                        return Err(bad(
                            "orderBy is [field, \"asc\" | \"desc\"] or a list of those",
                        ));
                    }
                };
                query.order.push((field(name)?, direction));
            }
        }
        let count = |key: &str| -> Result<Option<u64>, QueryError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{key} is a whole number, 0 or more"))),
            }
        };
        query.limit = count("limit")?;
        query.offset = count("offset")?.unwrap_or(0);
        Ok(query)
    }

    /// Whether a live record whose field `name` is `get(name)` passes
    /// every filter.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a Value>) -> bool {
        self.filters.iter().all(|f| {
            let held = get(f.field.as_str());
            let c = |want: &Value| compare(held, Some(want));
            match f.op {
                Op::Eq => c(&f.value) == Ordering::Equal,
                Op::Ne => c(&f.value) != Ordering::Equal,
                Op::Lt => c(&f.value) == Ordering::Less,
                Op::Le => c(&f.value) != Ordering::Greater,
                Op::Gt => c(&f.value) == Ordering::Greater,
                Op::Ge => c(&f.value) != Ordering::Less,
                Op::In => f
                    .value
                    .as_array()
                    .is_some_and(|list| list.iter().any(|v| c(v) == Ordering::Equal)),
            }
        })
    }

    /// The order of two records (each its id and its fields), as the
    /// query's result lists them: by each order field, then by id.
    pub fn cmp<'a, 'b>(
        &self,
        a: (&str, impl Fn(&str) -> Option<&'a Value>),
        b: (&str, impl Fn(&str) -> Option<&'b Value>),
    ) -> Ordering {
        let (ka, kb) = (self.sort_key(a.1), self.sort_key(b.1));
        self.cmp_keys((a.0, &ka), (b.0, &kb))
    }
}

impl Query {
    /// The values of the order's fields of a record: what [`Query::cmp_keys`]
    /// orders by, kept by a live query instead of the record.
    pub fn sort_key<'a>(&self, get: impl Fn(&str) -> Option<&'a Value>) -> Vec<Value> {
        self.order
            .iter()
            .map(|(field, _)| get(field.as_str()).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// The order of two records given as their ids and sort keys; the same
    /// as [`Query::cmp`] of the records.
    pub fn cmp_keys(&self, a: (&str, &[Value]), b: (&str, &[Value])) -> Ordering {
        for (i, (_, direction)) in self.order.iter().enumerate() {
            let o = compare(a.1.get(i), b.1.get(i));
            let o = if *direction == Direction::Desc {
                o.reverse()
            } else {
                o
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        utf16(a.0, b.0)
    }

    /// The window `[offset, offset + limit)` of a result of `len` rows,
    /// clamped to it.
    pub fn window(&self, len: usize) -> std::ops::Range<usize> {
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(len);
        let end = match self.limit {
            Some(limit) => start.saturating_add(usize::try_from(limit).unwrap_or(usize::MAX)),
            None => len,
        };
        start..end.min(len)
    }
}

fn array<'v>(value: Option<&'v Value>, key: &str) -> Result<&'v [Value], QueryError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad(format!("{key} is a list"))),
    }
}

/// The one order of JSON values: by kind first (absent and null, then
/// false before true, numbers, strings, arrays, objects), then by value:
/// numbers as numbers, strings by UTF-16 code unit (as JavaScript and
/// IndexedDB compare them), arrays and objects by their JSON.
pub fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => utf16(x, y),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            utf16(&a.to_string(), &b.to_string())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Strings by UTF-16 code unit.
fn utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn record(v: Value) -> impl Fn(&str) -> Option<&'static Value> {
        let leaked: &'static Value = Box::leak(Box::new(v));
        move |f: &str| leaked.get(f)
    }

    #[test]
    fn values_order_by_kind_then_value_and_strings_as_javascript_does() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1.5),
            json!(2),
            json!(10),
            json!(""),
            json!("B"),
            json!("a"),
            json!("😀"),
            json!("\u{FFFF}"),
            json!([1]),
            json!({"a": 1}),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(Some(a), Some(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(compare(None, Some(&json!(null))), Ordering::Equal);
        assert_eq!(compare(Some(&json!(2)), Some(&json!(2.0))), Ordering::Equal);
    }

    #[test]
    fn filters_treat_a_missing_field_as_null() {
        let q = Query::from_json(&json!({"where": [["done", "!=", true]]})).unwrap();
        assert!(q.matches(record(json!({"title": "no done"}))));
        assert!(!q.matches(record(json!({"done": true}))));
        let q = Query::from_json(&json!({"where": [["n", ">=", 2], ["n", "<", 5],
                                                    ["tag", "in", ["a", "b"]]]}))
        .unwrap();
        assert!(q.matches(record(json!({"n": 2, "tag": "b"}))));
        assert!(!q.matches(record(json!({"n": 5, "tag": "b"}))));
        assert!(!q.matches(record(json!({"n": 3, "tag": "c"}))));
        assert!(
            !q.matches(record(json!({"tag": "a"}))),
            "null is below every number"
        );
    }

    #[test]
    fn records_order_by_each_field_then_by_id() {
        let q = Query::from_json(&json!({"orderBy": [["done", "asc"], ["pos", "desc"]]})).unwrap();
        let (a, b, c) = (
            record(json!({"done": false, "pos": 1})),
            record(json!({"done": false, "pos": 3})),
            record(json!({"done": true, "pos": 9})),
        );
        assert_eq!(q.cmp(("a", &a), ("b", &b)), Ordering::Greater);
        assert_eq!(q.cmp(("b", &b), ("c", &c)), Ordering::Less);
        assert_eq!(q.cmp(("x", &a), ("y", &a)), Ordering::Less);
        let one = Query::from_json(&json!({"orderBy": ["pos", "desc"], "limit": 2, "offset": 1}))
            .unwrap();
        assert_eq!(one.order.len(), 1);
        assert_eq!((one.limit, one.offset), (Some(2), 1));
    }

    #[test]
    fn a_query_that_is_not_one_says_why() {
        for (json, says) in [
            (json!([]), "a JSON object"),
            (json!({"sort": []}), "no key \"sort\""),
            (json!({"where": [["n", "~", 1]]}), "unknown operator"),
            (json!({"where": [["n", "in", 1]]}), "a list of values"),
            (json!({"where": [["n", "="]]}), "[field, op, value]"),
            (json!({"where": [["", "=", 1]]}), "\"\""),
            (json!({"orderBy": ["n", "up"]}), "\"asc\" or \"desc\""),
            (json!({"limit": -1}), "limit is a whole number"),
        ] {
            let e = Query::from_json(&json).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
