//! The app's schema over HTTP (docs/schema.md): served to any signed-in
//! user, enforced on sync and REST writes with `422 invalid_change` naming
//! the change, field and rule, and held by every node from the next write
//! on, without a restart.

use super::*;

/// The schema of the tests: strict todos with a required short title.
const SCHEMA: &str = r#"{"collections": {"todos": {"mode": "strict", "fields": {
    "title": {"type": "string", "max_length": 20, "required": true},
    "done": {"type": "boolean"}}}}}"#;

/// Applies [`SCHEMA`] beside the node, as `ferry schema apply` does.
pub(super) async fn apply(api: &Api) -> u64 {
    let schema = ferry_core::schema::Schema::parse(SCHEMA).unwrap();
    let json = serde_json::to_string(&schema).unwrap();
    let (version, _) = api.state.store.app_schema().await.unwrap();
    api.state
        .store
        .apply_app_schema(&json, version)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_schema_is_served_to_signed_in_users() {
    let api = Api::new().await;
    let none = api.get("/v1/schema", "alice").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body, json!({"version": 0, "schema": null}));
    let anonymous = api.call(Method::GET, "/v1/schema", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // A forged token (another key's signature on alice's claims) too.
    let token = api.token("alice");
    let forged = format!("{}x", &token[..token.len() - 1]);
    let r = api.get_with_token("/v1/schema", &forged).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );

    assert_eq!(apply(&api).await, 1);
    // Applied beside the node (as `ferry schema apply` does): served
    // within a second, the database read at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let served = api.get("/v1/schema", "alice").await;
    assert_eq!(served.body["version"], 1);
    assert_eq!(
        served.body["schema"]["collections"]["todos"]["fields"]["title"]["max_length"],
        20
    );
}

#[tokio::test]
async fn writes_that_break_the_schema_are_refused_naming_the_rule() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    apply(&api).await;
    let cases = [
        (up("t1", "title", json!(7), &hlc(1, "c")), "title", "type"),
        (
            up("t1", "titel", json!("Milk"), &hlc(1, "c")),
            "titel",
            "undeclared_field",
        ),
        (
            up("t1", "title", json!("x".repeat(21)), &hlc(1, "c")),
            "title",
            "max_length",
        ),
        // Creating a record without its required title.
        (
            up("t1", "done", json!(true), &hlc(1, "c")),
            "title",
            "required",
        ),
    ];
    for (i, (change, field, rule)) in cases.into_iter().enumerate() {
        let body = push(
            "c",
            &format!("b{i}"),
            0,
            vec![up("ok", "title", json!("fine"), &hlc(1, "c")), change],
        );
        let r = api.sync("alice", "team", body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change"),
            "{rule}: {:?}",
            r.body
        );
        let details = &r.body["error"]["details"];
        assert_eq!(details["index"], 1, "{rule}");
        assert_eq!(details["field"], field, "{rule}");
        assert_eq!(details["rule"], rule, "{rule}");
        assert_eq!(details["collection"], "todos");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(field),
            "{:?}",
            r.body
        );
    }
    // Nothing of any refused batch applied.
    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.body["changes"], json!([]));

    // REST writes are held to it too.
    let rest = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/r1",
            Some("alice"),
            Some(json!({"fields": {"title": "Milk", "done": "yes"}})),
        )
        .await;
    assert_eq!(
        (rest.status, rest.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change"),
        "{:?}",
        rest.body
    );
    assert_eq!(rest.body["error"]["details"]["rule"], "type");

    // A valid batch, and then a patch of one field of the record: fine.
    let ok = api
        .sync(
            "alice",
            "team",
            push(
                "c",
                "b9",
                0,
                vec![up("t1", "title", json!("Milk"), &hlc(2, "c"))],
            ),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let patch = api
        .sync(
            "alice",
            "team",
            push(
                "c",
                "b10",
                1,
                vec![up("t1", "done", json!(true), &hlc(3, "c"))],
            ),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{:?}", patch.body);
}

#[tokio::test]
async fn a_schema_applied_elsewhere_holds_on_every_node_at_once() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    // A second node on the same database, started before the schema.
    let other = AppState::new(
        api.state.store.clone(),
        Settings::new(ClientId::new("server-2").unwrap(), "http://ferry.test"),
    )
    .await
    .unwrap();
    let node2 = routes::app(other);
    apply(&api).await;
    let send = |body: Value| {
        let token = api.token("alice");
        let node2 = node2.clone();
        async move {
            let req = Request::post("/v1/spaces/team/sync")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let res = node2.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    // The second node still held no schema: its first push finds version
    // 1 stored, loads it, and judges the batch by it.
    let (status, body) = send(push(
        "c",
        "b1",
        0,
        vec![up("t1", "title", json!(7), &hlc(1, "c"))],
    ))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["rule"], "type");
    let (status, body) = send(push(
        "c",
        "b2",
        0,
        vec![up("t1", "title", json!("Milk"), &hlc(1, "c"))],
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn no_value_judged_by_the_schema_yields_a_5xx() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let schema = ferry_core::schema::Schema::parse(
        &json!({"collections": {"todos": {"mode": "strict", "fields": {
            "title": {"type": "string", "max_length": 20, "required": true},
            "n": {"type": "integer", "min": 0}, "x": {"type": "number", "max": 1},
            "when": {"type": "timestamp"}, "tags": {"type": "array", "items": "timestamp", "max_items": 3},
            "level": {"type": "enum", "values": ["a"]}, "list": {"type": "ref", "collection": "todos"}}}}})
        .to_string(),
    )
    .unwrap();
    api.state
        .store
        .apply_app_schema(&serde_json::to_string(&schema).unwrap(), 0)
        .await
        .unwrap();
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(1e308),
        json!(-0.0),
        json!(18_446_744_073_709_551_615_u64),
        json!(""),
        json!("x".repeat(100_000)),
        json!("\u{0}é😀"),
        json!("2026-13-45T99:99:99Z"),
        json!("9999-12-31T23:59:60Z"),
        json!([1, "a", null]),
        json!(vec!["2026-12-02T14:00:00Z"; 10]),
        json!({"a": {"b": []}}),
        deep,
    ];
    let fields = [
        "title",
        "n",
        "x",
        "when",
        "tags",
        "level",
        "list",
        "undeclared",
    ];
    let (mut i, mut taken, mut refused) = (0, 0, 0);
    for field in fields {
        for value in &values {
            i += 1;
            let change = json!({"op": "upsert", "collection": "todos", "id": format!("r{i}"),
                "fields": {"title": {"value": "ok", "hlc": hlc(1, "c")}, field: {"value": value, "hlc": hlc(1, "c")}}});
            let r = api
                .sync(
                    "alice",
                    "team",
                    push("c", &format!("b{i}"), 0, vec![change]),
                )
                .await;
            assert!(
                r.status == StatusCode::OK
                    || r.status == StatusCode::UNPROCESSABLE_ENTITY
                    || r.status == StatusCode::PAYLOAD_TOO_LARGE,
                "{field} = {value}: {} {:?}",
                r.status,
                r.body
            );
            if r.status == StatusCode::OK {
                taken += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both answers happened: the values exercised the rules.
    assert!(
        taken > 10 && refused > 10,
        "{taken} taken, {refused} refused"
    );
}
