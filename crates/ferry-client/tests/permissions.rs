//! The schema's permissions in the native client (docs/server-rules.md):
//! a write they forbid is refused at the call, with the role the server
//! last reported and the author it recorded, and never queued; a write
//! queued before the replica knew its role, and refused by the server,
//! goes to the rejected list and the record returns to the server's copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Error, Replica, ReplicaConfig, sync_space};
use ferry_core::schema::{PermissionRule, Schema};
use ferry_core::{ClientId, Collection, RecordId, SpaceId};
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings};
use serde_json::{Value, json};

const SCHEMA: &str = r#"{"collections": {
    "cards": {
        "permissions": {"update": ["owner", "author"], "delete": ["owner", "author"]},
        "fields": {"title": {"type": "string"}, "created_by": {"type": "string", "server_only": true}}
    },
    "settings": {"permissions": {"create": ["owner"], "update": ["owner"], "delete": ["owner"]}}
}}"#;

fn c(name: &str) -> Collection {
    Collection::new(name).unwrap()
}

fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn rule(e: Error) -> PermissionRule {
    match e {
        Error::Forbidden(f) => f.rule,
        other => panic!("not a permission refusal: {other}"),
    }
}

/// A replica of `user`, signed in to `server`.
async fn replica(server: &Served, dir: &std::path::Path, user: &str) -> Replica {
    let replica = Replica::open(dir.join(format!("{user}.db")), ReplicaConfig::default()).unwrap();
    replica
        .sign_in_with_token(&server.base, &server.token(user))
        .await
        .unwrap();
    replica
}

async fn call(
    server: &Served,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(server.token(user))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn forbidden_writes_are_refused_at_the_call_and_by_the_server() {
    let (store, _guard) = testing::fresh_store().await;
    let json = serde_json::to_string(&Schema::parse(SCHEMA).unwrap()).unwrap();
    store.apply_app_schema(&json, 0).await.unwrap();
    let settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    let server = Served::start(AppState::new(store.clone(), settings).await.unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let ws = SpaceId::new("ws").unwrap();
    let post = reqwest::Method::POST;
    call(
        &server,
        "alice",
        post,
        "/v1/spaces",
        json!({"id": "ws", "name": "Workspace"}),
    )
    .await;
    for editor in ["bob", "carol"] {
        call(&server, editor, reqwest::Method::GET, "/v1/me", Value::Null).await;
        let path = format!("/v1/spaces/ws/members/{editor}");
        call(
            &server,
            "alice",
            reqwest::Method::PUT,
            &path,
            json!({"role": "editor"}),
        )
        .await;
    }
    let alice = replica(&server, dir.path(), "alice").await;
    let bob = replica(&server, dir.path(), "bob").await;
    let carol = replica(&server, dir.path(), "carol").await;
    let remote = |r: &Replica| r.remote(&server.base).unwrap();

    // Before bob's replica has synced the space it does not know its role:
    // a write to the owners' settings is queued, and the server refuses it.
    bob.put(&ws, &c("settings"), &id("s"), json!({"theme": "dark"}))
        .unwrap();
    sync_space(&bob, &remote(&bob), &ws).await.unwrap();
    let rejected = bob.rejected().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].code, "forbidden");
    assert_eq!(bob.get(&ws, &c("settings"), &id("s")).unwrap(), None);
    assert_eq!(bob.pending().unwrap(), 0);

    // Now it knows (editor): refused at the call, nothing queued.
    let e = bob
        .put(&ws, &c("settings"), &id("s"), json!({"theme": "dark"}))
        .unwrap_err();
    assert_eq!(rule(e), PermissionRule::Create);
    let e = bob
        .put(&ws, &c("cards"), &id("c0"), json!({"created_by": "bob"}))
        .unwrap_err();
    assert_eq!(rule(e), PermissionRule::ServerOnly);
    assert_eq!(bob.pending().unwrap(), 0);

    // bob's card is his: he edits it before and after it syncs.
    bob.put(&ws, &c("cards"), &id("c1"), json!({"title": "bob's"}))
        .unwrap();
    bob.patch(&ws, &c("cards"), &id("c1"), json!({"title": "bob's!"}))
        .unwrap();
    sync_space(&bob, &remote(&bob), &ws).await.unwrap();
    bob.patch(&ws, &c("cards"), &id("c1"), json!({"title": "bob's!!"}))
        .unwrap();
    sync_space(&bob, &remote(&bob), &ws).await.unwrap();
    assert!(bob.rejected().unwrap().len() == 1);

    // carol pulls it with its author, and may neither change nor delete it.
    sync_space(&carol, &remote(&carol), &ws).await.unwrap();
    let e = carol
        .patch(&ws, &c("cards"), &id("c1"), json!({"title": "mine"}))
        .unwrap_err();
    assert_eq!(rule(e), PermissionRule::Author);
    assert_eq!(
        rule(carol.delete(&ws, &c("cards"), &id("c1")).unwrap_err()),
        PermissionRule::Author
    );
    assert_eq!(carol.pending().unwrap(), 0);
    // Her own card she may.
    carol
        .put(&ws, &c("cards"), &id("c2"), json!({"title": "carol's"}))
        .unwrap();
    carol.delete(&ws, &c("cards"), &id("c2")).unwrap();

    // alice owns the space: she may.
    sync_space(&alice, &remote(&alice), &ws).await.unwrap();
    alice
        .patch(
            &ws,
            &c("cards"),
            &id("c1"),
            json!({"title": "edited by the owner"}),
        )
        .unwrap();
    alice
        .put(&ws, &c("settings"), &id("s"), json!({"theme": "light"}))
        .unwrap();
    sync_space(&alice, &remote(&alice), &ws).await.unwrap();
    assert_eq!(alice.rejected().unwrap(), vec![]);
    // Even an owner's client never writes a server-only field.
    let e = alice
        .patch(&ws, &c("cards"), &id("c1"), json!({"created_by": "x"}))
        .unwrap_err();
    assert_eq!(rule(e), PermissionRule::ServerOnly);

    // The server sets one (an owner's REST write); the card's author then
    // puts the card anew: the field stays as it is, and the put syncs.
    let path = "/v1/spaces/ws/collections/cards/records/c1";
    call(
        &server,
        "alice",
        reqwest::Method::PATCH,
        path,
        json!({"fields": {"created_by": "bob"}}),
    )
    .await;
    sync_space(&bob, &remote(&bob), &ws).await.unwrap();
    bob.put(&ws, &c("cards"), &id("c1"), json!({"title": "put anew"}))
        .unwrap();
    sync_space(&bob, &remote(&bob), &ws).await.unwrap();
    assert_eq!(bob.rejected().unwrap().len(), 1, "the put was refused");
    let card = bob.get(&ws, &c("cards"), &id("c1")).unwrap().unwrap();
    assert_eq!(card.fields["created_by"], "bob");
    assert_eq!(card.fields["title"], "put anew");
}
