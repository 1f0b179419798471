//! What changed from one schema to the next, and whether stored records
//! and queued writes that the old one allowed may now be refused
//! (breaking) or not (compatible). `ferry schema diff` prints it and
//! `ferry schema apply` refuses a breaking change unless forced.

use serde::Serialize;

use super::{CollectionSchema, FieldSchema, FieldType, Mode, Schema, Undeclared};
use crate::names::{Collection, FieldName};

/// Whether a difference can refuse what the old schema allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Everything the old schema allowed is still allowed.
    Compatible,
    /// Some records or writes the old schema allowed are refused now.
    Breaking,
}

/// One difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Where: `todos`, `todos.title`, or empty for the whole schema.
    pub path: String,
    /// Compatible or breaking.
    pub impact: Impact,
    /// What changed, for a person.
    pub what: String,
}

/// The differences from `old` to `new`, in the order of the collections
/// and fields.
pub fn diff(old: &Schema, new: &Schema) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut say = |path: String, impact: Impact, what: String| {
        out.push(Difference { path, impact, what });
    };
    if old.undeclared != new.undeclared {
        let impact = match new.undeclared {
            Undeclared::Refuse => Impact::Breaking,
            Undeclared::Allow => Impact::Compatible,
        };
        say(
            String::new(),
            impact,
            format!(
                "undeclared collections: {:?} to {:?}",
                old.undeclared, new.undeclared
            )
            .to_lowercase(),
        );
    }
    for name in old.collections.keys() {
        if !new.collections.contains_key(name) {
            // Its records are then judged as undeclared.
            let impact = match new.undeclared {
                Undeclared::Refuse => Impact::Breaking,
                Undeclared::Allow => Impact::Compatible,
            };
            say(name.to_string(), impact, "collection removed".into());
        }
    }
    for (name, after) in &new.collections {
        match old.collections.get(name) {
            // New names: nothing was written under them that the old schema
            // judged (`ferry schema check` finds records written while
            // undeclared collections were allowed).
            None => say(
                name.to_string(),
                Impact::Compatible,
                "collection added".into(),
            ),
            Some(before) => collection(name, before, after, &mut say),
        }
    }
    out
}

fn collection(
    name: &Collection,
    before: &CollectionSchema,
    after: &CollectionSchema,
    say: &mut impl FnMut(String, Impact, String),
) {
    if let Some((breaking, what)) = super::table::mirror_change(before, after) {
        let impact = if breaking {
            Impact::Breaking
        } else {
            Impact::Compatible
        };
        say(name.to_string(), impact, what);
    }
    if before.permissions != after.permissions {
        // No stored record becomes invalid: writes are judged by the new
        // rules from now on, and a queued write they forbid is refused as
        // any rejected change.
        say(
            name.to_string(),
            Impact::Compatible,
            "permissions changed".into(),
        );
    }
    if before.mode != after.mode {
        let impact = match after.mode {
            Mode::Strict => Impact::Breaking,
            Mode::Open => Impact::Compatible,
        };
        say(
            name.to_string(),
            impact,
            format!("mode {:?} to {:?}", before.mode, after.mode).to_lowercase(),
        );
    }
    for field in before.fields.keys() {
        if !after.fields.contains_key(field) {
            let impact = match after.mode {
                Mode::Strict => Impact::Breaking,
                Mode::Open => Impact::Compatible,
            };
            say(path(name, field), impact, "field removed".into());
        }
    }
    for (field, new) in &after.fields {
        match before.fields.get(field) {
            None => {
                // A new required field refuses every record created
                // without it; an optional one refuses only values of
                // another type written while it was undeclared, which
                // `ferry schema check` finds.
                let impact = if new.required {
                    Impact::Breaking
                } else {
                    Impact::Compatible
                };
                let what = if new.required {
                    "required field added"
                } else {
                    "optional field added"
                };
                say(path(name, field), impact, what.into());
            }
            Some(old) => {
                for (impact, what) in changes(old, new) {
                    say(path(name, field), impact, what);
                }
            }
        }
    }
}

