//! Whether one value fits one field: its type and the type's options.

use serde_json::Value;

use super::check::Rule;
use super::{FieldSchema, FieldType, ItemType};
use crate::names::RecordId;

/// The largest integer every JSON reader (JavaScript's included) holds
/// exactly: 2^53 - 1 (`Number.MAX_SAFE_INTEGER`).
const SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// Why `value` does not fit `field`: the rule, and a sentence that follows
/// "must".
pub fn misfit(field: &FieldSchema, value: &Value) -> Option<(Rule, String)> {
    let wrong = |what: &str| Some((Rule::Type, format!("be {what}, got {}", shown(value))));
    match field.kind {
        FieldType::Json | FieldType::Unknown => None,
        FieldType::String => match value.as_str() {
            None => wrong("a string"),
            Some(s) => length(s, field.min_length, field.max_length),
        },
        FieldType::Integer => match integer(value) {
            None => wrong("an integer"),
            Some(n) => bounds(n, field),
        },
        FieldType::Number => match value.as_f64() {
            None => wrong("a number"),
            Some(n) => bounds(n, field),
        },
        FieldType::Boolean if value.is_boolean() => None,
        FieldType::Boolean => wrong("true or false"),
        FieldType::Timestamp if timestamp(value) => None,
        FieldType::Timestamp => {
            wrong("an RFC 3339 timestamp with an offset, like 2026-12-02T14:00:00Z")
        }
        FieldType::Enum => {
            let values = field.values.as_deref().unwrap_or_default();
            match value.as_str() {
                Some(s) if values.iter().any(|v| v == s) => None,
                _ => Some((
                    Rule::Enum,
                    format!("be one of {}, got {}", list(values), shown(value)),
                )),
            }
        }
        FieldType::Ref => match value.as_str().map(RecordId::new) {
            Some(Ok(_)) => None,
            _ => wrong("the id of a record"),
        },
        FieldType::File => crate::FileRef::from_value(value)
            .err()
            .map(|e| (Rule::Type, e.to_string())),
        FieldType::Array => {
            let Some(items) = value.as_array() else {
                return wrong("an array");
            };
            if let Some(most) = field.max_items
                && items.len() as u64 > most
            {
                return Some((
                    Rule::MaxItems,
                    format!("hold at most {most} items, got {}", items.len()),
                ));
            }
            let kind = field.items.unwrap_or(ItemType::String);
            items.iter().enumerate().find_map(|(i, item)| {
                item_misfit(kind, field.max_length, item)
                    .map(|(rule, why)| (rule, format!("hold, at item {i}, {why}")))
            })
        }
    }
}

fn item_misfit(kind: ItemType, max_length: Option<u64>, item: &Value) -> Option<(Rule, String)> {
    let wrong = |what: &str| Some((Rule::Type, format!("{what}, got {}", shown(item))));
    match kind {
        ItemType::String => match item.as_str() {
            None => wrong("a string"),
            Some(s) => length(s, None, max_length)
                .map(|(rule, why)| (rule, format!("a string that can {why}"))),
        },
        ItemType::Integer if integer(item).is_some() => None,
        ItemType::Number if item.is_number() => None,
        ItemType::Boolean if item.is_boolean() => None,
        ItemType::Timestamp if timestamp(item) => None,
        ItemType::Unknown => None,
        ItemType::Integer => wrong("an integer"),
        ItemType::Number => wrong("a number"),
        ItemType::Boolean => wrong("true or false"),
        ItemType::Timestamp => wrong("an RFC 3339 timestamp"),
    }
}

/// The value as an integer: a JSON integer (`3`, not `3.0`, which an
/// app's integer type would not read) within ±(2^53 - 1).
fn integer(value: &Value) -> Option<f64> {
    let n = value.as_i64()?;
    (-SAFE_INTEGER..=SAFE_INTEGER)
        .contains(&n)
        .then_some(n as f64)
}

/// An RFC 3339 date and time with an offset, its date and time parted by
/// `T` (or `t`), as JavaScript's `toISOString` writes it.
fn timestamp(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        matches!(s.as_bytes().get(10), Some(b'T' | b't'))
            && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok()
    })
}

fn length(s: &str, min: Option<u64>, max: Option<u64>) -> Option<(Rule, String)> {
    let count = s.chars().count() as u64;
    if let Some(most) = max
        && count > most
    {
        return Some((
            Rule::MaxLength,
            format!("be at most {most} characters, got {count}"),
        ));
    }
    if let Some(least) = min
        && count < least
    {
        return Some((
            Rule::MinLength,
            format!("be at least {least} characters, got {count}"),
        ));
    }
    None
}

fn bounds(n: f64, field: &FieldSchema) -> Option<(Rule, String)> {
    if let Some(least) = field.min
        && n < least
    {
        return Some((Rule::Min, format!("be at least {least}, got {n}")));
    }
    if let Some(most) = field.max
        && n > most
    {
        return Some((Rule::Max, format!("be at most {most}, got {n}")));
    }
    None
}

fn list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    quoted.join(", ")
}

/// A value as a message shows it: short, whatever its size.
pub fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        let head: String = text.chars().take(37).collect();
        format!("{head}...")
    }
}
