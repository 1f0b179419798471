//! Queries in the native client: `list` and `Replica::watch` against
//! ferry-core's query run over every record (the browser client runs the
//! same core), on random records and random queries; and a watch's rows
//! keeping their `Arc` when they did not change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ferry_client::{Op, Order, Query, Replica, ReplicaConfig};
use ferry_core::{Collection, RecordId, SpaceId};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn names() -> (SpaceId, Collection) {
    (
        SpaceId::new("user:u").unwrap(),
        Collection::new("todos").unwrap(),
    )
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn titles(rows: &[Arc<ferry_client::LocalRecord>]) -> Vec<String> {
    rows.iter()
        .map(|r| r.fields["title"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn a_watch_follows_writes_and_keeps_unchanged_rows() {
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let (space, todos) = names();
    let put = |id: &str, v: Value| {
        r.put(&space, &todos, &RecordId::new(id).unwrap(), fields(v))
            .unwrap()
    };
    put("a", json!({"title": "Apples", "done": false}));
    put("b", json!({"title": "Bread", "done": false}));
    put("c", json!({"title": "Cheese", "done": true}));
    let query = Query::new()
        .filter("done", Op::Eq, false)
        .order_by("title", Order::Asc)
        .limit(2);
    let watch = r.watch(&space, &todos, &query).unwrap();
    let first = watch.current();
    assert_eq!(titles(&first.rows), ["Apples", "Bread"]);

    // Outside the query: no new result.
    put("c", json!({"title": "Camembert", "done": true}));
    assert!(Arc::ptr_eq(&first, &watch.current()));
    // In place: the other row is the same Arc.
    put("b", json!({"title": "Brioche", "done": false}));
    let second = watch.current();
    assert_eq!(titles(&second.rows), ["Apples", "Brioche"]);
    assert!(Arc::ptr_eq(&first.rows[0], &second.rows[0]));
    // Enters first and pushes Brioche out; a delete lets it back.
    put("z", json!({"title": "Almonds", "done": false}));
    assert_eq!(titles(&watch.current().rows), ["Almonds", "Apples"]);
    r.delete(&space, &todos, &RecordId::new("a").unwrap())
        .unwrap();
    assert_eq!(titles(&watch.current().rows), ["Almonds", "Brioche"]);
    // A record without the field compares as null: `!=` keeps it.
    put("n", json!({"title": "No done field"}));
    let not_done = r
        .list(&space, &todos, &Query::new().filter("done", Op::Ne, true))
        .unwrap();
    let ids: Vec<&str> = not_done.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids, ["b", "n", "z"]);
}

#[tokio::test]
async fn a_watch_wakes_its_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let (space, todos) = names();
    let mut watch = r.watch(&space, &todos, &Query::new()).unwrap();
    assert!(watch.current().rows.is_empty());
    let writer = r.clone();
    let (s, t) = (space.clone(), todos.clone());
    tokio::spawn(async move {
        writer
            .put(
                &s,
                &t,
                &RecordId::new("x").unwrap(),
                fields(json!({"title": "X"})),
            )
            .unwrap();
    });
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed())
        .await
        .unwrap();
    assert_eq!(titles(&next.rows), ["X"]);
}

// The property: on random records and queries, `list` (SQLite narrowing,
// the core judging) and a watch kept through random writes both equal
// the core's query over all records.

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(json!(b))),
        (0i64..4).prop_map(|n| Some(json!(n))),
        Just(Some(json!(1.0))),
        prop::sample::select(vec!["a", "b", "1"]).prop_map(|s| Some(json!(s))),
        Just(Some(json!([1]))),
        // Past 2^53, where doubles and SQLite's integers part ways.
        Just(Some(json!(9_007_199_254_740_992u64))),
        Just(Some(json!(9_007_199_254_740_993u64))),
    ]
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    (value(), value()).prop_map(|(n, t)| {
        let mut m = Map::new();
        for (name, v) in [("n", n), ("t", t)] {
            if let Some(v) = v {
                m.insert(name.to_owned(), v);
            }
        }
        m
    })
}

