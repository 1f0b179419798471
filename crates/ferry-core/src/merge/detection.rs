//! Conflicts told by what each writer had seen: the stories of concurrent
//! edits in both orders, and the law that the conflicts every replica ends
//! up holding do not depend on the order or duplication of delivery.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::change::FieldValue;
use crate::conflict::{deleted_under, fold, settled_locally};
use crate::local::{LocalWrite, local_write};
use crate::names::{Collection, RecordId};

fn at(p: u64, node: &str) -> Hlc {
    Hlc::new(p, 0, ClientId::new(node).unwrap()).unwrap()
}

fn names() -> (Collection, RecordId) {
    (
        Collection::new("todos").unwrap(),
        RecordId::new("x").unwrap(),
    )
}

/// A replica's write over `state`, as the clients make it (with bases).
fn write(state: &RecordState, w: LocalWrite, p: u64, node: &str) -> (Change, RecordState) {
    let (c, id) = names();
    let done = local_write(state.clone(), &c, &id, w, &at(p, node)).unwrap();
    (done.change, done.state)
}

fn patch(state: &RecordState, fields: Value, p: u64, node: &str) -> (Change, RecordState) {
    write(state, LocalWrite::patch(fields).unwrap(), p, node)
}

/// The record `{"title": "orig"}` as every replica holds it.
fn orig() -> RecordState {
    patch(&RecordState::default(), json!({"title": "orig"}), 1, "o").1
}

/// Applies `changes` in order; the reports, by the replica they are for.
fn deliver(mut state: RecordState, changes: &[Change]) -> (RecordState, Vec<(ClientId, Conflict)>) {
    let mut told = Vec::new();
    for change in changes {
        let sender = change.max_hlc().unwrap().node().clone();
        let m = apply_change(state, change.clone());
        told.extend(m.conflicts.into_iter().map(|c| (sender.clone(), c)));
        told.extend(m.displaced.into_iter().map(|d| (d.author, d.conflict)));
        state = m.state;
    }
    (state, told)
}

fn only(told: &[(ClientId, Conflict)], node: &str) -> Vec<Conflict> {
    told.iter()
        .filter(|(to, _)| to.as_str() == node)
        .map(|(_, c)| c.clone())
        .collect()
}

#[test]
fn concurrent_edits_are_told_to_the_loser_in_either_order() {
    let base = orig();
    let (a, _) = patch(&base, json!({"title": "A older"}), 5, "a");
    let (b, _) = patch(&base, json!({"title": "B newer"}), 6, "b");
    for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let (state, told) = deliver(base.clone(), &order);
        assert_eq!(state.fields["title"].value, json!("B newer"));
        let to_a = only(&told, "a");
        assert_eq!(to_a.len(), 1, "{order:?}");
        assert_eq!(to_a[0].kind, ConflictKind::StaleWrite);
        assert_eq!(to_a[0].yours.as_ref().unwrap().value, json!("A older"));
        assert_eq!(to_a[0].winner.as_ref().unwrap().value, json!("B newer"));
        assert!(only(&told, "b").is_empty());
        assert!(only(&told, "o").is_empty());
    }
}

#[test]
fn an_edit_made_knowing_the_value_it_replaces_tells_no_one() {
    let (a, after_a) = patch(&orig(), json!({"title": "A"}), 5, "a");
    // B pulled A's edit, then wrote.
    let (b, _) = patch(&after_a, json!({"title": "B"}), 6, "b");
    let (_, told) = deliver(orig(), &[a, b]);
    assert!(told.is_empty(), "{told:?}");
}

#[test]
fn writes_without_bases_behave_as_before() {
    let (mut a, _) = patch(&orig(), json!({"title": "A older"}), 5, "a");
    let (mut b, _) = patch(&orig(), json!({"title": "B newer"}), 6, "b");
    for c in [&mut a, &mut b] {
        if let Change::Upsert { base, .. } = c {
            *base = None;
        }
    }
    // Arriving first, the older write is replaced silently; arriving
    // second, it is refused and reported to its sender.
    assert!(deliver(orig(), &[a.clone(), b.clone()]).1.is_empty());
    assert_eq!(only(&deliver(orig(), &[b, a]).1, "a").len(), 1);
}

