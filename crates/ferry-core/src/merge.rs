//! The merge of PROTOCOL.md §2, as plain functions over values.
//!
//! The server applies each incoming [`Change`] with [`apply_change`]; a
//! replica folds a pulled record into its own copy with [`merge_states`].
//! Both are last-write-wins per field, with delete winning over everything,
//! so replicas that have seen the same writes hold the same state whatever
//! the order or duplication of delivery (the properties tested below).
//!
//! Conflicts are told by what each writer had seen, not by which write
//! arrived first. A change carries, per field, the HLC of the value its
//! author's replica held there (its *base*, [`crate::change::Bases`]).
//! Of two concurrent writes to a field, the one with the lower HLC lost,
//! and its author is told:
//! - when it arrives after the winner, it is reported to its sender at
//!   once ([`Merged::conflicts`]);
//! - when it arrived first and the winner replaces it without having seen
//!   it (the stored value is not the winner's base), it is reported to its
//!   author, whose replica learns of it at its next sync
//!   ([`Merged::displaced`]).
//!
//! A write that replaces exactly the value its author had seen is a plain
//! edit and tells no one; a replica is never in conflict with itself; and
//! a change without bases (an older client, a REST write) displaces
//! silently, as before bases existed. A delete dropping values its author
//! had not seen reports them the same way, as `record_deleted` with the
//! values, as does an upsert that reaches a tombstone.
//!
//! One assumption: an HLC names one write. Two different values carrying the
//! same HLC (which a correct client never produces, since the HLC includes
//! its node id and only moves forward) are treated as the same write seen
//! twice, and whichever arrived first stays.

use std::collections::BTreeMap;

use crate::change::{Bases, Change, Conflict, ConflictKind, Fields, RecordState};
use crate::conflict::record_deleted;
use crate::hlc::Hlc;
use crate::names::{ClientId, FieldName};

/// What applying one change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The record's state after the change.
    pub state: RecordState,
    /// Whether the state differs from before (and so takes a new `seq`).
    pub changed: bool,
    /// The parts of the change that lost: for the client that sent it.
    pub conflicts: Vec<Conflict>,
    /// Stored writes the change replaced without its author having seen
    /// them: for the replicas that made them.
    pub displaced: Vec<Displaced>,
}

/// A stored write that lost to a concurrent one, and whose it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displaced {
    /// The replica that made the lost write (the node of its HLC).
    pub author: ClientId,
    /// The report for it.
    pub conflict: Conflict,
}

/// Whether a write stamped `by` that replaces `stored`, with `base` the
/// bases its author sent, replaced it unseen: it says what it had seen,
/// that was not `stored`, and `stored` is another replica's.
fn unseen(base: Option<&Bases>, name: &FieldName, stored: &Hlc, by: &Hlc) -> bool {
    base.is_some_and(|b| b.get(name).and_then(Option::as_ref) != Some(stored))
        && stored.node() != by.node()
}

/// Applies `change` to a record whose state is `state` (use
/// `RecordState::default()` for a record that does not exist yet). Takes the
/// change by value so that its field values move into the state uncopied.
pub fn apply_change(mut state: RecordState, change: Change) -> Merged {
    let mut changed = false;
    let mut conflicts = Vec::new();
    let mut displaced = Vec::new();
    match change {
        Change::Delete {
            collection,
            id,
            hlc,
            base,
        } => {
            // Delete wins whatever the fields' HLCs; among deletes, the
            // highest HLC is kept so that the order of delivery is irrelevant.
            if state.deleted.as_ref().is_none_or(|d| hlc > *d) {
                if !state.is_deleted() {
                    // Values the deleting replica had not seen, by author.
                    let mut lost: BTreeMap<&ClientId, Fields> = BTreeMap::new();
                    for (name, stored) in &state.fields {
                        if unseen(base.as_ref(), name, &stored.hlc, &hlc) {
                            lost.entry(stored.hlc.node())
                                .or_default()
                                .insert(name.clone(), stored.clone());
                        }
                    }
                    for (author, fields) in lost {
                        if let Some(conflict) =
                            record_deleted(&collection, &id, &fields, Some(&hlc))
                        {
                            displaced.push(Displaced {
                                author: author.clone(),
                                conflict,
                            });
                        }
                    }
                }
                state.deleted = Some(hlc);
                state.fields.clear();
                changed = true;
            }
        }
        Change::Upsert {
            collection,
            id,
            fields,
            base,
        } => {
            if state.is_deleted() {
                conflicts.extend(record_deleted(
                    &collection,
                    &id,
                    &fields,
                    state.deleted.as_ref(),
                ));
            } else {
                for (name, incoming) in fields {
                    match state.fields.get_mut(&name) {
                        None => {
                            state.fields.insert(name, incoming);
                            changed = true;
                        }
                        Some(stored) if incoming.hlc > stored.hlc => {
                            if unseen(base.as_ref(), &name, &stored.hlc, &incoming.hlc) {
                                displaced.push(Displaced {
                                    author: stored.hlc.node().clone(),
                                    conflict: Conflict {
                                        collection: collection.clone(),
                                        id: id.clone(),
                                        field: Some(name),
                                        kind: ConflictKind::StaleWrite,
                                        yours: Some(stored.clone()),
                                        winner: Some(incoming.clone()),
                                    },
                                });
                            }
                            *stored = incoming;
                            changed = true;
                        }
                        Some(stored) if incoming.hlc < stored.hlc => {
                            conflicts.push(Conflict {
                                collection: collection.clone(),
                                id: id.clone(),
                                field: Some(name),
                                kind: ConflictKind::StaleWrite,
                                yours: Some(incoming),
                                winner: Some(stored.clone()),
                            });
                        }
                        // The same write seen twice.
                        Some(_) => {}
                    }
                }
            }
        }
    }
    Merged {
        state,
        changed,
        conflicts,
        displaced,
    }
}

