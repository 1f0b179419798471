//! Index keys of the one order of values (docs/live-queries.md, "Indexes"):
//! how a client that keeps an index over a field (the browser's IndexedDB)
//! writes a value as a key that sorts as [`crate::query::compare`] orders
//! values, and which key ranges hold every record a query's filter can
//! select. A range only narrows the records read: the query still judges
//! each one.

use serde_json::{Value, json};

use crate::query::{Op, Query};

/// A value as an index key: `[kind]` or `[kind, value]`, kinds in the
/// order's order (null and absent 0, booleans 1, numbers 2, strings 3,
/// arrays 4, objects 5). Arrays and objects keep only their kind: a range
/// over them is never narrowed by their contents.
pub fn index_key(value: Option<&Value>) -> Value {
    match value.unwrap_or(&Value::Null) {
        Value::Null => json!([0]),
        Value::Bool(b) => json!([1, u8::from(*b)]),
        Value::Number(n) => json!([2, n]),
        Value::String(s) => json!([3, s]),
        Value::Array(_) => json!([4]),
        Value::Object(_) => json!([5]),
    }
}

/// One range of index keys: each bound a key and whether it is left out
/// (`None`: open to the first or the last key of the field).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    pub lower: Option<(Value, bool)>,
    pub upper: Option<(Value, bool)>,
}

/// The ranges of one indexed field that hold every record a query can
/// select.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPlan {
    pub field: String,
    pub ranges: Vec<KeyRange>,
}

fn scalar(v: &Value) -> bool {
    !v.is_array() && !v.is_object()
}

impl Query {
    /// The narrowest read through an index of one of `indexed`'s fields,
    /// or `None` when no filter can use one (a scan).
    pub fn index_plan(&self, indexed: &[&str]) -> Option<IndexPlan> {
        let mut best: Option<IndexPlan> = None;
        for f in &self.filters {
            if !indexed.contains(&f.field.as_str()) {
                continue;
            }
            let key = || index_key(Some(&f.value));
            let one = |lower, upper| vec![KeyRange { lower, upper }];
            let ranges = match f.op {
                Op::Eq if scalar(&f.value) => one(Some((key(), false)), Some((key(), false))),
                Op::Lt if scalar(&f.value) => one(None, Some((key(), true))),
                Op::Le if scalar(&f.value) => one(None, Some((key(), false))),
                Op::Gt if scalar(&f.value) => one(Some((key(), true)), None),
                Op::Ge if scalar(&f.value) => one(Some((key(), false)), None),
                Op::In => {
                    let values = f.value.as_array()?;
                    if !values.iter().all(scalar) {
                        continue;
                    }
                    values
                        .iter()
                        .map(|v| {
                            let k = index_key(Some(v));
                            KeyRange {
                                lower: Some((k.clone(), false)),
                                upper: Some((k, false)),
                            }
                        })
                        .collect()
                }
                _ => continue,
            };
            // An equality (or a list of them) narrows most: prefer it.
            let exact = matches!(f.op, Op::Eq | Op::In);
            if best.is_none() || exact {
                best = Some(IndexPlan {
                    field: f.field.as_str().to_owned(),
                    ranges,
                });
                if exact {
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_sort_by_kind_then_value() {
        let keys: Vec<Value> = [
            None,
            Some(json!(false)),
            Some(json!(true)),
            Some(json!(-2)),
            Some(json!("a")),
        ]
        .iter()
        .map(|v| index_key(v.as_ref()))
        .collect();
        assert_eq!(
            keys,
            [
                json!([0]),
                json!([1, 0]),
                json!([1, 1]),
                json!([2, -2]),
                json!([3, "a"])
            ]
        );
    }

    #[test]
    fn a_query_reads_through_the_narrowest_index() {
        let q =
            Query::from_json(&json!({"where": [["n", ">", 3], ["tag", "=", "x"], ["o", "=", 1]]}))
                .unwrap();
        let plan = q.index_plan(&["n", "tag"]).unwrap();
        assert_eq!(plan.field, "tag");
        assert_eq!(plan.ranges[0].lower, Some((json!([3, "x"]), false)));
        let plan = q.index_plan(&["n"]).unwrap();
        assert_eq!(
            plan.ranges,
            [KeyRange {
                lower: Some((json!([2, 3]), true)),
                upper: None
            }]
        );
        assert!(q.index_plan(&["o2"]).is_none());
        let ne = Query::from_json(&json!({"where": [["n", "!=", 3], ["n", "<", [1]]]})).unwrap();
        assert!(ne.index_plan(&["n"]).is_none(), "!= and arrays scan");
        let list = Query::from_json(&json!({"where": [["n", "in", [1, "a"]]]})).unwrap();
        assert_eq!(list.index_plan(&["n"]).unwrap().ranges.len(), 2);
    }
}
