//! Sync and pull: merge, conflicts, retries, limits and bad input.

use super::*;

#[tokio::test]
async fn field_level_lww_conflicts_delete_wins_and_idempotent_retry() {
    let api = Api::new().await;
    api.space("alice", "team").await;

    let r = api
        .sync(
            "alice",
            "team",
            push(
                "phone",
                "p1",
                0,
                vec![up("t-1", "title", json!("Buy eggs"), &hlc(2, "phone"))],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["applied"], 1);

    // The laptop wrote the same field earlier (by HLC) and another field.
    let laptop = push(
        "laptop",
        "l1",
        0,
        vec![
            json!({"op": "upsert", "collection": "todos", "id": "t-1", "fields": {
            "title": {"value": "Buy milk", "hlc": hlc(1, "laptop")},
            "done": {"value": true, "hlc": hlc(1, "laptop")}}}),
        ],
    );
    let r = api.sync("alice", "team", laptop.clone()).await;
    assert_eq!(r.body["applied"], 1);
    assert_eq!(
        r.body["conflicts"],
        json!([{
        "collection": "todos", "id": "t-1", "field": "title", "kind": "stale_write",
        "yours": {"value": "Buy milk", "hlc": hlc(1, "laptop")},
        "winner": {"value": "Buy eggs", "hlc": hlc(2, "phone")}}])
    );
    let rec = &r.body["changes"][0];
    assert_eq!(rec["fields"]["title"]["value"], "Buy eggs");
    assert_eq!(rec["fields"]["done"]["value"], true);
    assert_eq!(rec["seq"], 2);
    assert_eq!(r.body["cursor"], 2);
    // Every answer carries the server's clock, which is past what it saw.
    assert!(r.body["hlc"].as_str().unwrap() > hlc(2, "phone").as_str());

    // The same batch again: same answer, nothing applied again.
    let again = api.sync("alice", "team", laptop).await;
    assert_eq!(again.body["applied"], r.body["applied"]);
    assert_eq!(again.body["conflicts"], r.body["conflicts"]);
    assert_eq!(again.body["cursor"], 2);

    // Delete wins, even over a later upsert.
    let r = api
        .sync(
            "alice",
            "team",
            push("phone", "p2", 2, vec![del("t-1", &hlc(3, "phone"))]),
        )
        .await;
    assert_eq!(r.body["changes"][0]["fields"], json!({}));
    assert_eq!(r.body["changes"][0]["deleted"], hlc(3, "phone"));
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "l2",
                3,
                vec![up("t-1", "title", json!("again"), &hlc(9, "laptop"))],
            ),
        )
        .await;
    assert_eq!(r.body["applied"], 0);
    assert_eq!(r.body["conflicts"][0]["kind"], "record_deleted");
    assert_eq!(r.body["conflicts"][0]["field"], Value::Null);
    let g = api
        .get("/v1/spaces/team/collections/todos/records/t-1", "alice")
        .await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_batch_with_one_bad_change_applies_nothing() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let bad = push(
        "c",
        "b1",
        0,
        vec![
            up("ok-1", "title", json!("x"), &hlc(1, "c")),
            up("ok-2", "title", json!("x"), &hlc(1, "c")),
            json!({"op": "upsert", "collection": "todos", "id": "bad id", "fields": {"title": {"value": 1, "hlc": hlc(1, "c")}}}),
        ],
    );
    let r = api.sync("alice", "team", bad).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change")
    );
    assert_eq!(r.body["error"]["details"]["index"], 2);

    for (change, index) in [
        (
            json!({"op": "upsert", "collection": "todos", "id": "x", "fields": {"_hidden": {"value": 1, "hlc": hlc(1, "c")}}}),
            1,
        ),
        (
            json!({"op": "upsert", "collection": "todos", "id": "x", "fields": {}}),
            1,
        ),
        (
            json!({"op": "upsert", "collection": "todos", "id": "x", "fields": {"a": {"value": 1, "hlc": "yesterday"}}}),
            1,
        ),
        (
            json!({"op": "frobnicate", "collection": "todos", "id": "x"}),
            1,
        ),
    ] {
        let r = api
            .sync(
                "alice",
                "team",
                push(
                    "c",
                    "b2",
                    0,
                    vec![up("ok", "t", json!(1), &hlc(1, "c")), change],
                ),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change")
        );
        assert_eq!(r.body["error"]["details"]["index"], index);
    }

    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.body["changes"], json!([]), "nothing was applied");
    assert_eq!(pull.body["cursor"], 0);
}

#[tokio::test]
async fn clock_skew_is_refused_and_applies_nothing() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let future = format!("{:015}:00000:c", wall_ms() + 301_000);
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "c",
                "b",
                0,
                vec![
                    up("a", "t", json!(1), &hlc(1, "c")),
                    up("b", "t", json!(1), &future),
                ],
            ),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "clock_skew")
    );
    assert_eq!(r.body["error"]["details"]["index"], 1);
    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.body["changes"], json!([]));
}

