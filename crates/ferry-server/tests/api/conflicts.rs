//! Conflict reports over HTTP: the loser of concurrent edits is told in
//! `reported` at its next sync or pull, once, and only under its own user;
//! a retried batch answers its own `conflicts` the same; and every form of
//! a bad base or conflict cursor is refused with nothing applied.

use super::*;

/// An upsert of one field made knowing `base` there (`null`: nothing).
fn seen(id: &str, field: &str, value: Value, h: &str, base: Value) -> Value {
    let mut change = up(id, field, value, h);
    change["base"] = json!({ field: base });
    change
}

/// `team` shared by alice and bob, holding `x = {"title": "orig"}`; A
/// (alice's laptop) wrote "A older" having seen it, then B (bob) wrote
/// "B newer" having seen only "orig". The cursor after A's write.
async fn crossed(api: &Api) -> u64 {
    api.space("alice", "team").await;
    api.add("alice", "team", "bob", "editor").await;
    let orig = hlc(1, "o");
    api.sync(
        "alice",
        "team",
        push("o", "o1", 0, vec![up("x", "title", json!("orig"), &orig)]),
    )
    .await;
    let a = seen("x", "title", json!("A older"), &hlc(5, "a"), json!(orig));
    let r = api.sync("alice", "team", push("a", "a1", 0, vec![a])).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cursor = r.body["cursor"].as_u64().unwrap();
    let b = seen("x", "title", json!("B newer"), &hlc(6, "b"), json!(orig));
    let r = api
        .sync("bob", "team", push("b", "b1", cursor, vec![b]))
        .await;
    assert_eq!(r.body["conflicts"], json!([]), "the winner is told nothing");
    assert!(r.body.get("reported").is_none(), "{:?}", r.body);
    cursor
}

#[tokio::test]
async fn the_loser_is_told_at_its_next_sync_once_and_under_its_own_user_only() {
    let api = Api::new().await;
    let cursor = crossed(&api).await;
    // Bob claiming A's client id is told nothing of alice's writes.
    let body = json!({"client_id": "a", "cursor": cursor});
    let r = api.sync("bob", "team", body.clone()).await;
    assert!(r.body.get("reported").is_none(), "{:?}", r.body);
    // Nor can he push under it: a client id is its first pusher's.
    let r = api
        .sync(
            "bob",
            "team",
            push(
                "a",
                "b9",
                cursor,
                vec![up("y", "t", json!(1), &hlc(9, "a"))],
            ),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{:?}",
        r.body
    );
    // Nor write under A's name from his own client id.
    let r = api
        .sync(
            "bob",
            "team",
            push(
                "b",
                "b10",
                cursor,
                vec![up("y", "t", json!(1), &hlc(9, "a"))],
            ),
        )
        .await;
    assert_eq!(r.code(), "invalid_change", "{:?}", r.body);
    let r = api.sync("alice", "team", body).await;
    let told = &r.body["reported"];
    assert_eq!(told.as_array().map(Vec::len), Some(1), "{:?}", r.body);
    assert_eq!(told[0]["kind"], "stale_write");
    assert_eq!(told[0]["yours"]["value"], "A older");
    assert_eq!(told[0]["winner"]["value"], "B newer");
    assert_eq!(r.body["conflicts"], json!([]));
    // Past it, never again; a pull from 0 that says it was told already
    // is not told again; the pull alone tells it too, when it names A.
    let head = r.body["cursor"].as_u64().unwrap();
    let again = api
        .sync("alice", "team", json!({"client_id": "a", "cursor": head}))
        .await;
    assert!(again.body.get("reported").is_none());
    let from_zero = json!({"client_id": "a", "cursor": 0, "conflict_cursor": head});
    assert!(
        api.sync("alice", "team", from_zero)
            .await
            .body
            .get("reported")
            .is_none()
    );
    let path = format!("/v1/spaces/team/changes?cursor={cursor}&client_id=a");
    let pulled = api.get(&path, "alice").await;
    assert_eq!(pulled.body["reported"][0]["yours"]["value"], "A older");
    let anonymous = api
        .get(&format!("/v1/spaces/team/changes?cursor={cursor}"), "alice")
        .await;
    assert!(anonymous.body.get("reported").is_none());
}

#[tokio::test]
async fn a_retried_batch_answers_its_own_conflicts_the_same() {
    let api = Api::new().await;
    let cursor = crossed(&api).await;
    // A writes again, still not having seen B's write: it loses at once.
    let stale = seen(
        "x",
        "title",
        json!("A again"),
        &hlc(4, "a"),
        json!(hlc(5, "a")),
    );
    let body = push("a", "a2", cursor, vec![stale]);
    let first = api.sync("alice", "team", body.clone()).await;
    let again = api.sync("alice", "team", body).await;
    assert_eq!(first.body["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(first.body["conflicts"], again.body["conflicts"]);
    assert_eq!(first.body["applied"], again.body["applied"]);
    // The report of the earlier write comes with each page that covers it.
    assert_eq!(first.body["reported"][0]["yours"]["value"], "A older");
    assert_eq!(again.body["reported"], first.body["reported"]);
}

#[tokio::test]
async fn bad_bases_and_conflict_cursors_are_refused_and_change_nothing() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let h = hlc(1, "a");
    let mut stray = up("x", "title", json!("t"), &h);
    stray["base"] = json!({"done": null});
    let mut bad_hlc = up("x", "title", json!("t"), &h);
    bad_hlc["base"] = json!({"title": "yesterday"});
    let mut bad_name = del("x", &h);
    bad_name["base"] = json!({"_secret": null});
    let mut not_a_map = up("x", "title", json!("t"), &h);
    not_a_map["base"] = json!(["title"]);
    let mut too_many = del("x", &h);
    too_many["base"] = Value::Object((0..400_000).map(|i| (format!("f{i}"), json!(h))).collect());
    let cases = [
        (
            "a base for a field not written",
            stray,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a base that is not an HLC",
            bad_hlc,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a base naming a reserved field",
            bad_name,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a base that is not a map",
            not_a_map,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a base of 400,000 fields",
            too_many,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (i, (what, change, status)) in cases.into_iter().enumerate() {
        let batch = format!("b{i}");
        let r = api
            .sync("alice", "team", push("a", &batch, 0, vec![change]))
            .await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
    }
    for body in [
        json!({"client_id": "a", "cursor": 0, "conflict_cursor": "7"}),
        json!({"client_id": "a", "cursor": 0, "conflict_cursor": -1}),
    ] {
        let r = api.sync("alice", "team", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
    }
    for query in [
        "client_id=bad%20id",
        "client_id=a&conflict_cursor=x",
        "conflict_cursor=-1",
    ] {
        let r = api
            .get(&format!("/v1/spaces/team/changes?{query}"), "alice")
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {:?}", r.body);
    }
    // A conflict cursor past the head is no error: there is nothing to tell.
    let far = json!({"client_id": "a", "cursor": 0, "conflict_cursor": u64::MAX});
    assert_eq!(api.sync("alice", "team", far).await.status, StatusCode::OK);
    let listed = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(listed.body["changes"], json!([]), "nothing was applied");
}