fn path(collection: &Collection, field: &FieldName) -> String {
    format!("{collection}.{field}")
}

/// How one field changed.
fn changes(old: &FieldSchema, new: &FieldSchema) -> Vec<(Impact, String)> {
    use Impact::{Breaking, Compatible};
    let mut out = Vec::new();
    if old.required != new.required {
        let impact = if new.required { Breaking } else { Compatible };
        out.push((
            impact,
            format!("required {} to {}", old.required, new.required),
        ));
    }
    // Nullable matters only while required: a field made optional takes
    // null anyway.
    if old.nullable != new.nullable && new.required {
        let impact = if new.nullable { Compatible } else { Breaking };
        out.push((
            impact,
            format!("nullable {} to {}", old.nullable, new.nullable),
        ));
    }
    if old.kind != new.kind {
        // Every value of the old type may be refused: breaking, unless
        // the new type takes all of them (any value, or an integer as a
        // number). The type's options are then its own.
        let widens = new.kind == FieldType::Json
            || (old.kind == FieldType::Integer && new.kind == FieldType::Number);
        out.push((
            if widens { Compatible } else { Breaking },
            format!("type {} to {}", old.kind.name(), new.kind.name()),
        ));
        if new.kind == FieldType::Json {
            return out;
        }
    }
    // A limit added or tightened is breaking; removed or loosened is not.
    let upper =
        |what: &str, old: Option<f64>, new: Option<f64>, out: &mut Vec<(Impact, String)>| {
            if old != new {
                let tighter = match (old, new) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(o), Some(n)) => n < o,
                };
                out.push((
                    if tighter { Breaking } else { Compatible },
                    format!("{what} {} to {}", shown(old), shown(new)),
                ));
            }
        };
    let lower =
        |what: &str, old: Option<f64>, new: Option<f64>, out: &mut Vec<(Impact, String)>| {
            if old != new {
                let tighter = match (old, new) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(o), Some(n)) => n > o,
                };
                out.push((
                    if tighter { Breaking } else { Compatible },
                    format!("{what} {} to {}", shown(old), shown(new)),
                ));
            }
        };
    let f = |n: Option<u64>| n.map(|n| n as f64);
    upper("max_length", f(old.max_length), f(new.max_length), &mut out);
    lower("min_length", f(old.min_length), f(new.min_length), &mut out);
    upper("max", old.max, new.max, &mut out);
    lower("min", old.min, new.min, &mut out);
    upper("max_items", f(old.max_items), f(new.max_items), &mut out);
    let widened =
        old.items == Some(super::ItemType::Integer) && new.items == Some(super::ItemType::Number);
    if old.items != new.items && widened {
        out.push((Compatible, "items integer to number".into()));
    } else if old.items != new.items {
        out.push((
            Breaking,
            format!("items {:?} to {:?}", old.items, new.items).to_lowercase(),
        ));
    }
    if old.index != new.index {
        // Clients build or drop their index; no record is refused.
        let what = if new.index {
            "index added"
        } else {
            "index removed"
        };
        out.push((Compatible, what.into()));
    }
    if old.server_only != new.server_only {
        let what = if new.server_only {
            "written by the server only"
        } else {
            "written by clients too"
        };
        out.push((Compatible, what.into()));
    }
    if old.collection != new.collection {
        // Only a reference's shape (a record id) is checked, whatever it
        // refers to; the joins of later features will care.
        out.push((Compatible, "refers to another collection".into()));
    }
    if old.values != new.values {
        let (was, now) = (
            old.values.as_deref().unwrap_or_default(),
            new.values.as_deref().unwrap_or_default(),
        );
        let dropped = was.iter().any(|v| !now.contains(v));
        out.push((
            if dropped { Breaking } else { Compatible },
            format!("values {was:?} to {now:?}"),
        ));
    }
    out
}

fn shown(n: Option<f64>) -> String {
    n.map_or_else(|| "none".into(), |n| n.to_string())
}
