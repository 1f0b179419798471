//! Simple queries over a collection: filters on field values, an order, a
//! limit. They run in SQLite over the stored JSON, so they cost no copy of
//! the collection into memory.

use ferry_core::{Collection, FieldName, SpaceId};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::error::Result;

/// How a field is compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal (JSON `true`/`false` compare as 1/0, as SQLite reads them).
    Eq,
    /// Not equal; records without the field are left out.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// Which way an order goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// What [`Replica::list`](crate::Replica::list) returns: every live record
/// by id, unless filtered, ordered or limited.
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

    /// Only records whose `field` compares with `value` as `op` says.
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

    /// The statement and its parameters: `(id, fields)` rows.
    pub(crate) fn sql(
        &self,
        space: &SpaceId,
        collection: &Collection,
    ) -> Result<(String, Vec<SqlValue>)> {
        let mut sql = String::from(
            "SELECT id, fields FROM records WHERE space = ? AND collection = ? AND deleted IS NULL",
        );
        let mut params = vec![
            SqlValue::Text(space.to_string()),
            SqlValue::Text(collection.to_string()),
        ];
        for (field, op, value) in &self.filters {
            sql.push_str(&format!(
                " AND json_extract(fields, ?) {} json_extract(?, '$')",
                op.sql()
            ));
            params.push(SqlValue::Text(path(field)?));
            params.push(SqlValue::Text(value.to_string()));
        }
        sql.push_str(" ORDER BY ");
        for (field, order) in &self.order {
            sql.push_str(match order {
                Order::Asc => "json_extract(fields, ?) ASC, ",
                Order::Desc => "json_extract(fields, ?) DESC, ",
            });
            params.push(SqlValue::Text(path(field)?));
        }
        sql.push_str("id");
        let limit = self
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        sql.push_str(" LIMIT ? OFFSET ?");
        params.push(SqlValue::Integer(limit));
        params.push(SqlValue::Integer(
            i64::try_from(self.offset).unwrap_or(i64::MAX),
        ));
        Ok((sql, params))
    }
}

/// The JSON path of a field's value in the stored `{name: {value, hlc}}`.
fn path(field: &str) -> Result<String> {
    // A checked name holds only letters, digits and `_`: safe in a path.
    let name = FieldName::new(field)?;
    Ok(format!("$.{name}.value"))
}
