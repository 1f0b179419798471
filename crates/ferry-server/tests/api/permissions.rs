//! The schema's permissions (docs/server-rules.md), per rule, through sync
//! and REST alike: who creates, updates and deletes; author-only edits and
//! deletes, the author recorded by the server and never by the client;
//! server-only fields, writable through REST by an owner or an API token
//! with that right only. A refused batch applies nothing.

use super::tokens::token;
use super::*;

const SCHEMA: &str = r#"{"collections": {
    "cards": {
        "permissions": {"update": ["owner", "author"], "delete": ["owner", "author"]},
        "fields": {"title": {"type": "string"}, "created_by": {"type": "string", "server_only": true}}
    },
    "settings": {"permissions": {"create": ["owner"], "update": ["owner"], "delete": ["owner"]}}
}}"#;

/// The workspace: alice owns it, bob and carol edit.
async fn workspace() -> Api {
    let api = Api::new().await;
    api.space("alice", "ws").await;
    api.add("alice", "ws", "bob", "editor").await;
    api.add("alice", "ws", "carol", "editor").await;
    super::tables::apply(&api, SCHEMA).await.unwrap();
    api
}

fn set(collection: &str, id: &str, field: &str, value: Value, at: &str) -> Value {
    json!({"op": "upsert", "collection": collection, "id": id,
           "fields": {field: {"value": value, "hlc": at}}})
}

fn remove(collection: &str, id: &str, at: &str) -> Value {
    json!({"op": "delete", "collection": collection, "id": id, "hlc": at})
}

/// Pushes `changes` as `user` from their replica; the reply.
async fn sync(api: &Api, user: &str, n: u64, changes: Vec<Value>) -> Reply {
    let client = format!("{user}-phone");
    let changes = changes
        .into_iter()
        .map(|c| serde_json::from_str(&c.to_string().replace("NODE", &client)).unwrap())
        .collect();
    api.sync(user, "ws", push(&client, &format!("b{n}"), 0, changes))
        .await
}

fn at(n: u64) -> String {
    hlc(n, "NODE")
}

async fn rest(api: &Api, method: Method, user: &str, path: &str, body: Option<Value>) -> Reply {
    let path = format!("/v1/spaces/ws/collections/{path}");
    api.call(method, &path, Some(user), body).await
}

fn refused(r: &Reply, rule: &str) {
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["details"]["rule"], rule, "{:?}", r.body);
}

