//! Queries over a collection: filters on field values, an order, a window.
//! What a query means is ferry-core's [`ferry_core::query::Query`], the
//! one the browser client runs too (docs/live-queries.md): a record without
//! a field compares as null, and values of different types order null,
//! booleans, numbers, strings, arrays, objects. SQLite reads the candidate
//! records (narrowed by `=` on a string or a number, which it can judge
//! without changing the answer) and the core judges and orders them.

use ferry_core::query::{Filter, Query as CoreQuery};
use ferry_core::{Collection, FieldName, SpaceId};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::error::{Error, Result};

pub use ferry_core::query::{Direction as Order, Op};

/// 2^53: below it in magnitude, a double equals an integer exactly when
/// SQLite finds them equal.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// What [`Replica::list`](crate::Replica::list) and
/// [`Replica::watch`](crate::Replica::watch) select: every live record by
/// id, unless filtered, ordered or limited.
#[derive(Debug, Clone, Default)]
pub struct Query {
    filters: Vec<(String, Op, Value)>,
    order: Vec<(String, Order)>,
    limit: Option<u64>,
    offset: u64,
}

impl Query {
    /// Every live record, by id.
    pub fn new() -> Query {
        Query::default()
    }

    /// The query of its JSON form, the one the browser client takes:
    /// `{"where": [[field, op, value], ...], "orderBy": [field, "asc"],
    /// "limit": n, "offset": n}`.
    pub fn from_json(json: &Value) -> Result<Query> {
        let core = CoreQuery::from_json(json).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Query {
            filters: core
                .filters
                .into_iter()
                .map(|f| (f.field.into_string(), f.op, f.value))
                .collect(),
            order: core
                .order
                .into_iter()
                .map(|(f, d)| (f.into_string(), d))
                .collect(),
            limit: core.limit,
            offset: core.offset,
        })
    }

    /// Only records whose `field` compares with `value` as `op` says (for
    /// [`Op::In`], `value` is a list).
    pub fn filter(mut self, field: &str, op: Op, value: impl Into<Value>) -> Query {
        self.filters.push((field.to_owned(), op, value.into()));
        self
    }

    /// Ordered by `field` (then by the orders added after, then by id).
    pub fn order_by(mut self, field: &str, order: Order) -> Query {
        self.order.push((field.to_owned(), order));
        self
    }

    /// At most `n` records.
    pub fn limit(mut self, n: u64) -> Query {
        self.limit = Some(n);
        self
    }

    /// Skipping the first `n`.
    pub fn offset(mut self, n: u64) -> Query {
        self.offset = n;
        self
    }

    /// The core's query, with every field name checked.
    pub(crate) fn core(&self) -> Result<CoreQuery> {
        let mut filters = Vec::with_capacity(self.filters.len());
        for (field, op, value) in &self.filters {
            if *op == Op::In && !value.is_array() {
                return Err(Error::Invalid(format!(
                    "{field} in: takes a list of values"
                )));
            }
            filters.push(Filter {
                field: FieldName::new(field.as_str())?,
                op: *op,
                value: value.clone(),
            });
        }
        let mut order = Vec::with_capacity(self.order.len());
        for (field, direction) in &self.order {
            order.push((FieldName::new(field.as_str())?, *direction));
        }
        Ok(CoreQuery {
            filters,
            order,
            limit: self.limit,
            offset: self.offset,
        })
    }
}

/// The value SQLite can judge `f` by exactly, when it can: `=` on a
/// string, or on a number a double holds exactly.
fn narrowing(f: &Filter) -> Option<SqlValue> {
    match (&f.op, &f.value) {
        (Op::Eq, Value::String(s)) => Some(SqlValue::Text(s.clone())),
        // Beyond 2^53 the core compares numbers as doubles (as JavaScript
        // does) and SQLite integers exactly: not narrowed.
        (Op::Eq, Value::Number(n)) if n.as_f64().is_some_and(|f| f.abs() < EXACT) => {
            Some(match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
            })
        }
        _ => None,
    }
}

/// The statement and its parameters that read the candidate `(id,
/// fields)` rows of `query`: every live record of the collection, narrowed
/// by each `=` on a string or a number (SQLite's `json_extract` gives
/// strings as text, which equal only equal strings, and numbers as numbers,
/// which equal only equal numbers or the booleans 1/0 stand for, which the
/// core then leaves out).
///
/// The first such filter on a field of `indexed` (the schema's `index =
/// true`, which has an SQLite expression index, see `typed`) reads
/// through that index.
pub(crate) fn candidates(
    query: &CoreQuery,
    space: &SpaceId,
    collection: &Collection,
    indexed: &[&str],
) -> (String, Vec<SqlValue>) {
    let through = query
        .filters
        .iter()
        .find(|f| narrowing(f).is_some() && indexed.contains(&f.field.as_str()));
    let mut sql = match through {
        Some(f) => format!(
            "SELECT id, fields FROM records INDEXED BY \"ix:{collection}:{}\"",
            f.field
        ),
        None => String::from("SELECT id, fields FROM records"),
    };
    sql.push_str(" WHERE space = ? AND collection = ? AND deleted IS NULL");
    let mut params = vec![
        SqlValue::Text(space.to_string()),
        SqlValue::Text(collection.to_string()),
    ];
    for f in &query.filters {
        let Some(value) = narrowing(f) else {
            continue;
        };
        // A checked name holds only letters, digits and `_`: safe in a path.
        sql.push_str(&format!(
            " AND json_extract(fields, '$.{}.value') = ?",
            f.field
        ));
        params.push(value);
    }
    (sql, params)
}