/// Merges two states of the same record: the state a replica holds after
/// seeing both. Commutative, associative and idempotent.
pub fn merge_states(mut ours: RecordState, theirs: &RecordState) -> RecordState {
    if ours.is_deleted() || theirs.is_deleted() {
        let deleted = ours.deleted.take().max(theirs.deleted.clone());
        return RecordState {
            fields: Default::default(),
            deleted,
        };
    }
    for (name, incoming) in &theirs.fields {
        match ours.fields.get_mut(name) {
            Some(stored) if incoming.hlc <= stored.hlc => {}
            Some(stored) => *stored = incoming.clone(),
            None => {
                ours.fields.insert(name.clone(), incoming.clone());
            }
        }
    }
    ours
}

#[cfg(test)]
mod detection;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::FieldValue;
    use crate::hlc::Hlc;
    use crate::names::{ClientId, Collection, FieldName, RecordId};
    use proptest::prelude::*;
    use serde_json::json;

    fn hlc(p: u64, node: &str) -> Hlc {
        Hlc::new(p, 0, ClientId::new(node).unwrap()).unwrap()
    }

    fn upsert(pairs: &[(&str, serde_json::Value, Hlc)]) -> Change {
        Change::Upsert {
            collection: Collection::new("todos").unwrap(),
            id: RecordId::new("t-1").unwrap(),
            fields: pairs
                .iter()
                .map(|(n, v, h)| {
                    (
                        FieldName::new(*n).unwrap(),
                        FieldValue {
                            value: v.clone(),
                            hlc: h.clone(),
                        },
                    )
                })
                .collect(),
            base: None,
        }
    }

    fn delete(h: Hlc) -> Change {
        Change::Delete {
            collection: Collection::new("todos").unwrap(),
            id: RecordId::new("t-1").unwrap(),
            hlc: h,
            base: None,
        }
    }

    fn field<'a>(s: &'a RecordState, name: &str) -> &'a serde_json::Value {
        &s.fields[name].value
    }

    #[test]
    fn newer_field_wins_and_older_is_reported() {
        let m = apply_change(
            RecordState::default(),
            upsert(&[("title", json!("eggs"), hlc(2, "b"))]),
        );
        assert!(m.changed);
        let m = apply_change(m.state, upsert(&[("title", json!("milk"), hlc(1, "a"))]));
        assert!(!m.changed);
        assert_eq!(field(&m.state, "title"), &json!("eggs"));
        assert_eq!(m.conflicts.len(), 1);
        let c = &m.conflicts[0];
        assert_eq!(c.kind, ConflictKind::StaleWrite);
        assert_eq!(c.field.as_ref().unwrap().as_str(), "title");
        assert_eq!(c.yours.as_ref().unwrap().value, json!("milk"));
        assert_eq!(c.winner.as_ref().unwrap().value, json!("eggs"));
    }

    #[test]
    fn fields_merge_independently() {
        let m = apply_change(
            RecordState::default(),
            upsert(&[
                ("title", json!("a"), hlc(1, "a")),
                ("done", json!(false), hlc(1, "a")),
            ]),
        );
        let m = apply_change(m.state, upsert(&[("done", json!(true), hlc(2, "b"))]));
        assert!(m.changed);
        assert!(m.conflicts.is_empty());
        assert_eq!(field(&m.state, "title"), &json!("a"));
        assert_eq!(field(&m.state, "done"), &json!(true));
    }

    #[test]
    fn the_same_write_twice_changes_nothing() {
        let w = upsert(&[("title", json!("a"), hlc(1, "a"))]);
        let m = apply_change(RecordState::default(), w.clone());
        let again = apply_change(m.state.clone(), w);
        assert!(!again.changed);
        assert!(again.conflicts.is_empty());
        assert_eq!(again.state, m.state);
    }

    #[test]
    fn delete_wins_over_newer_fields_and_drops_values() {
        let m = apply_change(
            RecordState::default(),
            upsert(&[("title", json!("a"), hlc(9, "a"))]),
        );
        let m = apply_change(m.state, delete(hlc(1, "b")));
        assert!(m.changed);
        assert!(m.state.fields.is_empty());
        assert_eq!(m.state.deleted, Some(hlc(1, "b")));
        let m = apply_change(m.state, upsert(&[("title", json!("b"), hlc(10, "a"))]));
        assert!(!m.changed);
        assert!(m.state.fields.is_empty());
        assert_eq!(m.conflicts[0].kind, ConflictKind::RecordDeleted);
        assert!(m.conflicts[0].field.is_none());
    }

    #[test]
    fn deleting_an_unknown_record_leaves_a_tombstone() {
        let m = apply_change(RecordState::default(), delete(hlc(1, "a")));
        assert!(m.changed);
        assert!(m.state.is_deleted());
        let again = apply_change(m.state.clone(), delete(hlc(1, "a")));
        assert!(!again.changed);
    }

    // Properties. Writes are drawn from a small space of fields, nodes and
    // times so that collisions (same field, close HLCs, deletes) are common.
    // Each HLC carries one value (see the module docs).

    fn arb_change() -> impl Strategy<Value = Change> {
        let field = prop::sample::select(vec!["title", "done", "notes"]);
        let node = prop::sample::select(vec!["a", "b", "c"]);
        let write = (field, 0u64..20, node).prop_map(|(f, p, n)| {
            let h = hlc(p, n);
            (f, json!(h.to_string()), h)
        });
        prop_oneof![
            6 => prop::collection::vec(write, 1..3).prop_map(|ws| {
                let pairs: Vec<_> = ws.iter().map(|(f, v, h)| (*f, v.clone(), h.clone())).collect();
                upsert(&pairs)
            }),
            1 => (0u64..20, prop::sample::select(vec!["a", "b", "c"])).prop_map(|(p, n)| delete(hlc(p, n))),
        ]
    }

    fn apply_all<'a>(changes: impl IntoIterator<Item = &'a Change>) -> RecordState {
        changes.into_iter().fold(RecordState::default(), |s, c| {
            apply_change(s, c.clone()).state
        })
    }

    fn arb_state() -> impl Strategy<Value = RecordState> {
        prop::collection::vec(arb_change(), 0..6).prop_map(|cs| apply_all(&cs))
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_gives_the_same_state(
            changes in prop::collection::vec(arb_change(), 0..12),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..36),
        ) {
            let expected = apply_all(&changes);
            // Deliver every change at least once, in a shuffled order, with
            // some delivered again.
            let mut delivery: Vec<&Change> = changes.iter().collect();
            if !changes.is_empty() {
                for ix in &order {
                    delivery.push(&changes[ix.index(changes.len())]);
                }
                let n = delivery.len();
                for (i, ix) in order.iter().enumerate() {
                    delivery.swap(i % n, ix.index(n));
                }
            }
            prop_assert_eq!(apply_all(delivery), expected);
        }

        #[test]
        fn merge_is_commutative(a in arb_state(), b in arb_state()) {
            prop_assert_eq!(merge_states(a.clone(), &b), merge_states(b, &a));
        }

        #[test]
        fn merge_is_associative(a in arb_state(), b in arb_state(), c in arb_state()) {
            let left = merge_states(merge_states(a.clone(), &b), &c);
            let right = merge_states(a, &merge_states(b, &c));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in arb_state(), b in arb_state()) {
            prop_assert_eq!(merge_states(a.clone(), &a), a.clone());
            let once = merge_states(a, &b);
            prop_assert_eq!(merge_states(once.clone(), &b), once);
        }

        #[test]
        fn merging_states_equals_applying_both_histories(
            xs in prop::collection::vec(arb_change(), 0..8),
            ys in prop::collection::vec(arb_change(), 0..8),
        ) {
            let merged = merge_states(apply_all(&xs), &apply_all(&ys));
            prop_assert_eq!(merged, apply_all(xs.iter().chain(&ys)));
        }

        #[test]
        fn delete_wins(changes in prop::collection::vec(arb_change(), 0..12)) {
            let state = apply_all(&changes);
            let any_delete = changes.iter().any(|c| matches!(c, Change::Delete { .. }));
            prop_assert_eq!(state.is_deleted(), any_delete);
            if any_delete {
                prop_assert!(state.fields.is_empty());
            }
        }

        #[test]
        fn each_field_holds_its_highest_write(changes in prop::collection::vec(arb_change(), 0..12)) {
            let state = apply_all(&changes);
            if !state.is_deleted() {
                for c in &changes {
                    if let Change::Upsert { fields, .. } = c {
                        for (name, fv) in fields {
                            prop_assert!(state.fields[name].hlc >= fv.hlc);
                        }
                    }
                }
            }
        }

        #[test]
        fn changed_is_true_exactly_when_the_state_moves(
            before in prop::collection::vec(arb_change(), 0..6),
            change in arb_change(),
        ) {
            let state = apply_all(&before);
            let m = apply_change(state.clone(), change);
            prop_assert_eq!(m.changed, m.state != state);
        }
    }
}
