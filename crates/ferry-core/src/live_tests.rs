#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

type Records = BTreeMap<String, Map<String, Value>>;

fn query(json: Value) -> Query {
    Query::from_json(&json).unwrap()
}

fn fields(json: Value) -> Map<String, Value> {
    json.as_object().cloned().unwrap()
}

/// A consumer of the engine's results: a window of ids kept by applying
/// what `take` hands out, as the clients do.
fn follow(window: &mut Vec<Arc<str>>, change: Option<WindowChange>) {
    match change {
        None => {}
        Some(WindowChange::Reset(ids)) => *window = ids,
        Some(WindowChange::Splices(splices)) => {
            for s in splices {
                s.apply(window, |id| id.clone());
            }
        }
    }
}

fn ids(window: &[Arc<str>]) -> Vec<&str> {
    window.iter().map(|id| &**id).collect()
}

#[test]
fn a_record_enters_moves_changes_and_leaves_the_window() {
    let q = query(json!({"where": [["done", "=", false]], "orderBy": ["pos", "asc"], "limit": 2}));
    let mut live = LiveQuery::new(q);
    let a = fields(json!({"done": false, "pos": 1}));
    let b = fields(json!({"done": false, "pos": 2}));
    let c = fields(json!({"done": true, "pos": 0}));
    live.load([("a", &a), ("b", &b), ("c", &c)]);
    let mut seen = Vec::new();
    follow(&mut seen, live.take());
    assert_eq!(ids(&seen), ["a", "b"]);
    assert_eq!(live.take(), None, "nothing changed");

    // Not matching before or after: nothing.
    assert!(!live.apply("c", Some(&fields(json!({"done": true, "pos": 5})))));
    assert_eq!(live.take(), None);
    // Enters first, and pushes b out of the window.
    assert!(live.apply("c", Some(&fields(json!({"done": false, "pos": 0})))));
    let change = live.take();
    assert_eq!(
        change,
        Some(WindowChange::Splices(vec![
            Splice::Insert(0, "c".into()),
            Splice::Remove(2)
        ]))
    );
    follow(&mut seen, change);
    assert_eq!(ids(&seen), ["c", "a"]);
    // Changes in place.
    live.apply(
        "a",
        Some(&fields(json!({"done": false, "pos": 1, "title": "x"}))),
    );
    let change = live.take();
    assert_eq!(
        change,
        Some(WindowChange::Splices(vec![Splice::Replace(1, "a".into())]))
    );
    // Leaves: b comes back in.
    live.apply("c", None);
    follow(&mut seen, live.take());
    assert_eq!(ids(&seen), ["a", "b"]);
    assert_eq!(live.matches(), 2);
}

#[test]
fn list_and_live_agree_on_a_missing_field_and_mixed_types() {
    let q = query(json!({"where": [["n", "!=", 3]], "orderBy": ["n", "desc"]}));
    let (a, b, c, d) = (
        fields(json!({"n": "text"})),
        fields(json!({"m": 1})),
        fields(json!({"n": 3})),
        fields(json!({"n": true})),
    );
    let got = run(&q, [("a", &a), ("b", &b), ("c", &c), ("d", &d)]);
    assert_eq!(ids(&got), ["a", "d", "b"]);
}

#[test]
fn a_tick_of_many_changes_is_handed_out_whole() {
    let mut live = LiveQuery::new(query(json!({"orderBy": ["n", "asc"]})));
    live.load([]);
    let mut seen = Vec::new();
    follow(&mut seen, live.take());
    let page: Vec<(String, Map<String, Value>)> = (0..200)
        .map(|i| (format!("r{i:03}"), fields(json!({"n": 200 - i}))))
        .collect();
    for (id, f) in &page {
        live.apply(id, Some(f));
    }
    let change = live.take();
    assert!(matches!(change, Some(WindowChange::Reset(_))));
    follow(&mut seen, change);
    assert_eq!(seen.len(), 200);
    assert_eq!(&*seen[0], "r199");
}

// The property: after every tick of random changes, a live query's
// window, and a consumer following its splices, equal the query run from
// scratch over the records as they now are.

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(json!(b))),
        (0i64..6).prop_map(|n| Some(json!(n))),
        prop::sample::select(vec!["a", "b", "B", "é"]).prop_map(|s| Some(json!(s))),
    ]
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    (value(), value(), value()).prop_map(|(n, t, d)| {
        let mut m = Map::new();
        for (name, v) in [("n", n), ("t", t), ("d", d)] {
            if let Some(v) = v {
                m.insert(name.to_owned(), v);
            }
        }
        m
    })
}

fn a_query() -> impl Strategy<Value = Query> {
    let field = prop::sample::select(vec!["n", "t", "d"]);
    let op = prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]);
    let filter = (field.clone(), op, value())
        .prop_map(|(f, op, v)| json!([f, op, v.unwrap_or(Value::Null)]));
    let in_filter = (field.clone(), prop::collection::vec(value(), 0..3)).prop_map(|(f, vs)| {
        json!([
            f,
            "in",
            vs.into_iter()
                .map(|v| v.unwrap_or(Value::Null))
                .collect::<Vec<_>>()
        ])
    });
    let filters = prop::collection::vec(prop_oneof![3 => filter, 1 => in_filter], 0..3);
    let order = prop::collection::vec(
        (field, prop::sample::select(vec!["asc", "desc"])).prop_map(|(f, d)| json!([f, d])),
        0..3,
    );
    (filters, order, prop::option::of(0u64..6), 0u64..5).prop_map(|(w, o, limit, offset)| {
        query(json!({"where": w, "orderBy": o, "limit": limit, "offset": offset}))
    })
}

/// A change: a record id and its new state (`None`: deleted).
type Tick = Vec<(String, Option<Map<String, Value>>)>;

fn changes() -> impl Strategy<Value = Vec<Tick>> {
    let id =
        prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h"]).prop_map(str::to_owned);
    let change = (id, prop::option::weighted(0.8, record()));
    prop::collection::vec(prop::collection::vec(change, 1..5), 1..25)
}

fn scratch(q: &Query, records: &Records) -> Vec<String> {
    run(q, records.iter().map(|(id, f)| (id.as_str(), f)))
        .iter()
        .map(|id| id.to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_live_query_always_equals_its_query_run_from_scratch(
        q in a_query(),
        start in prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_owned), record(), 0..4),
        ticks in changes(),
    ) {
        let mut records: Records = start;
        let mut live = LiveQuery::new(q.clone());
        live.load(records.iter().map(|(id, f)| (id.as_str(), f)));
        let mut seen = Vec::new();
        follow(&mut seen, live.take());
        prop_assert_eq!(ids(&seen), scratch(&q, &records));
        for tick in ticks {
            for (id, state) in tick {
                let matched = live.apply(&id, state.as_ref());
                prop_assert_eq!(
                    matched,
                    state.as_ref().is_some_and(|f| q.matches(|n| f.get(n)))
                );
                match state {
                    Some(f) => records.insert(id, f),
                    None => records.remove(&id),
                };
            }
            follow(&mut seen, live.take());
            let want = scratch(&q, &records);
            prop_assert_eq!(ids(&seen), want.clone(), "the consumer's window");
            prop_assert_eq!(live.window().collect::<Vec<_>>(), want, "the engine's window");
            prop_assert_eq!(live.take(), None);
        }
    }
}