#[test]
fn a_write_lost_to_a_delete_is_reported_with_its_values_in_either_order() {
    let (del, _) = write(&orig(), LocalWrite::Delete, 6, "b");
    let (edit, _) = patch(&orig(), json!({"note": "LOSTWRITE-123"}), 5, "a");
    for order in [[del.clone(), edit.clone()], [edit.clone(), del.clone()]] {
        let (state, told) = deliver(orig(), &order);
        assert!(state.is_deleted());
        let to_a = only(&told, "a");
        assert_eq!(to_a.len(), 1, "{order:?}");
        assert_eq!(to_a[0].kind, ConflictKind::RecordDeleted);
        assert_eq!(
            Value::Object(crate::conflict::restorable(&to_a[0])),
            json!({"note": "LOSTWRITE-123"})
        );
        assert_eq!(to_a[0].winner.as_ref().unwrap().hlc, at(6, "b"));
        assert!(only(&told, "b").is_empty());
        // What the record held before, the deleting replica had seen.
        assert!(only(&told, "o").is_empty());
    }
}

#[test]
fn of_three_writers_every_loser_is_told_and_the_winner_is_not() {
    let writes: Vec<Change> = [("a", 5), ("b", 6), ("c", 7)]
        .iter()
        .map(|(n, p)| patch(&orig(), json!({"title": n}), *p, n).0)
        .collect();
    let orders = [
        [0, 1, 2],
        [2, 1, 0],
        [1, 0, 2],
        [0, 2, 1],
        [1, 2, 0],
        [2, 0, 1],
    ];
    for order in orders {
        let changes: Vec<Change> = order.iter().map(|&i| writes[i].clone()).collect();
        let (_, told) = deliver(orig(), &changes);
        assert_eq!(only(&told, "a").len(), 1, "{order:?}");
        assert_eq!(only(&told, "b").len(), 1, "{order:?}");
        assert!(only(&told, "c").is_empty(), "{order:?}");
    }
}

#[test]
fn a_replica_is_never_in_conflict_with_itself() {
    // The replica forgot what it wrote (its file was lost) and writes the
    // field again without a base.
    let (first, _) = patch(&orig(), json!({"title": "one"}), 5, "a");
    let (again, _) = patch(&RecordState::default(), json!({"title": "two"}), 6, "a");
    let (_, told) = deliver(orig(), &[first, again]);
    assert!(told.is_empty(), "{told:?}");
}

// The law. Replicas a, b and c hold `orig` and each make a few writes
// offline (patches, puts, a delete), each seeing only its own; then all
// changes reach the server in any order that keeps each replica's own
// order, some twice. Each replica keeps the reports it is given as the
// clients do (settled ones dropped, one per subject, a pulled tombstone
// gathering the record's reports). Whatever the order, each replica ends
// with exactly: for each field whose last write of its own did not end up
// current, that write; for a record deleted by others, every value it
// wrote; nothing else.

