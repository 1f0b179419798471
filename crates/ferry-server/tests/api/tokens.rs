//! API tokens (docs/server-rules.md): the scope matrix (every way to touch
//! a space × read and write tokens × in and out of scope × revoked and
//! expired), what a token can never do (sign-in, account, members, token
//! management), its owner's rights at the moment of use, the rate limit,
//! bad input, and the end of its connections when it is revoked.

use std::time::Duration;

use ferry_server::testing::WsClient;

use super::attack::{attempts, snapshot};
use super::*;

/// Makes a token as `user`; returns the whole answer.
pub async fn make(api: &Api, user: &str, body: Value) -> Value {
    let r = api.post("/v1/tokens", user, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

/// The secret of a new token of `user`.
pub async fn token(api: &Api, user: &str, body: Value) -> String {
    make(api, user, body).await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// How a token stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Read,
    Write,
    OutOfScope,
    Revoked,
    Expired,
}

/// Routes of space data that take a session only.
fn session_only(path: &str) -> bool {
    path.contains("/members") || path.contains("/invites")
}

async fn try_everything(api: &Api, served: &Served, kind: Kind, token: &str) -> usize {
    let before = snapshot(api).await;
    let mut cases = 0;
    for (method, path, body, writes) in attempts("team", before["cursor"].as_u64().unwrap()) {
        let r = api
            .call_with_token(method.clone(), &path, Some(token), body)
            .await;
        let case = format!("{kind:?}: {method} {path}: {} {:?}", r.status, r.body);
        if session_only(&path) {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{case}");
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("API token"),
                "{case}"
            );
        } else {
            match (kind, writes) {
                (Kind::Revoked | Kind::Expired, _) => {
                    assert_eq!(
                        (r.status, r.code()),
                        (StatusCode::UNAUTHORIZED, "invalid_token"),
                        "{case}"
                    )
                }
                (Kind::OutOfScope, _) => {
                    assert_eq!(r.status, StatusCode::NOT_FOUND, "{case}");
                    assert_eq!(r.body["error"]["message"], "space team not found", "{case}");
                }
                (Kind::Read, true) => assert_eq!(r.status, StatusCode::FORBIDDEN, "{case}"),
                (Kind::Read, false) => assert_eq!(r.status, StatusCode::OK, "{case}"),
                // A write token reads and writes (a record it deleted
                // earlier in the list answers 404 or 409 for itself, never
                // for the space).
                (Kind::Write, _) => assert!(
                    r.status.is_success()
                        || (matches!(r.status, StatusCode::NOT_FOUND | StatusCode::CONFLICT)
                            && r.body["error"]["message"].as_str().is_some_and(|m| m
                                .starts_with("record ")
                                || m.starts_with("file "))),
                    "{case}"
                ),
            }
        }
        cases += 1;
    }
    if kind != Kind::Write {
        assert_eq!(
            snapshot(api).await,
            before,
            "{kind:?}: a refused token changed something"
        );
    }
    // The event stream.
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/team/stream", served.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let expected = match kind {
        Kind::Read | Kind::Write => 200,
        Kind::OutOfScope => 404,
        Kind::Revoked | Kind::Expired => 401,
    };
    assert_eq!(stream.status().as_u16(), expected, "{kind:?}: stream");
    drop(stream);
    // A WebSocket subscription.
    let mut ws = WsClient::connect(&served.base).await;
    ws.send(json!({"type": "auth", "token": token})).await;
    match kind {
        Kind::Revoked | Kind::Expired => {
            assert_eq!(ws.closed().await, Some(4401), "{kind:?}: ws");
        }
        _ => {
            assert_eq!(ws.recv().await["type"], "auth-ok");
            let answer = ws.subscribe(&["team"]).await;
            let reached = if kind == Kind::OutOfScope {
                json!([])
            } else {
                json!(["team"])
            };
            assert_eq!(answer["spaces"], reached, "{kind:?}: {answer}");
        }
    }
    cases + 2
}