#[tokio::test]
async fn limits_answer_413() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let h = hlc(1, "c");
    let many: Vec<Value> = (0..10_001).map(|i| del(&format!("r{i}"), &h)).collect();
    let r = api.sync("alice", "team", push("c", "b", 0, many)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    let big = "x".repeat(1024 * 1024 + 1);
    let r = api
        .sync(
            "alice",
            "team",
            push("c", "b", 0, vec![up("r", "t", json!(big), &h)]),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    assert_eq!(r.body["error"]["details"]["field"], "t");

    let huge = "x".repeat(10 * 1024 * 1024 + 1);
    let req = Request::post("/v1/spaces/team/sync")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .body(Body::from(huge))
        .unwrap();
    let r = api.send(req).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/r",
            Some("alice"),
            Some(json!({"fields": {"t": big}})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.body["changes"], json!([]));
}

#[tokio::test]
async fn malformed_requests_answer_400() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let raw = |body: &'static str| {
        Request::post("/v1/spaces/team/sync")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", api.token("alice")),
            )
            .body(Body::from(body))
            .unwrap()
    };
    let r = api.send(raw("{not json")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let r = api.send(raw("")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let r = api.send(raw(r#"{"cursor": 0}"#)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api.send(raw(r#"{"client_id": "c", "limit": 0}"#)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api.send(raw(r#"{"client_id": "c", "surprise": 1}"#)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api.get("/v1/spaces/team/changes?cursor=-1", "alice").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api
        .get("/v1/spaces/team/changes?collections=a/b", "alice")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api.get("/v1/spaces/bad%20space/changes", "alice").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api.post("/v1/spaces", "alice", json!({"name": ""})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    for name in ["a\u{0}b", "tab\there", "line\nbreak"] {
        let r = api.post("/v1/spaces", "alice", json!({"name": name})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{name:?}"
        );
    }
    let r = api
        .post(
            "/v1/spaces",
            "alice",
            json!({"id": "user:bob", "name": "mine now"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = api
        .post(
            "/v1/spaces",
            "alice",
            json!({"id": "team", "name": "again"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = api.call(Method::GET, "/v1/nowhere", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = api
        .call(Method::DELETE, "/v1/spaces", Some("alice"), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn a_cursor_the_space_cannot_serve_is_expired() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let r = api.get("/v1/spaces/team/changes?cursor=99", "alice").await;
    assert_eq!((r.status, r.code()), (StatusCode::GONE, "cursor_expired"));
    let r = api
        .sync(
            "alice",
            "team",
            push("c", "b", 99, vec![up("a", "t", json!(1), &hlc(1, "c"))]),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::GONE, "cursor_expired"));
    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.body["changes"], json!([]), "nothing was applied");
}

#[tokio::test]
async fn pulls_page_by_cursor_and_filter_by_collection() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let changes: Vec<Value> = (0..7)
        .map(|i| {
            let coll = if i % 2 == 0 { "todos" } else { "notes" };
            json!({"op": "upsert", "collection": coll, "id": format!("r{i}"),
                   "fields": {"i": {"value": i, "hlc": hlc(1, "c")}}})
        })
        .collect();
    api.sync("alice", "team", push("c", "b", 0, changes)).await;
    let mut cursor = 0;
    let mut seen = vec![];
    loop {
        let page = api
            .get(
                &format!("/v1/spaces/team/changes?cursor={cursor}&limit=3"),
                "alice",
            )
            .await
            .body;
        seen.extend(
            page["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_u64().unwrap()),
        );
        cursor = page["cursor"].as_u64().unwrap();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    let todos = api
        .get("/v1/spaces/team/changes?collections=todos", "alice")
        .await
        .body;
    assert_eq!(todos["changes"].as_array().unwrap().len(), 4);
    assert_eq!(todos["cursor"], 7);
    let both = api
        .get(
            "/v1/spaces/team/changes?collections=todos,notes&cursor=5",
            "alice",
        )
        .await
        .body;
    assert_eq!(both["changes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn another_member_cannot_squat_a_batch_id() {
    let api = Api::new().await;
    api.space("owner", "team").await;
    api.add("owner", "team", "mallory", "editor").await;
    api.add("owner", "team", "victim", "editor").await;
    // The victim's replica pushes; Mallory reads its client id from a
    // field's HLC and pushes that client's next batch id first: refused,
    // the client id is the victim's.
    let first = api
        .sync(
            "victim",
            "team",
            push(
                "victim-laptop",
                "b-000017",
                0,
                vec![up("first", "x", json!(1), &hlc(1, "victim-laptop"))],
            ),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let squat = api
        .sync(
            "mallory",
            "team",
            push(
                "victim-laptop",
                "b-000018",
                0,
                vec![up("junk", "x", json!(1), &hlc(1, "victim-laptop"))],
            ),
        )
        .await;
    assert_eq!(squat.status, StatusCode::FORBIDDEN, "{:?}", squat.body);
    // The victim's real batch is applied, not answered as a replay of
    // Mallory's.
    let real = api
        .sync(
            "victim",
            "team",
            push(
                "victim-laptop",
                "b-000018",
                0,
                vec![up("note", "text", json!("mine"), &hlc(2, "victim-laptop"))],
            ),
        )
        .await;
    assert_eq!(real.body["applied"], 1, "{:?}", real.body);
    let note = api
        .get("/v1/spaces/team/collections/todos/records/note", "owner")
        .await;
    assert_eq!(
        note.body["fields"]["text"]["value"], "mine",
        "{:?}",
        note.body
    );
    // The victim's retry is still a replay of their own batch.
    let retry = api
        .sync(
            "victim",
            "team",
            push(
                "victim-laptop",
                "b-000018",
                0,
                vec![up("note", "text", json!("mine"), &hlc(2, "victim-laptop"))],
            ),
        )
        .await;
    assert_eq!(retry.body["applied"], 1);
    let metrics = api.call(Method::GET, "/metrics", None, None).await.body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferry_batches_replayed_total 1"),
        "{metrics}"
    );
}
