//! The attack matrix: for every way to touch a space's data (sync push and
//! pull, pulls by cursor, REST records, files, members, invites, event
//! streams and WebSocket subscriptions), a user who was never a member, a member who
//! was removed, a viewer, and callers with forged tokens each try, and each
//! is refused as PROTOCOL.md says (404 for whoever may not see the space,
//! 403 for a viewer's writes, 401 for a forged token), with nothing of the
//! space leaked and nothing changed.

use super::*;
use ferry_server::testing::WsClient;
use std::time::Duration;

/// The file every attack finds in the space ([`store_file`]): its bytes
/// are this value as JSON, so that an attempt can upload it again.
pub fn secret_file() -> (Value, String) {
    use sha2::Digest;
    let body = json!({"file": "secret"});
    let hash = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&body).unwrap()));
    (body, hash)
}

/// Stores [`secret_file`] in `space`, as its owner `owner`.
pub async fn store_file(api: &Api, owner: &str, space: &str) {
    let (body, hash) = secret_file();
    let r = api
        .call(
            Method::PUT,
            &format!("/v1/spaces/{space}/files/{hash}"),
            Some(owner),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

/// What a caller tries: method, path, body, and whether it writes.
pub fn attempts(space: &str, cursor: u64) -> Vec<(Method, String, Option<Value>, bool)> {
    let base = format!("/v1/spaces/{space}");
    let rec = format!("{base}/collections/todos/records/t-1");
    let (file_body, file) = secret_file();
    let absent = "0".repeat(64);
    vec![
        // Files: read, upload again, delete one the space does not hold.
        (Method::GET, format!("{base}/files/{file}"), None, false),
        (
            Method::PUT,
            format!("{base}/files/{file}"),
            Some(file_body),
            true,
        ),
        (Method::DELETE, format!("{base}/files/{absent}"), None, true),
        (
            Method::POST,
            format!("{base}/sync"),
            Some(push(
                "x",
                "bx",
                cursor,
                vec![up("t-1", "title", json!("mine"), &hlc(9, "x"))],
            )),
            true,
        ),
        (
            Method::POST,
            format!("{base}/sync"),
            Some(push("x", "by", cursor, vec![del("t-1", &hlc(9, "x"))])),
            true,
        ),
        // Pulls, from the start and from a cursor seen elsewhere.
        (
            Method::POST,
            format!("{base}/sync"),
            Some(json!({"client_id": "x", "cursor": 0})),
            false,
        ),
        (
            Method::POST,
            format!("{base}/sync"),
            Some(json!({"client_id": "x", "cursor": cursor})),
            false,
        ),
        (Method::GET, format!("{base}/changes?cursor=0"), None, false),
        // Pulls asking for a replica's conflict reports.
        (
            Method::POST,
            format!("{base}/sync"),
            Some(json!({"client_id": "a", "cursor": 0, "conflict_cursor": 0})),
            false,
        ),
        (
            Method::GET,
            format!("{base}/changes?cursor=0&client_id=a"),
            None,
            false,
        ),
        (
            Method::GET,
            format!("{base}/changes?cursor={cursor}"),
            None,
            false,
        ),
        (
            Method::GET,
            format!("{base}/collections/todos/records"),
            None,
            false,
        ),
        (Method::GET, rec.clone(), None, false),
        (
            Method::PUT,
            rec.clone(),
            Some(json!({"fields": {"title": "mine"}})),
            true,
        ),
        (
            Method::PATCH,
            rec.clone(),
            Some(json!({"fields": {"title": "mine"}})),
            true,
        ),
        (Method::DELETE, rec, None, true),
        (Method::GET, format!("{base}/members"), None, false),
        (
            Method::PUT,
            format!("{base}/members/mallory"),
            Some(json!({"role": "owner"})),
            true,
        ),
        (Method::DELETE, format!("{base}/members/alice"), None, true),
        (
            Method::POST,
            format!("{base}/invites"),
            Some(json!({"email": "m@evil.test", "role": "owner"})),
            true,
        ),
    ]
}

/// Everything a member can see of the space, to compare before and after.
pub async fn snapshot(api: &Api) -> Value {
    let changes = api.get("/v1/spaces/team/changes", "alice").await;
    let members = api.get("/v1/spaces/team/members", "alice").await;
    assert_eq!(changes.status, StatusCode::OK);
    json!({"changes": changes.body["changes"], "cursor": changes.body["cursor"],
           "members": members.body["members"]})
}

/// Tries everything as `who`: with `can_read` false every attempt must be a
/// 404 that does not tell the space exists, else reads are answered and
/// writes refused with 403. The number of cases tried.
async fn check(api: &Api, served: &Served, who: &str, can_read: bool, cursor: u64) -> usize {
    let mut cases = 0;
    for (method, path, body, writes) in attempts("team", cursor) {
        let r = api.call(method.clone(), &path, Some(who), body).await;
        let expected = match (can_read, writes) {
            (false, _) => (StatusCode::NOT_FOUND, "not_found"),
            (true, true) => (StatusCode::FORBIDDEN, "forbidden"),
            (true, false) => (StatusCode::OK, ""),
        };
        assert_eq!((r.status, r.code()), expected, "{who}: {method} {path}");
        if !can_read {
            assert_eq!(
                r.body["error"]["message"], "space team not found",
                "{who}: the answer must not tell the space exists"
            );
            assert!(
                !r.body.to_string().contains("secret"),
                "{who}: {method} {path} leaked {:?}",
                r.body
            );
        }
        cases += 1;
    }
    // Event stream.
    let http = reqwest::Client::new();
    let stream = http
        .get(format!("{}/v1/spaces/team/stream", served.base))
        .bearer_auth(api.token(who))
        .send()
        .await
        .unwrap();
    let expected = if can_read { 200 } else { 404 };
    assert_eq!(stream.status().as_u16(), expected, "{who}: stream");
    drop(stream);
    cases += 1;
    // WebSocket subscription: refused in band, and no signal follows.
    let mut ws = WsClient::connect(&served.base).await;
    ws.auth(&api.token(who)).await;
    let answer = ws.subscribe(&["team"]).await;
    if can_read {
        assert_eq!(answer["spaces"], json!(["team"]), "{who}: {answer}");
    } else {
        assert_eq!(answer["spaces"], json!([]), "{who}: {answer}");
        assert_eq!(answer["denied"], json!(["team"]), "{who}: {answer}");
        api.sync(
            "alice",
            "team",
            push(
                "a",
                &format!("probe-{who}"),
                0,
                vec![up("probe", "n", json!(who), &hlc(50, "a"))],
            ),
        )
        .await;
        let heard = ws.recv_within(Duration::from_millis(300)).await;
        assert!(
            heard.as_ref().is_none_or(|m| m["type"] != "sync-available"),
            "{who} heard a commit of a space they cannot see: {heard:?}"
        );
    }
    cases + 1
}

#[tokio::test]
async fn outsiders_removed_members_viewers_and_forgers_are_refused_everywhere() {
    matrix(false).await;
}

/// The same, with the collection mirrored into a table (docs/tables.md):
/// nothing refused reaches the table either.
#[tokio::test]
async fn the_matrix_holds_for_a_collection_mirrored_into_a_table() {
    matrix(true).await;
}

const MIRRORED: &str = r#"{"collections": {"todos": {"table": "todos",
    "fields": {"title": {"type": "string"}, "n": {"type": "json"}}}}}"#;

