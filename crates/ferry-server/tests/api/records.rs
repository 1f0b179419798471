//! The REST records API.

use super::*;

#[tokio::test]
async fn rest_records_round_trip() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let base = "/v1/spaces/team/collections/notes/records";
    let r = api
        .call(
            Method::PUT,
            &format!("{base}/n-1"),
            Some("alice"),
            Some(json!({"fields": {"title": "Hello", "body": "x"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["fields"]["title"]["value"], "Hello");
    assert!(
        r.body["fields"]["title"]["hlc"]
            .as_str()
            .unwrap()
            .ends_with(":server-1")
    );

    let r = api
        .call(
            Method::PATCH,
            &format!("{base}/n-1"),
            Some("alice"),
            Some(json!({"fields": {"body": "y"}})),
        )
        .await;
    assert_eq!(r.body["fields"]["title"]["value"], "Hello");
    assert_eq!(r.body["fields"]["body"]["value"], "y");

    // PUT replaces: a field it does not name becomes null.
    let r = api
        .call(
            Method::PUT,
            &format!("{base}/n-1"),
            Some("alice"),
            Some(json!({"fields": {"title": "Bye"}})),
        )
        .await;
    assert_eq!(r.body["fields"]["body"]["value"], Value::Null);

    let r = api
        .call(
            Method::PATCH,
            &format!("{base}/absent"),
            Some("alice"),
            Some(json!({"fields": {"a": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .call(
            Method::PUT,
            &format!("{base}/n-2"),
            Some("alice"),
            Some(json!({"fields": {}})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change")
    );
    let r = api
        .call(
            Method::PUT,
            &format!("{base}/n-2"),
            Some("alice"),
            Some(json!({"fields": {"_x": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    for i in 2..=5 {
        api.call(
            Method::PUT,
            &format!("{base}/n-{i}"),
            Some("alice"),
            Some(json!({"fields": {"i": i}})),
        )
        .await;
    }
    let page = api.get(&format!("{base}?limit=3"), "alice").await.body;
    let ids: Vec<_> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("n-1"), json!("n-2"), json!("n-3")]);
    assert_eq!(page["next"], "n-3");
    let page = api
        .get(&format!("{base}?limit=3&after=n-3"), "alice")
        .await
        .body;
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], Value::Null);

    let r = api
        .call(Method::DELETE, &format!("{base}/n-1"), Some("alice"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&format!("{base}/n-1"), "alice").await.status,
        StatusCode::NOT_FOUND
    );
    let r = api
        .call(
            Method::PUT,
            &format!("{base}/n-1"),
            Some("alice"),
            Some(json!({"fields": {"title": "zombie"}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = api
        .call(
            Method::PATCH,
            &format!("{base}/n-1"),
            Some("alice"),
            Some(json!({"fields": {"title": "zombie"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get(base, "alice").await.body["records"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // REST writes are in the sync stream like any other.
    let pull = api
        .get("/v1/spaces/team/changes?collections=notes", "alice")
        .await
        .body;
    let tomb = pull["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "n-1")
        .unwrap()
        .clone();
    assert_eq!(tomb["fields"], json!({}));
    assert!(tomb["deleted"].is_string());
}

#[tokio::test]
async fn a_rest_write_wins_over_a_field_a_fast_clock_wrote() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    // A device whose clock runs 200 s ahead (within the allowed skew) wrote
    // the title through another node (or this one before a restart): this
    // node's clock never saw that HLC.
    let ahead = format!(
        "{:015}:00000:fast",
        ferry_server::clock::wall_ms() + 200_000
    );
    let change: ferry_core::Change =
        serde_json::from_value(up("n-1", "title", json!("from the fast device"), &ahead)).unwrap();
    let batch = ferry_server::store::Batch {
        user: ferry_core::UserId::new("alice").unwrap(),
        client_id: ferry_core::ClientId::new("fast").unwrap(),
        batch_id: Some(ferry_core::BatchId::new("b1").unwrap()),
        cursor: Some(0),
        changes: vec![change],
        schema: None,
        actor: None,
    };
    let space = ferry_core::SpaceId::new("team").unwrap();
    assert_eq!(
        api.state.store.push(&space, batch).await.unwrap().applied,
        1
    );
    // A script writes the title over REST: its write is the newest,
    // whatever that device's clock said.
    let r = api
        .call(
            Method::PATCH,
            "/v1/spaces/team/collections/todos/records/n-1",
            Some("alice"),
            Some(json!({"fields": {"title": "from the script"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["fields"]["title"]["value"], "from the script");
    let stamped = r.body["fields"]["title"]["hlc"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stamped.as_str() > ahead.as_str(),
        "{stamped} is not after {ahead}"
    );
}

#[tokio::test]
async fn a_record_past_its_size_limit_is_too_large_and_nothing_changes() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let value = "v".repeat(1024 * 1024 - 64);
    let fields: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("f{i}"), json!(value))).collect();
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/big",
            Some("alice"),
            Some(json!({"fields": fields})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{:?}",
        r.body["error"]
    );
    assert_eq!(r.body["error"]["details"]["id"], "big");
    let got = api
        .get("/v1/spaces/team/collections/todos/records/big", "alice")
        .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
}
