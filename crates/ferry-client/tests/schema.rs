//! The app's schema in the native client (docs/schema.md): fetched at sync,
//! kept in the replica, and the judge of every local write before it is
//! stored or queued; a write queued offline under an older schema and
//! refused by the newer one goes to the rejected list; records read into
//! the app's own types.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ferry_client::{Error, Query, Remote, Replica, ReplicaConfig, Token, sync_space};
use ferry_core::schema::{Rule, Schema};
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::json;

const SCHEMA: &str = r#"{"collections": {"todos": {"mode": "strict", "fields": {
    "title": {"type": "string", "max_length": 20, "required": true},
    "done": {"type": "boolean"}}}}}"#;

async fn apply(store: &dyn Store) {
    let json = serde_json::to_string(&Schema::parse(SCHEMA).unwrap()).unwrap();
    store.apply_app_schema(&json, 0).await.unwrap();
}

fn todos() -> Collection {
    Collection::new("todos").unwrap()
}

fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Todo {
    title: String,
    #[serde(default)]
    done: bool,
}

#[tokio::test]
async fn writes_are_judged_at_the_call_by_the_schema_fetched_at_sync() {
    let (store, _guard) = testing::fresh_store().await;
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    let server = Served::start(AppState::new(store.clone(), settings).await.unwrap()).await;
    let remote = Remote::new(&server.base, Arc::new(Token(server.token("ada")))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let space = SpaceId::new("user:ada").unwrap();
    let laptop = Replica::open(dir.path().join("laptop.db"), ReplicaConfig::default()).unwrap();
    let phone = Replica::open(dir.path().join("phone.db"), ReplicaConfig::default()).unwrap();

    // The phone syncs before the schema and then goes offline with a write
    // the schema will refuse, and one it will take.
    phone
        .put(&space, &todos(), &id("p0"), json!({"title": "Tea"}))
        .unwrap();
    sync_space(&phone, &remote, &space).await.unwrap();
    phone
        .put(&space, &todos(), &id("p1"), json!({"title": 7}))
        .unwrap();
    // Two changes to one record, the first of which the schema refuses.
    phone
        .patch(&space, &todos(), &id("p0"), json!({"title": 8}))
        .unwrap();
    phone
        .patch(&space, &todos(), &id("p0"), json!({"done": true}))
        .unwrap();
    phone
        .put(&space, &todos(), &id("p2"), json!({"title": "Eggs"}))
        .unwrap();

    apply(store.as_ref()).await;
    // Applied beside the server (as `ferry schema apply` does): its
    // answers name the new version within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    sync_space(&laptop, &remote, &space).await.unwrap();
    assert_eq!(laptop.app_schema().version, 1);

    // Refused at the call, naming the field and the rule; nothing queued.
    for (fields, field, rule) in [
        (json!({"title": "Milk", "done": "yes"}), "done", Rule::Type),
        (json!({"titel": "Milk"}), "titel", Rule::UndeclaredField),
        (json!({"done": true}), "title", Rule::Required),
    ] {
        match laptop.put(&space, &todos(), &id("t1"), fields.clone()) {
            Err(Error::Schema(v)) => {
                assert_eq!(
                    (v.field.as_ref().unwrap().as_str(), v.rule),
                    (field, rule),
                    "{fields}"
                );
                assert!(v.to_string().starts_with("todos/t1: "), "{v}");
            }
            other => panic!("{fields}: {other:?}"),
        }
    }
    assert_eq!(laptop.pending().unwrap(), 0);
    assert!(laptop.get(&space, &todos(), &id("t1")).unwrap().is_none());

    // A valid record, then a patch of one of its fields.
    laptop
        .put(&space, &todos(), &id("t1"), json!({"title": "Milk"}))
        .unwrap();
    laptop
        .patch(&space, &todos(), &id("t1"), json!({"done": true}))
        .unwrap();
    // A put that leaves the required title out would clear it: refused.
    assert!(matches!(
        laptop.put(&space, &todos(), &id("t1"), json!({"done": false})),
        Err(Error::Schema(_))
    ));
    sync_space(&laptop, &remote, &space).await.unwrap();

    // The phone comes back: the write the schema refuses goes to its
    // rejected list with the server's reason, the other syncs, and it
    // holds the schema from then on.
    let report = sync_space(&phone, &remote, &space).await.unwrap();
    assert!(report.rejected >= 1, "{report:?}");
    let rejected = phone.rejected().unwrap();
    assert!(
        rejected
            .iter()
            .any(|r| r.code == "invalid_change" && r.message.contains("title")),
        "{rejected:?}"
    );
    sync_space(&phone, &remote, &space).await.unwrap();
    assert_eq!(phone.app_schema().version, 1);
    assert!(phone.get(&space, &todos(), &id("p1")).unwrap().is_none());
    // The record whose change was refused is the server's copy again, not
    // the later change merged over the refused value.
    let tea = phone.get(&space, &todos(), &id("p0")).unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(tea.fields),
        json!({"title": "Tea"})
    );
    assert_eq!(phone.pending().unwrap(), 0);

    // Records into the app's own types.
    let milk: Todo = phone.get_as(&space, &todos(), &id("t1")).unwrap().unwrap();
    assert_eq!(
        milk,
        Todo {
            title: "Milk".into(),
            done: true
        }
    );
    let all: Vec<(RecordId, Todo)> = phone.list_as(&space, &todos(), &Query::new()).unwrap();
    let titles: Vec<&str> = all.iter().map(|(_, t)| t.title.as_str()).collect();
    assert!(
        titles.contains(&"Milk") && titles.contains(&"Eggs"),
        "{titles:?}"
    );
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        title: u64,
    }
    let err = phone
        .get_as::<Wrong>(&space, &todos(), &id("t1"))
        .unwrap_err();
    assert!(err.to_string().contains("todos/t1"), "{err}");

    // The schema stays in the replica file.
    drop(phone);
    let again = Replica::open(dir.path().join("phone.db"), ReplicaConfig::default()).unwrap();
    assert_eq!(again.app_schema().version, 1);
    assert!(
        again
            .put(&space, &todos(), &id("x"), json!({"title": 1}))
            .is_err()
    );
}