async fn head(api: &Api) -> u64 {
    api.get("/v1/spaces/ws/changes", "alice").await.body["cursor"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn only_a_card_s_author_or_an_owner_changes_or_deletes_it() {
    let api = workspace().await;
    // bob adds a card: the server records him as its author.
    let r = sync(
        &api,
        "bob",
        1,
        vec![set("cards", "c1", "title", json!("bob's"), &at(1))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let card = rest(&api, Method::GET, "carol", "cards/records/c1", None).await;
    assert_eq!(card.body["author"], "bob", "{:?}", card.body);
    // Pulls carry it to clients that speak v1.5, and not to older ones
    // (they refuse keys they do not know).
    let pull = |protocol: Option<&str>| {
        let mut req = Request::get("/v1/spaces/ws/changes").header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("carol")),
        );
        if let Some(v) = protocol {
            req = req.header("ferry-protocol", v);
        }
        api.send(req.body(Body::empty()).unwrap())
    };
    assert_eq!(pull(Some("1.5")).await.body["changes"][0]["author"], "bob");
    assert_eq!(pull(Some("2.0")).await.body["changes"][0]["author"], "bob");
    for older in [None, Some("1.4"), Some("x")] {
        let pulled = pull(older).await;
        assert!(
            pulled.body["changes"][0].get("author").is_none(),
            "{older:?}: {:?}",
            pulled.body
        );
    }
    // carol may not change or delete it, by sync or REST; nothing moves.
    let before = head(&api).await;
    refused(
        &sync(
            &api,
            "carol",
            2,
            vec![set("cards", "c1", "title", json!("mine"), &at(2))],
        )
        .await,
        "author",
    );
    refused(
        &sync(&api, "carol", 3, vec![remove("cards", "c1", &at(3))]).await,
        "author",
    );
    let patch = json!({"fields": {"title": "mine"}});
    refused(
        &rest(
            &api,
            Method::PATCH,
            "carol",
            "cards/records/c1",
            Some(patch.clone()),
        )
        .await,
        "author",
    );
    refused(
        &rest(
            &api,
            Method::PUT,
            "carol",
            "cards/records/c1",
            Some(patch.clone()),
        )
        .await,
        "author",
    );
    refused(
        &rest(&api, Method::DELETE, "carol", "cards/records/c1", None).await,
        "author",
    );
    assert_eq!(head(&api).await, before);
    // The details name the record.
    let r = sync(
        &api,
        "carol",
        4,
        vec![set("cards", "c1", "title", json!("mine"), &at(4))],
    )
    .await;
    assert_eq!(
        r.body["error"]["details"],
        json!({"index": 0, "collection": "cards", "id": "c1", "field": null, "rule": "author"})
    );
    // Its author and an owner may.
    let r = sync(
        &api,
        "bob",
        5,
        vec![set("cards", "c1", "title", json!("bob's, edited"), &at(5))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = rest(
        &api,
        Method::PATCH,
        "alice",
        "cards/records/c1",
        Some(patch),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["author"], "bob",
        "an owner's edit does not change the author"
    );
    // A card carol makes is hers, even made in a batch after a refused one.
    let r = sync(
        &api,
        "carol",
        6,
        vec![
            set("cards", "c2", "title", json!("carol's"), &at(6)),
            set("cards", "c2", "title", json!("again"), &at(7)),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        rest(&api, Method::GET, "bob", "cards/records/c2", None)
            .await
            .body["author"],
        "carol"
    );
    let r = rest(&api, Method::DELETE, "bob", "cards/records/c2", None).await;
    refused(&r, "author");
    assert_eq!(
        rest(&api, Method::DELETE, "carol", "cards/records/c2", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        rest(&api, Method::DELETE, "bob", "cards/records/c1", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn only_owners_touch_the_workspace_settings() {
    let api = workspace().await;
    let put = json!({"fields": {"theme": "dark"}});
    refused(
        &sync(
            &api,
            "bob",
            1,
            vec![set("settings", "s", "theme", json!("dark"), &at(1))],
        )
        .await,
        "create",
    );
    refused(
        &rest(
            &api,
            Method::PUT,
            "bob",
            "settings/records/s",
            Some(put.clone()),
        )
        .await,
        "create",
    );
    let r = rest(
        &api,
        Method::PUT,
        "alice",
        "settings/records/s",
        Some(put.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    refused(
        &sync(
            &api,
            "bob",
            2,
            vec![set("settings", "s", "theme", json!("light"), &at(2))],
        )
        .await,
        "update",
    );
    refused(
        &rest(&api, Method::PATCH, "bob", "settings/records/s", Some(put)).await,
        "update",
    );
    refused(
        &sync(&api, "bob", 3, vec![remove("settings", "s", &at(3))]).await,
        "delete",
    );
    refused(
        &rest(&api, Method::DELETE, "bob", "settings/records/s", None).await,
        "delete",
    );
    let r = sync(
        &api,
        "alice",
        4,
        vec![set("settings", "s", "theme", json!("light"), &at(4))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_batch_with_one_forbidden_change_applies_nothing() {
    let api = workspace().await;
    let before = head(&api).await;
    let r = sync(
        &api,
        "bob",
        1,
        vec![
            set("cards", "ok", "title", json!("fine"), &at(1)),
            set("settings", "s", "theme", json!("x"), &at(2)),
        ],
    )
    .await;
    refused(&r, "create");
    assert_eq!(r.body["error"]["details"]["index"], 1);
    assert_eq!(head(&api).await, before);
    assert_eq!(
        rest(&api, Method::GET, "bob", "cards/records/ok", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn server_only_fields_are_written_by_owners_over_rest_and_tokens_with_the_right() {
    let api = workspace().await;
    let by = |who: &str| json!({"fields": {"title": "t", "created_by": who}});
    // Sync never writes them, an owner's included.
    for user in ["bob", "alice"] {
        let r = sync(
            &api,
            user,
            1,
            vec![set("cards", "c1", "created_by", json!(user), &at(1))],
        )
        .await;
        refused(&r, "server_only");
        assert_eq!(r.body["error"]["details"]["field"], "created_by");
    }
    // An editor's REST write is refused; an owner's is taken.
    refused(
        &rest(
            &api,
            Method::PUT,
            "bob",
            "cards/records/c1",
            Some(by("bob")),
        )
        .await,
        "server_only",
    );
    let r = rest(
        &api,
        Method::PUT,
        "alice",
        "cards/records/c1",
        Some(by("alice")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // An owner's API token: only with server_fields.
    let plain = token(&api, "alice", json!({"name": "p", "access": "write"})).await;
    let right = token(
        &api,
        "alice",
        json!({"name": "s", "access": "write", "server_fields": true}),
    )
    .await;
    let editors = token(
        &api,
        "bob",
        json!({"name": "b", "access": "write", "server_fields": true}),
    )
    .await;
    let path = "/v1/spaces/ws/collections/cards/records/c1";
    let patch = json!({"fields": {"created_by": "backend"}});
    for (secret, expected) in [(&plain, 403), (&editors, 403), (&right, 200)] {
        let r = api
            .call_with_token(Method::PATCH, path, Some(secret), Some(patch.clone()))
            .await;
        assert_eq!(r.status.as_u16(), expected, "{:?}", r.body);
    }
    // A PUT by someone who may not write them leaves them as they are.
    let bob_card = sync(
        &api,
        "bob",
        2,
        vec![set("cards", "c2", "title", json!("b"), &at(2))],
    )
    .await;
    assert_eq!(bob_card.status, StatusCode::OK);
    let r = rest(
        &api,
        Method::PATCH,
        "alice",
        "cards/records/c2",
        Some(json!({"fields": {"created_by": "bob"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = rest(
        &api,
        Method::PUT,
        "bob",
        "cards/records/c2",
        Some(json!({"fields": {"title": "new"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["fields"]["created_by"]["value"], "bob");
    assert_eq!(r.body["fields"]["title"]["value"], "new");
}

#[tokio::test]
async fn the_author_cannot_be_forged() {
    let api = workspace().await;
    // A field named author is data; the record's author is its creator.
    let r = sync(
        &api,
        "carol",
        1,
        vec![set("cards", "c1", "author", json!("bob"), &at(1))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let card = rest(&api, Method::GET, "bob", "cards/records/c1", None).await;
    assert_eq!(card.body["author"], "carol");
    refused(
        &sync(
            &api,
            "bob",
            2,
            vec![set("cards", "c1", "title", json!("x"), &at(2))],
        )
        .await,
        "author",
    );
    // A change cannot carry an author of its own.
    let mut change = set("cards", "c3", "title", json!("x"), &at(3));
    change["author"] = json!("bob");
    let r = sync(&api, "carol", 3, vec![change]).await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    assert_eq!(
        rest(&api, Method::GET, "bob", "cards/records/c3", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