fn a_query() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec!["n", "t"]);
    let op = prop::sample::select(vec!["=", "=", "!=", "<", ">="]);
    let filter = (field.clone(), op, value()).prop_map(|(f, op, v)| json!([f, op, v]));
    let order = (field, prop::sample::select(vec!["asc", "desc"])).prop_map(|(f, d)| json!([f, d]));
    (
        prop::collection::vec(filter, 0..3),
        prop::option::of(order),
        prop::option::of(0u64..4),
        0u64..3,
    )
        .prop_map(|(w, o, limit, offset)| {
            json!({"where": w, "orderBy": o.map(|o| vec![o]).unwrap_or_default(),
                   "limit": limit, "offset": offset})
        })
}

fn ids_of(rows: &[impl std::ops::Deref<Target = ferry_client::LocalRecord>]) -> Vec<String> {
    rows.iter().map(|r| r.id.as_str().to_owned()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn list_and_watch_equal_the_core_query(
        json in a_query(),
        writes in prop::collection::vec(
            (prop::sample::select(vec!["a", "b", "c", "d", "e"]), prop::option::weighted(0.85, record())),
            1..16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
        let (space, todos) = names();
        let query = Query::from_json(&json).unwrap();
        let core = ferry_core::query::Query::from_json(&json).unwrap();
        let watch = r.watch(&space, &todos, &query).unwrap();
        for (id, state) in writes {
            let id = RecordId::new(id).unwrap();
            match state {
                // An empty put would hold no field: give it one. A
                // deleted record stays deleted (the put is refused).
                Some(mut f) => {
                    f.insert("k".into(), json!(1));
                    let _ = r.put(&space, &todos, &id, f);
                }
                None => {
                    let _ = r.delete(&space, &todos, &id);
                }
            }
            let all = r.list(&space, &todos, &Query::new()).unwrap();
            let want: Vec<String> = ferry_core::live::run(&core, all.iter().map(|x| (x.id.as_str(), &x.fields)))
                .iter()
                .map(|id| id.to_string())
                .collect();
            let listed = r.list(&space, &todos, &query).unwrap();
            let listed: Vec<&ferry_client::LocalRecord> = listed.iter().collect();
            prop_assert_eq!(ids_of(&listed), want.clone(), "list");
            prop_assert_eq!(ids_of(&watch.current().rows), want, "watch");
        }
    }
}

#[test]
fn a_field_the_schema_indexes_gets_an_sqlite_index_that_equality_reads_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let r = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let schema = ferry_core::schema::Schema::parse(
        r#"{"collections": {"todos": {"fields": {"list": {"type": "string", "index": true}}}}}"#,
    )
    .unwrap();
    r.hold_app_schema(ferry_client::typed::HeldSchema {
        version: 1,
        schema: Some(schema),
    })
    .unwrap();
    let (space, todos) = names();
    for i in 0..50 {
        let list = if i % 5 == 0 { "home" } else { "work" };
        r.put(
            &space,
            &todos,
            &RecordId::new(format!("t{i}")).unwrap(),
            fields(json!({"list": list, "title": format!("T{i}")})),
        )
        .unwrap();
    }
    let home = r
        .list(&space, &todos, &Query::new().filter("list", Op::Eq, "home"))
        .unwrap();
    assert_eq!(home.len(), 10);
    // The index exists, and SQLite can read the statement `list` runs for
    // an equality through it (the statement names it).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id, fields FROM records INDEXED BY \"ix:todos:list\"
             WHERE space = ? AND collection = ?
             AND deleted IS NULL AND json_extract(fields, '$.list.value') = ?",
        )
        .unwrap()
        .query_map(("user:u", "todos", "home"), |row| row.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter().any(|step| step.contains("ix:todos:list")),
        "{plan:?}"
    );
}