#[tokio::test]
async fn the_scope_matrix_holds_on_every_route() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    api.space("alice", "other").await;
    super::attack::store_file(&api, "alice", "team").await;
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/t-1",
            Some("alice"),
            Some(json!({"fields": {"title": "secret"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let write = token(
        &api,
        "alice",
        json!({"name": "ext", "spaces": ["team"], "access": "write"}),
    )
    .await;
    let read = token(
        &api,
        "alice",
        json!({"name": "ro", "spaces": ["team"], "access": "read"}),
    )
    .await;
    let elsewhere = token(
        &api,
        "alice",
        json!({"name": "o", "spaces": ["other"], "access": "write"}),
    )
    .await;
    let revoked = make(&api, "alice", json!({"name": "r", "access": "write"})).await;
    let r = api
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", revoked["id"].as_str().unwrap()),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let expired = token(
        &api,
        "alice",
        json!({"name": "e", "access": "write", "expires_in": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut cases = 0;
    for (kind, secret) in [
        (Kind::Read, read.as_str()),
        (Kind::OutOfScope, &elsewhere),
        (Kind::Revoked, revoked["token"].as_str().unwrap()),
        (Kind::Expired, &expired),
        (Kind::Write, &write),
    ] {
        cases += try_everything(&api, &served, kind, secret).await;
    }
    assert!(cases >= 5 * 19, "{cases} cases");
}

#[tokio::test]
async fn a_token_never_signs_in_nor_manages_accounts_or_tokens() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let secret = token(&api, "alice", json!({"name": "all", "access": "write"})).await;
    let id = make(&api, "alice", json!({"name": "x", "access": "read"})).await["id"].clone();
    let tries = [
        (Method::GET, "/v1/me".to_owned(), None),
        (
            Method::POST,
            "/v1/spaces".to_owned(),
            Some(json!({"name": "n"})),
        ),
        (Method::GET, "/v1/tokens".to_owned(), None),
        (
            Method::POST,
            "/v1/tokens".to_owned(),
            Some(json!({"name": "more", "access": "write"})),
        ),
        (
            Method::DELETE,
            format!("/v1/tokens/{}", id.as_str().unwrap()),
            None,
        ),
    ];
    for (method, path, body) in tries {
        let r = api
            .call_with_token(method.clone(), &path, Some(&secret), body)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {:?}",
            r.body
        );
    }
    // Still two tokens, the one above not revoked.
    assert_eq!(
        api.get("/v1/tokens", "alice").await.body["tokens"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // What it may do: list the spaces it reaches, read the schema.
    let spaces = api.get_with_token("/v1/spaces", &secret).await;
    assert_eq!(spaces.status, StatusCode::OK);
    let r = api.get_with_token("/v1/schema", &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_token_is_shown_once_listed_with_its_last_use_and_revoked_by_its_owner_only() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.space("alice", "solo").await;
    let made = make(&api, "alice", json!({"name": "  Bookmarks extension ", "spaces": ["team", "team"], "access": "write", "expires_in": 3600})).await;
    let secret = made["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("fyt_"), "{made}");
    assert_eq!(made["name"], "Bookmarks extension");
    assert_eq!(made["spaces"], json!(["team"]));
    assert!(made["expires_at"].as_u64().unwrap() > wall_ms());
    // Listed without the secret, never used yet.
    let listed = api.get("/v1/tokens", "alice").await.body["tokens"][0].clone();
    assert_eq!(listed["id"], made["id"]);
    assert!(
        listed.get("token").is_none() && !listed.to_string().contains(&secret[20..]),
        "{listed}"
    );
    assert_eq!(listed["last_used_at"], Value::Null);
    // Used: the use is recorded. It lists only the spaces it reaches.
    let spaces = api.get_with_token("/v1/spaces", &secret).await;
    assert_eq!(
        spaces.body["spaces"].as_array().unwrap().len(),
        1,
        "{:?}",
        spaces.body
    );
    assert_eq!(spaces.body["spaces"][0]["id"], "team");
    let listed = api.get("/v1/tokens", "alice").await.body["tokens"][0].clone();
    assert!(listed["last_used_at"].as_u64().unwrap() >= made["created_at"].as_u64().unwrap());
    // Another user cannot see or revoke it.
    assert_eq!(
        api.get("/v1/tokens", "mallory").await.body["tokens"],
        json!([])
    );
    let path = format!("/v1/tokens/{}", made["id"].as_str().unwrap());
    let r = api.call(Method::DELETE, &path, Some("mallory"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get_with_token("/v1/spaces", &secret).await.status,
        StatusCode::OK
    );
    // Its owner can, once.
    assert_eq!(
        api.call(Method::DELETE, &path, Some("alice"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &path, Some("alice"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get_with_token("/v1/spaces", &secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/v1/tokens", "alice").await.body["tokens"],
        json!([])
    );
    // A forged secret beside a real id is refused alike.
    let forged = format!("{}{}", &secret[..secret.len() - 4], "AAAA");
    assert_eq!(
        api.get_with_token("/v1/spaces", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_never_reaches_past_its_owners_rights_now() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.add("alice", "team", "bob", "editor").await;
    let secret = token(
        &api,
        "bob",
        json!({"name": "ext", "spaces": ["team"], "access": "write"}),
    )
    .await;
    let rec = "/v1/spaces/team/collections/todos/records/t-1";
    let put = |v: &str| json!({"fields": {"title": v}});
    let r = api
        .call_with_token(Method::PUT, rec, Some(&secret), Some(put("one")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Demoted to viewer: the token reads, and cannot write.
    api.add("alice", "team", "bob", "viewer").await;
    let r = api
        .call_with_token(Method::PUT, rec, Some(&secret), Some(put("two")))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(
        api.get_with_token(rec, &secret).await.body["fields"]["title"]["value"],
        "one"
    );
    // Removed: the space is gone for the token too.
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/bob",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(
        api.get_with_token(rec, &secret).await.status,
        StatusCode::NOT_FOUND
    );
    // A token for every space reaches only the owner's.
    let all = token(&api, "bob", json!({"name": "all", "access": "write"})).await;
    assert_eq!(
        api.get_with_token(rec, &all).await.status,
        StatusCode::NOT_FOUND
    );
    // A token cannot be made for a space its owner is not in.
    let r = api
        .post(
            "/v1/tokens",
            "bob",
            json!({"name": "x", "spaces": ["team"], "access": "read"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn requests_with_a_token_are_rate_limited() {
    let api = Api::configured(|s| {
        s.api_tokens.per_second = 1;
        s.api_tokens.burst = 3;
    })
    .await;
    api.space("alice", "team").await;
    let secret = token(&api, "alice", json!({"name": "x", "access": "read"})).await;
    for _ in 0..3 {
        assert_eq!(
            api.get_with_token("/v1/spaces", &secret).await.status,
            StatusCode::OK
        );
    }
    let r = api.get_with_token("/v1/spaces", &secret).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(r.headers.contains_key("retry-after"));
    // Another token of the same user has its own.
    let other = token(&api, "alice", json!({"name": "y", "access": "read"})).await;
    assert_eq!(
        api.get_with_token("/v1/spaces", &other).await.status,
        StatusCode::OK
    );
    // The owner's session is not limited by them.
    assert_eq!(api.get("/v1/spaces", "alice").await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_token_requests_are_refused_and_make_nothing() {
    let api = Api::configured(|s| s.api_tokens.max_per_user = 2).await;
    api.space("alice", "team").await;
    let long = "n".repeat(101);
    for body in [
        json!({"name": "", "access": "read"}),
        json!({"name": "  ", "access": "read"}),
        json!({"name": long, "access": "read"}),
        json!({"name": "a\u{0}b", "access": "read"}),
        json!({"name": "x"}),
        json!({"name": "x", "access": "admin"}),
        json!({"name": "x", "access": "read", "spaces": []}),
        json!({"name": "x", "access": "read", "spaces": ["bad/space"]}),
        json!({"name": "x", "access": "read", "expires_in": 0}),
        json!({"name": "x", "access": "read", "expires_in": 4_000_000_000u64}),
        json!({"name": "x", "access": "read", "user_id": "bob"}),
        json!([1, 2]),
    ] {
        let r = api.post("/v1/tokens", "alice", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
    }
    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let r = api
        .post(
            "/v1/tokens",
            "alice",
            json!({"name": "x", "access": "read", "spaces": many}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get("/v1/tokens", "alice").await.body["tokens"],
        json!([])
    );
    // Past the number a user holds: refused until one is revoked.
    let first = make(&api, "alice", json!({"name": "1", "access": "read"})).await;
    make(&api, "alice", json!({"name": "2", "access": "read"})).await;
    let r = api
        .post(
            "/v1/tokens",
            "alice",
            json!({"name": "3", "access": "read"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{:?}",
        r.body
    );
    let path = format!("/v1/tokens/{}", first["id"].as_str().unwrap());
    api.call(Method::DELETE, &path, Some("alice"), None).await;
    make(&api, "alice", json!({"name": "3", "access": "read"})).await;
    // Odd ids to revoke.
    for id in [
        "x".repeat(65),
        "..".into(),
        "%00".into(),
        format!("{}%00", "A".repeat(21)),
    ] {
        let r = api
            .call(
                Method::DELETE,
                &format!("/v1/tokens/{id}"),
                Some("alice"),
                None,
            )
            .await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST,
            "{id}: {:?}",
            r.body
        );
    }
    // Odd bearer strings that look like tokens.
    for odd in ["fyt_", "fyt_x", &format!("fyt_{}", "A".repeat(5000))] {
        let r = api.get_with_token("/v1/spaces", odd).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{odd:.20}"
        );
    }
}

#[tokio::test]
async fn revoking_a_token_ends_its_websocket_and_event_stream_at_once() {
    let api = Api::new().await;
    let served = api.serve().await;
    api.space("alice", "team").await;
    let made = make(&api, "alice", json!({"name": "x", "access": "read"})).await;
    let secret = made["token"].as_str().unwrap();
    let mut ws = WsClient::connect(&served.base).await;
    ws.auth(secret).await;
    assert_eq!(ws.subscribe(&["team"]).await["spaces"], json!(["team"]));
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/spaces/team/stream", served.base))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // The first event (the head) arrives.
    assert!(stream.chunk().await.unwrap().is_some());
    // A session's connection of the same user goes on.
    let mut session = WsClient::connect(&served.base).await;
    session.auth(&api.token("alice")).await;
    session.subscribe(&["team"]).await;

    let path = format!("/v1/tokens/{}", made["id"].as_str().unwrap());
    assert_eq!(
        api.call(Method::DELETE, &path, Some("alice"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ws.closed().await, Some(4401));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream did not end");
    assert_eq!(session.recv_within(Duration::from_millis(300)).await, None);

    // A session's WebSocket cannot turn into a token's (which would keep
    // following the session's spaces), nor the other way.
    let other = make(
        &api,
        "alice",
        json!({"name": "y", "access": "read", "spaces": ["team"]}),
    )
    .await;
    session
        .send(json!({"type": "auth", "token": other["token"].as_str().unwrap()}))
        .await;
    assert_eq!(session.closed().await, Some(4401));
}
