//! The rows of a mirrored table as one typed array per column, bound to
//! one `unnest` (docs/tables.md): PostgreSQL reads `bigint`, `double
//! precision` and `boolean` values in their binary form and parses only
//! what has no binary form Ferry holds (timestamps, JSON, arrays) from
//! text, instead of parsing every row from JSON.

use serde_json::Value;
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

/// One column's values, a row each.
pub enum Cells<'s> {
    Text(Vec<Option<&'s str>>),
    Integer(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Boolean(Vec<Option<bool>>),
    /// As text the statement casts to the column's type: a timestamp as
    /// written, JSON serialized, an array as a PostgreSQL array literal.
    Cast(Vec<Option<String>>, &'static str),
}

impl<'s> Cells<'s> {
    /// An empty column of `sql_type` (as [`ferry_core::schema::table::sql_type`]
    /// names it), for `rows` rows.
    pub fn new(sql_type: &'static str, rows: usize) -> Self {
        match sql_type {
            "text" => Cells::Text(Vec::with_capacity(rows)),
            "bigint" => Cells::Integer(Vec::with_capacity(rows)),
            "double precision" => Cells::Float(Vec::with_capacity(rows)),
            "boolean" => Cells::Boolean(Vec::with_capacity(rows)),
            other => Cells::Cast(Vec::with_capacity(rows), other),
        }
    }

    /// Adds a row's value (`None`: null). The value fits the column's
    /// field (the core's `Mirror::cells` gives only those); one that
    /// still does not read as the column's type goes in as null.
    pub fn push(&mut self, value: Option<&'s Value>) {
        match self {
            Cells::Text(v) => v.push(value.and_then(Value::as_str)),
            Cells::Integer(v) => v.push(value.and_then(Value::as_i64)),
            Cells::Float(v) => v.push(value.and_then(Value::as_f64)),
            Cells::Boolean(v) => v.push(value.and_then(Value::as_bool)),
            Cells::Cast(v, sql_type) => v.push(value.and_then(|value| {
                if sql_type.ends_with("[]") {
                    value.as_array().map(|items| array_literal(items))
                } else if let Some(s) = value.as_str().filter(|_| *sql_type != "jsonb") {
                    Some(s.to_owned())
                } else {
                    Some(value.to_string())
                }
            })),
        }
    }

    /// The type of the array parameter, for `unnest($n::…)`.
    pub fn param_type(&self) -> &'static str {
        match self {
            Cells::Text(_) | Cells::Cast(..) => "text[]",
            Cells::Integer(_) => "bigint[]",
            Cells::Float(_) => "double precision[]",
            Cells::Boolean(_) => "boolean[]",
        }
    }

    /// The expression reading this column from `unnest`'s column `name`.
    pub fn select(&self, name: &str) -> String {
        match self {
            Cells::Cast(_, sql_type) => format!("{name}::{sql_type}"),
            _ => name.to_owned(),
        }
    }

    /// Binds the column's array to `query`.
    pub fn bind<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments>
    where
        's: 'q,
    {
        match self {
            Cells::Text(v) => query.bind(v),
            Cells::Integer(v) => query.bind(v),
            Cells::Float(v) => query.bind(v),
            Cells::Boolean(v) => query.bind(v),
            Cells::Cast(v, _) => query.bind(v),
        }
    }
}

/// A JSON array as PostgreSQL's array literal: each string quoted with
/// `"` and `\` escaped, numbers and booleans as JSON writes them (which
/// PostgreSQL's input reads), null as `NULL`.
fn array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Value::Null => out.push_str("NULL"),
            other => out.push_str(&other.to_string()),
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_become_array_literals() {
        let items = json!(["a", "with \"quotes\" and \\", "{,}", "", null]);
        let Some(items) = items.as_array() else {
            panic!("an array")
        };
        assert_eq!(
            array_literal(items),
            r#"{"a","with \"quotes\" and \\","{,}","",NULL}"#
        );
        let numbers = json!([1, -2.5, 1e300]);
        let Some(numbers) = numbers.as_array() else {
            panic!("an array")
        };
        assert_eq!(array_literal(numbers), "{1,-2.5,1e+300}");
        assert_eq!(array_literal(&[]), "{}");
    }

    #[test]
    fn each_type_binds_as_itself_or_as_text_cast() {
        let (n, s, j) = (json!(3), json!("2026-01-01T00:00:00Z"), json!({"a": "b"}));
        let mut ints = Cells::new("bigint", 2);
        ints.push(Some(&n));
        ints.push(None);
        assert!(matches!(&ints, Cells::Integer(v) if v == &[Some(3), None]));
        assert_eq!(
            (ints.param_type(), ints.select("u.c0")),
            ("bigint[]", "u.c0".into())
        );
        let mut at = Cells::new("timestamptz", 1);
        at.push(Some(&s));
        assert!(
            matches!(&at, Cells::Cast(v, _) if v == &[Some(s.as_str().unwrap_or_default().to_owned())])
        );
        assert_eq!(at.select("u.c1"), "u.c1::timestamptz");
        let mut meta = Cells::new("jsonb", 1);
        meta.push(Some(&j));
        assert!(matches!(&meta, Cells::Cast(v, _) if v == &[Some(r#"{"a":"b"}"#.to_owned())]));
        // A JSON string in a jsonb column stays a JSON string.
        let mut text_json = Cells::new("jsonb", 1);
        text_json.push(Some(&s));
        assert!(
            matches!(&text_json, Cells::Cast(v, _) if v == &[Some(format!("\"{}\"", s.as_str().unwrap_or_default()))])
        );
    }
}