/// The mirrored table's `(id, title)` rows, as the app reads them.
async fn table_rows(api: &Api) -> Vec<(String, Option<String>)> {
    const SQL: &str = "SELECT id, title FROM todos ORDER BY id";
    match &api._guard {
        testing::Guard::Sqlite(dir) => {
            let file = rusqlite::Connection::open(dir.path().join("ferry.db")).unwrap();
            let mut stmt = file.prepare(SQL).unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        }
        testing::Guard::Postgres(db) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap()
        }
    }
}

async fn matrix(mirrored: bool) {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    store_file(&api, "alice", "team").await;
    if mirrored {
        super::tables::apply(&api, MIRRORED).await.unwrap();
    }
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "a",
                "b1",
                0,
                vec![up("t-1", "title", json!("secret"), &hlc(1, "a"))],
            ),
        )
        .await;
    let cursor = r.body["cursor"].as_u64().unwrap();
    api.get("/v1/me", "bob").await;
    api.add("alice", "team", "carol", "editor").await;
    api.add("alice", "team", "vera", "viewer").await;
    // Carol could see the space, then was removed.
    assert_eq!(
        api.get("/v1/spaces/team/changes", "carol").await.status,
        200
    );
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/carol",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let mut cases = 0;
    let before = snapshot(&api).await;
    cases += check(&api, &served, "bob", false, cursor).await;
    cases += check(&api, &served, "carol", false, cursor).await;
    cases += check(&api, &served, "vera", true, cursor).await;
    // Bob and Carol's WebSocket probes wrote one record each; nothing else
    // changed.
    let after = snapshot(&api).await;
    assert_eq!(after["members"], before["members"], "members changed");
    let titles: Vec<Value> = after["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "t-1")
        .map(|c| c["fields"]["title"]["value"].clone())
        .collect();
    assert_eq!(titles, vec![json!("secret")], "t-1 changed");

    // Forged tokens: signed by another key, unsigned, expired, mangled.
    let real = api.token("alice");
    let (head, rest) = real.split_once('.').unwrap();
    let (claims, _sig) = rest.split_once('.').unwrap();
    let other = Api::new().await.token("alice");
    let forged = [
        other,
        format!("{head}.{claims}."),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}."),
        format!("{head}.{claims}.{}", "A".repeat(86)),
        real.chars().rev().collect(),
        String::new(),
    ];
    for token in &forged {
        for (method, path, body, _) in attempts("team", cursor) {
            let r = api
                .call_with_token(method.clone(), &path, Some(token), body)
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "forged token {token:.20}: {method} {path}"
            );
            assert!(
                ["unauthorized", "invalid_token"].contains(&r.code()),
                "forged token {token:.20}: {method} {path}: {:?}",
                r.body
            );
            cases += 1;
        }
    }
    assert_eq!(
        snapshot(&api).await,
        after,
        "a forged token changed something"
    );
    // Creating a space under the team's id tells an outsider, a removed
    // member and the owner alike only that the id is taken.
    let owners = api
        .post("/v1/spaces", "alice", json!({"id": "team", "name": "x"}))
        .await;
    assert_eq!(owners.status, StatusCode::CONFLICT);
    for who in ["bob", "carol", "vera"] {
        let r = api
            .post("/v1/spaces", who, json!({"id": "team", "name": "mine"}))
            .await;
        assert_eq!((r.status, &r.body), (owners.status, &owners.body), "{who}");
        assert!(
            !r.body.to_string().contains("secret"),
            "{who}: {:?}",
            r.body
        );
        cases += 1;
    }
    // A member who read Alice's client id from an HLC pushes her next
    // batch id first, under her client id: refused (a client id is its
    // first pusher's), and hers is applied, not taken for a replay.
    api.add("alice", "team", "mallory", "editor").await;
    let squat = api
        .sync(
            "mallory",
            "team",
            push("a", "b2", 0, vec![up("m", "n", json!(1), &hlc(60, "a"))]),
        )
        .await;
    assert_eq!(
        (squat.status, squat.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let hers = api
        .sync(
            "alice",
            "team",
            push(
                "a",
                "b2",
                0,
                vec![up("t-1", "title", json!("hers"), &hlc(61, "a"))],
            ),
        )
        .await;
    assert_eq!(hers.body["applied"], 1, "{:?}", hers.body);
    cases += 1;
    assert_eq!(
        snapshot(&api).await["members"].as_array().unwrap().len(),
        after["members"].as_array().unwrap().len() + 1,
    );
    println!("attack matrix: {cases} cases refused");
    assert!(cases >= 163, "the matrix shrank: {cases} cases");
    if mirrored {
        // The table holds what members wrote (Alice's record and the
        // probes she pushed), nothing an attacker sent.
        assert_eq!(
            table_rows(&api).await,
            [
                ("probe".to_owned(), None),
                ("t-1".to_owned(), Some("hers".to_owned()))
            ]
        );
    }
}
