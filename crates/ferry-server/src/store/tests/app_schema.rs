//! The app's schema in storage: versions in order, an apply that lost a
//! race refused, and pushes checked against the newest version only.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::{AppSchema, StoreError};

fn strict_todos() -> ferry_core::schema::Schema {
    ferry_core::schema::Schema::parse(
        &json!({"collections": {"todos": {"mode": "strict", "fields": {
            "title": {"type": "string", "max_length": 20, "required": true}}}}})
        .to_string(),
    )
    .unwrap()
}

pub async fn app_schemas_take_versions_in_order(store: Arc<dyn Store>) {
    assert_eq!(store.app_schema().await.unwrap(), (0, None));
    assert_eq!(
        store
            .apply_app_schema("{\"collections\": {}}", 0)
            .await
            .unwrap(),
        1
    );
    // Another apply from the same starting point lost the race.
    assert!(matches!(
        store.apply_app_schema("{}", 0).await,
        Err(StoreError::Conflict(_))
    ));
    let json = serde_json::to_string(&strict_todos()).unwrap();
    assert_eq!(store.apply_app_schema(&json, 1).await.unwrap(), 2);
    assert_eq!(store.app_schema().await.unwrap(), (2, Some(json.clone())));
    // Which version a schema was, if it ever was.
    let version_of = |j: &str| {
        let store = store.clone();
        let j = j.to_owned();
        async move { store.app_schema_version_of(&j).await.unwrap() }
    };
    assert_eq!(version_of("{\"collections\": {}}").await, Some(1));
    assert_eq!(version_of(&json).await, Some(2));
    assert_eq!(version_of("{}").await, None);
}

pub async fn pushes_are_checked_against_the_newest_schema(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let json = serde_json::to_string(&strict_todos()).unwrap();
    store.apply_app_schema(&json, 0).await.unwrap();
    let held = |version, schema| Some(Arc::new(AppSchema { version, schema }));
    let good = upsert("t1", "title", json!("Milk"), hlc(1, "c"));
    let bad = upsert("t2", "title", json!(7), hlc(2, "c"));

    // Held by a node that has not loaded version 1 yet: the batch comes
    // back untouched, to push again under the new schema.
    let mut stale = batch("c", "b-1", vec![good.clone(), bad.clone()]);
    stale.schema = held(0, None);
    match store.push(&s, stale).await {
        Err(StoreError::SchemaChanged {
            version: 1,
            batch: Some(returned),
        }) => assert_eq!(returned.changes.len(), 2),
        other => panic!("{other:?}"),
    }

    // Under version 1: the second change breaks it, so nothing applies.
    let mut checked = batch("c", "b-1", vec![good.clone(), bad]);
    checked.schema = held(1, Some(strict_todos()));
    match store.push(&s, checked).await {
        Err(StoreError::Invalid {
            index: 1,
            violation,
        }) => {
            assert_eq!(violation.field.as_ref().map(|f| f.as_str()), Some("title"));
        }
        other => panic!("{other:?}"),
    }
    assert!(records(store.as_ref(), &s).await.is_empty());

    // A record created without its required field is refused; a valid one
    // is taken, and a patch of it may leave the required field alone.
    let mut ok = batch("c", "b-2", vec![good]);
    ok.schema = held(1, Some(strict_todos()));
    assert_eq!(store.push(&s, ok).await.unwrap().applied, 1);
    let mut cleared = batch(
        "c",
        "b-3",
        vec![upsert("t1", "title", serde_json::Value::Null, hlc(3, "c"))],
    );
    cleared.schema = held(1, Some(strict_todos()));
    assert!(matches!(
        store.push(&s, cleared).await,
        Err(StoreError::Invalid { index: 0, .. })
    ));
    assert_eq!(records(store.as_ref(), &s).await.len(), 1);
}
