//! A change against the record it applies to: the one validation the
//! server runs in its push transaction and both clients run before they
//! queue a write.

use serde::Serialize;

use super::value::misfit;
use super::{Mode, Schema, Undeclared};
use crate::change::{Change, RecordState};
use crate::names::{Collection, FieldName, RecordId};

/// The rule a change broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A write to a collection the schema does not declare, where it
    /// refuses those.
    UndeclaredCollection,
    /// A field a strict collection does not declare.
    UndeclaredField,
    /// A value of another type than the field's.
    Type,
    /// A string shorter than `min_length`.
    MinLength,
    /// A string (or an array's string) longer than `max_length`.
    MaxLength,
    /// A number below `min`.
    Min,
    /// A number above `max`.
    Max,
    /// A value not among an enum's `values`.
    Enum,
    /// An array with more than `max_items` items.
    MaxItems,
    /// A required field missing (or null where not nullable) from the
    /// record after the change.
    Required,
    /// A value the column of a mirrored collection's table cannot hold
    /// (docs/tables.md): a string with U+0000, a timestamp outside years
    /// 1 to 9999 in UTC or with an offset past ±15:59.
    Column,
}

/// A change that breaks the schema: where, which rule, and why, as a
/// sentence (`todos/t1: field done must be true or false, got "yes"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{collection}/{id}: {message}")]
pub struct Violation {
    /// The record's collection.
    pub collection: Collection,
    /// The record's id.
    pub id: RecordId,
    /// The field, when the rule is about one.
    pub field: Option<FieldName>,
    /// The rule.
    pub rule: Rule,
    /// What is wrong, for a person.
    pub message: String,
}

/// What is left to judge of a change once it is merged: its record's
/// required fields ([`Schema::check_change`] returns it, and
/// [`Pending::verify`] judges the merged state).
#[derive(Debug, Default)]
#[must_use = "the required fields are judged by verify, after the merge"]
pub struct Pending(Option<Box<Required>>);

#[derive(Debug)]
struct Required {
    collection: Collection,
    id: RecordId,
    /// The required fields the change answers for, with whether null is a
    /// value there.
    fields: Vec<(FieldName, bool)>,
}

impl Pending {
    /// Judges the record after the merge: each required field the change
    /// answers for holds a value (null only where nullable).
    pub fn verify(self, after: &RecordState) -> Result<(), Violation> {
        let Some(required) = self.0 else {
            return Ok(());
        };
        if after.is_deleted() {
            return Ok(());
        }
        for (name, nullable) in &required.fields {
            if lacks(after, name, *nullable) {
                let what = if *nullable {
                    "a value (null allowed)"
                } else {
                    "a value"
                };
                return Err(Violation {
                    collection: required.collection.clone(),
                    id: required.id.clone(),
                    field: Some(name.clone()),
                    rule: Rule::Required,
                    message: format!("field {name} is required: the record must hold {what}"),
                });
            }
        }
        Ok(())
    }
}

/// Whether `state` lacks a value for the required field `name` (null
/// counts as one only where `nullable`).
fn lacks(state: &RecordState, name: &FieldName, nullable: bool) -> bool {
    state
        .fields
        .get(name)
        .is_none_or(|held| held.value.is_null() && !nullable)
}

/// Makes the violations of one record.
fn blame<'a>(
    collection: &'a Collection,
    id: &'a RecordId,
) -> impl Fn(Option<&FieldName>, Rule, String) -> Violation + 'a {
    move |field, rule, message| Violation {
        collection: collection.clone(),
        id: id.clone(),
        field: field.cloned(),
        rule,
        message,
    }
}

impl Schema {
    /// Whether writes to `collection` have anything to be judged by: it is
    /// declared, or undeclared collections are refused. A caller that keeps
    /// a record's state before a write only to judge it keeps it only then.
    pub fn judges(&self, collection: &Collection) -> bool {
        self.collection(collection).is_some() || self.undeclared == Undeclared::Refuse
    }

    /// The declaration writes to `collection` are judged by: `None` for an
    /// undeclared collection the schema allows, a violation for one it
    /// refuses.
    fn declared(
        &self,
        collection: &Collection,
        id: &RecordId,
    ) -> Result<Option<&super::CollectionSchema>, Violation> {
        match (self.collection(collection), self.undeclared) {
            (Some(declared), _) => Ok(Some(declared)),
            (None, Undeclared::Allow) => Ok(None),
            (None, Undeclared::Refuse) => Err(blame(collection, id)(
                None,
                Rule::UndeclaredCollection,
                format!("the schema declares no collection {collection}"),
            )),
        }
    }

