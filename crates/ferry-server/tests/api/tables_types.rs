//! Every field type a mirrored table holds (docs/tables.md), written by a
//! push and read back by the app's own SQL: text with the characters an
//! array literal escapes, the widest integers, floats, booleans,
//! timestamps with offsets and fractions, JSON of each shape, and arrays
//! of each item type, empty and full.

use axum::http::StatusCode;
use serde_json::json;

use super::tables::{app_db, apply, card, row, sync};
use super::*;

const SCHEMA: &str = r#"{"collections": {"cards": {"table": "cards",
    "space_column": "workspace_id", "fields": {
        "title":   {"type": "string"},
        "state":   {"type": "enum", "values": ["open", "closed"]},
        "votes":   {"type": "integer"},
        "score":   {"type": "number"},
        "done":    {"type": "boolean"},
        "due":     {"type": "timestamp"},
        "meta":    {"type": "json"},
        "tags":    {"type": "array", "items": "string"},
        "counts":  {"type": "array", "items": "integer"},
        "weights": {"type": "array", "items": "number"},
        "flags":   {"type": "array", "items": "boolean"},
        "dates":   {"type": "array", "items": "timestamp"}}}}}"#;

#[tokio::test]
async fn every_type_reaches_its_column_as_the_device_wrote_it() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let tricky = [
        "a\"b",
        "back\\slash",
        "{,}",
        "NULL",
        "",
        "ünï ✓",
        " spaced ",
    ];
    let full = json!({
        "title": "He said \"hi\" \\ {a,b} NULL",
        "state": "closed",
        "votes": -9_007_199_254_740_991_i64,
        "score": -0.25,
        "done": false,
        "due": "2026-12-24T18:00:00.123456+05:30",
        "meta": {"a": [1, "two", null], "quote": "\"", "nested": {"x": true}},
        "tags": tricky,
        "counts": [1, -2, 9_007_199_254_740_991_i64],
        "weights": [0.5, -1e-7, 1e300],
        "flags": [true, false],
        "dates": ["2026-01-01T00:00:00Z", "2026-06-01T12:00:00-07:00"],
    });
    let sparse = json!({
        "title": "",
        "meta": "just text",
        "tags": [],
        "counts": [],
        "weights": [],
        "flags": [],
        "dates": [],
    });
    let r = sync(
        &api,
        "b1",
        0,
        vec![
            card("full", full.clone(), &hlc(1, "laptop")),
            card("sparse", sparse, &hlc(2, "laptop")),
            card("bare", json!({"meta": 3}), &hlc(3, "laptop")),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut db = app_db(&api).await;

    let got = row(&mut db, "full").await.unwrap();
    for field in [
        "title", "state", "votes", "score", "done", "meta", "counts", "flags",
    ] {
        assert_eq!(got[field], full[field], "{field}");
    }
    assert_eq!(got["tags"], json!(tricky));
    assert_eq!(got["weights"], json!([0.5, -1e-7, 1e300]));
    assert_eq!(got["due"], "2026-12-24T12:30:00.123456+00:00");
    assert_eq!(
        got["dates"],
        json!(["2026-01-01T00:00:00+00:00", "2026-06-01T19:00:00+00:00"])
    );
    // The app's SQL reads them as the types they are.
    let typed: (i64, f64, bool, i32, String) = sqlx::query_as(
        "SELECT votes, weights[3], flags[1], cardinality(tags), meta->>'quote'
         FROM public.cards WHERE id = 'full'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        typed,
        (-9_007_199_254_740_991, 1e300, true, 7, "\"".to_owned())
    );

    let got = row(&mut db, "sparse").await.unwrap();
    assert_eq!(got["title"], "");
    assert_eq!(got["meta"], "just text");
    for field in ["tags", "counts", "weights", "flags", "dates"] {
        assert_eq!(got[field], json!([]), "{field}");
    }
    let got = row(&mut db, "bare").await.unwrap();
    assert_eq!(got["meta"], 3);
    for field in ["title", "votes", "score", "done", "due", "tags", "dates"] {
        assert_eq!(got[field], Value::Null, "{field}");
    }
}