#[derive(Debug, Clone)]
enum Op {
    Patch(&'static str, u8),
    Put(&'static str, u8),
    Delete,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let field = prop::sample::select(vec!["title", "done", "note"]);
    prop_oneof![
        4 => (field.clone(), any::<u8>()).prop_map(|(f, v)| Op::Patch(f, v)),
        2 => (field, any::<u8>()).prop_map(|(f, v)| Op::Put(f, v)),
        1 => Just(Op::Delete),
    ]
}

struct Replica {
    node: &'static str,
    state: RecordState,
    changes: Vec<Change>,
}

fn offline(node: &'static str, ops: &[Op], times: &[u64]) -> Replica {
    let mut r = Replica {
        node,
        state: orig(),
        changes: Vec::new(),
    };
    for (op, p) in ops.iter().zip(times) {
        if r.state.is_deleted() {
            break;
        }
        let w = match op {
            Op::Patch(f, v) => LocalWrite::patch(json!({ *f: v })).unwrap(),
            Op::Put(f, v) => LocalWrite::put(json!({ *f: v })).unwrap(),
            Op::Delete => LocalWrite::Delete,
        };
        let (change, state) = write(&r.state, w, *p, node);
        r.changes.push(change);
        r.state = state;
    }
    r
}

/// What replica `r` ends up holding, given the reports in delivery order
/// and the record's final state.
fn inbox(r: &Replica, told: &[(ClientId, Conflict)], end: &RecordState) -> Vec<Conflict> {
    let me = ClientId::new(r.node).unwrap();
    let mut held: Vec<Conflict> = Vec::new();
    for (_, c) in told.iter().filter(|(to, _)| *to == me) {
        if settled_locally(c, &r.state, &me) {
            continue;
        }
        match held.iter().position(|h| fold(h, c).is_some()) {
            Some(i) => held[i] = fold(&held[i], c).unwrap(),
            None => held.push(c.clone()),
        }
    }
    if end.is_deleted() {
        let (c, id) = names();
        held = deleted_under(&c, &id, &[], &held, end.deleted.as_ref(), &r.state, &me)
            .into_iter()
            .collect();
    }
    held
}

/// What replica `r` must end up holding: by subject, the lost values.
fn expected(r: &Replica, end: &RecordState) -> BTreeMap<String, Value> {
    let own: BTreeMap<String, &FieldValue> = r
        .state
        .fields
        .iter()
        .filter(|(_, f)| f.hlc.node().as_str() == r.node)
        .map(|(n, f)| (n.to_string(), f))
        .collect();
    let mut out = BTreeMap::new();
    if r.state.is_deleted() {
        return out;
    }
    if end.is_deleted() {
        if !own.is_empty() {
            let values: serde_json::Map<String, Value> = own
                .iter()
                .map(|(n, f)| (n.clone(), f.value.clone()))
                .collect();
            out.insert("deleted".to_owned(), Value::Object(values));
        }
        return out;
    }
    for (name, f) in own {
        if end.fields[name.as_str()].hlc != f.hlc {
            out.insert(name, f.value.clone());
        }
    }
    out
}

fn held_by_subject(held: &[Conflict], end: &RecordState) -> BTreeMap<String, Value> {
    held.iter()
        .map(|c| {
            let yours = c.yours.clone().unwrap();
            if let (Some(field), Some(winner)) = (&c.field, &c.winner) {
                assert!(winner.hlc > yours.hlc, "{c:?}");
                assert!(!end.is_deleted() || c.kind == ConflictKind::RecordDeleted);
                (field.to_string(), yours.value)
            } else {
                (
                    "deleted".to_owned(),
                    Value::Object(crate::conflict::restorable(c)),
                )
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn every_loser_is_told_once_whatever_the_order_of_delivery(
        ops in prop::collection::vec(prop::collection::vec(arb_op(), 1..4), 3),
        times in prop::collection::vec(prop::collection::btree_set(2u64..40, 3), 3),
        order in prop::collection::vec(0usize..3, 0..24),
        again in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let replicas: Vec<Replica> = ["a", "b", "c"]
            .iter()
            .zip(&ops)
            .zip(&times)
            .map(|((n, ops), t)| offline(n, ops, &t.iter().copied().collect::<Vec<_>>()))
            .collect();
        // An interleaving that keeps each replica's own order.
        let mut next = [0usize; 3];
        let mut delivery: Vec<Change> = Vec::new();
        for k in order.iter().copied().chain([0, 1, 2].iter().flat_map(|&k| std::iter::repeat_n(k, 3))) {
            if let Some(c) = replicas[k].changes.get(next[k]) {
                delivery.push(c.clone());
                next[k] += 1;
            }
        }
        // Some changes arrive a second time, later.
        for ix in &again {
            let c = delivery[ix.index(delivery.len())].clone();
            delivery.push(c);
        }
        let (end, told) = deliver(orig(), &delivery);
        for r in &replicas {
            let held = inbox(r, &told, &end);
            prop_assert_eq!(
                held_by_subject(&held, &end),
                expected(r, &end),
                "replica {} after {:?}", r.node, delivery
            );
        }
        prop_assert!(told.iter().all(|(to, _)| to.as_str() != "o"));
    }
}