    /// Judges `change`, which turns the record from `before` into
    /// `after` (`merge::apply_change`'s state).
    ///
    /// Every value the change writes must fit its field (whether or not it
    /// wins the merge), a strict collection takes no undeclared field, and
    /// the record after the change must hold its required fields, where
    /// the change answers for them: it created the record, or wrote the
    /// field. A record stored before its schema said a field is required
    /// is not blamed on a change to its other fields. A delete is always
    /// allowed.
    pub fn check(
        &self,
        before: &RecordState,
        change: &Change,
        after: &RecordState,
    ) -> Result<(), Violation> {
        self.check_change(before, change)?.verify(after)
    }

    /// [`Schema::check`] in two steps, for a caller that merges by value
    /// (the server): what can be judged before the merge, and what is left
    /// for [`Pending::verify`] after it.
    pub fn check_change(
        &self,
        before: &RecordState,
        change: &Change,
    ) -> Result<Pending, Violation> {
        let Change::Upsert {
            collection,
            id,
            fields,
            ..
        } = change
        else {
            return Ok(Pending::default());
        };
        let violation = blame(collection, id);
        let Some(declared) = self.declared(collection, id)? else {
            return Ok(Pending::default());
        };
        for (name, written) in fields {
            // Null is "not set": always allowed (clearing a field the
            // schema no longer declares included); a required field's is
            // judged after the merge.
            if written.value.is_null() {
                continue;
            }
            let Some(field) = declared.fields.get(name) else {
                if declared.mode == Mode::Strict {
                    return Err(violation(
                        Some(name),
                        Rule::UndeclaredField,
                        format!("{collection} declares no field {name}"),
                    ));
                }
                continue;
            };
            if let Some((rule, why)) = misfit(field, &written.value) {
                return Err(violation(
                    Some(name),
                    rule,
                    format!("field {name} must {why}"),
                ));
            }
            if declared.table.is_some()
                && let Some(why) = super::row::unstorable(field, &written.value)
            {
                return Err(violation(
                    Some(name),
                    Rule::Column,
                    format!("field {name} is mirrored into a table and {why}"),
                ));
            }
        }
        let creates = before.fields.is_empty() && !before.is_deleted();
        let answers: Vec<(FieldName, bool)> = declared
            .fields
            .iter()
            .filter(|(name, f)| f.required && (creates || fields.contains_key(*name)))
            .map(|(name, f)| (name.clone(), f.nullable))
            .collect();
        if answers.is_empty() {
            return Ok(Pending::default());
        }
        Ok(Pending(Some(Box::new(Required {
            collection: collection.clone(),
            id: id.clone(),
            fields: answers,
        }))))
    }

    /// Judges a stored record as a whole, as `ferry schema check` does
    /// before a schema is applied: every violation, each field's first.
    pub fn check_record(
        &self,
        collection: &Collection,
        id: &RecordId,
        state: &RecordState,
    ) -> Vec<Violation> {
        if state.is_deleted() {
            return Vec::new();
        }
        let violation = blame(collection, id);
        let declared = match self.declared(collection, id) {
            Ok(Some(declared)) => declared,
            Ok(None) => return Vec::new(),
            Err(undeclared) => return vec![undeclared],
        };
        let mut found = Vec::new();
        for (name, held) in &state.fields {
            match declared.fields.get(name) {
                None if declared.mode == Mode::Strict && !held.value.is_null() => {
                    found.push(violation(
                        Some(name),
                        Rule::UndeclaredField,
                        format!("{collection} declares no field {name}"),
                    ));
                }
                Some(field) if !held.value.is_null() => {
                    if let Some((rule, why)) = misfit(field, &held.value) {
                        found.push(violation(
                            Some(name),
                            rule,
                            format!("field {name} must {why}"),
                        ));
                    }
                }
                _ => {}
            }
        }
        for (name, field) in declared.fields.iter().filter(|(_, f)| f.required) {
            if lacks(state, name, field.nullable) {
                found.push(violation(
                    Some(name),
                    Rule::Required,
                    format!("field {name} is required"),
                ));
            }
        }
        found
    }

    /// Judges a write before it is made: merges it into a copy of `before`
    /// with the one merge, then [`Schema::check`]s it. For clients, which
    /// refuse a write at the call, before anything is stored or queued.
    pub fn check_write(&self, before: &RecordState, change: &Change) -> Result<(), Violation> {
        if !self.judges(change.collection()) {
            return Ok(());
        }
        let after = crate::merge::apply_change(before.clone(), change.clone()).state;
        self.check(before, change, &after)
    }
}
