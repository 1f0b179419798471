//! Who may do what: tokens, spaces, members and roles.

use super::*;

#[tokio::test]
async fn me_shows_the_user_and_their_personal_space() {
    let api = Api::new().await;
    let me = api.get("/v1/me", "alice").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["id"], "alice");
    assert_eq!(me.body["entitlement"]["plan"], "free");
    let spaces = api.get("/v1/spaces", "alice").await;
    assert_eq!(
        spaces.body,
        json!({"spaces": [{"id": "user:alice", "name": "Personal", "role": "owner"}]})
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let api = Api::new().await;
    let none = api.call(Method::GET, "/v1/me", None, None).await;
    assert_eq!(
        (none.status, none.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");

    let expired = api
        .state
        .issuer
        .get()
        .mint(&UserId::new("alice").unwrap(), wall_ms() / 1000 - 700, 600)
        .unwrap();
    for auth in [
        format!("Bearer {expired}"),
        "Bearer nonsense".into(),
        format!("Basic {}", api.token("alice")),
        "Bearer ".into(),
    ] {
        let req = Request::get("/v1/spaces")
            .header(header::AUTHORIZATION, auth.clone())
            .body(Body::empty())
            .unwrap();
        let r = api.send(req).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{auth}"
        );
    }
}

#[tokio::test]
async fn no_one_reads_or_writes_another_users_space() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.sync(
        "alice",
        "team",
        push(
            "c",
            "b",
            0,
            vec![up("t-1", "title", json!("secret"), &hlc(1, "c"))],
        ),
    )
    .await;
    api.get("/v1/me", "bob").await;
    let rec = "/collections/todos/records/t-1";
    for space in ["team", "user:alice", "does-not-exist"] {
        let base = format!("/v1/spaces/{space}");
        let attempts = [
            (
                Method::POST,
                format!("{base}/sync"),
                Some(push("b", "b", 0, vec![del("t-1", &hlc(1, "b"))])),
            ),
            (
                Method::POST,
                format!("{base}/sync"),
                Some(json!({"client_id": "b"})),
            ),
            (Method::GET, format!("{base}/changes"), None),
            (
                Method::GET,
                format!("{base}/collections/todos/records"),
                None,
            ),
            (Method::GET, format!("{base}{rec}"), None),
            (
                Method::PUT,
                format!("{base}{rec}"),
                Some(json!({"fields": {"title": "mine"}})),
            ),
            (
                Method::PATCH,
                format!("{base}{rec}"),
                Some(json!({"fields": {"title": "mine"}})),
            ),
            (Method::DELETE, format!("{base}{rec}"), None),
            (Method::GET, format!("{base}/members"), None),
            (
                Method::PUT,
                format!("{base}/members/bob"),
                Some(json!({"role": "owner"})),
            ),
            (Method::DELETE, format!("{base}/members/alice"), None),
            (
                Method::POST,
                format!("{base}/invites"),
                Some(json!({"email": "b@x.io", "role": "owner"})),
            ),
        ];
        for (method, path, body) in attempts {
            let r = api.call(method.clone(), &path, Some("bob"), body).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {path}"
            );
            assert_eq!(
                r.body["error"]["message"],
                format!("space {space} not found"),
                "the answer does not tell whether the space exists"
            );
        }
    }
    let spaces = api.get("/v1/spaces", "bob").await;
    assert_eq!(spaces.body["spaces"].as_array().unwrap().len(), 1);
    let r = api
        .get("/v1/spaces/team/collections/todos/records/t-1", "alice")
        .await;
    assert_eq!(r.body["fields"]["title"]["value"], "secret", "untouched");
    assert_eq!(
        api.get("/v1/spaces/team/members", "alice").await.body["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn viewers_read_but_cannot_write_and_only_owners_manage() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.add("alice", "team", "vera", "viewer").await;
    api.add("alice", "team", "ed", "editor").await;

    let r = api
        .sync(
            "vera",
            "team",
            push("v", "b", 0, vec![up("t", "x", json!(1), &hlc(1, "v"))]),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/collections/todos/records/t",
            Some("vera"),
            Some(json!({"fields": {"x": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/collections/todos/records/t",
            Some("vera"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A pure pull is reading.
    let r = api.sync("vera", "team", json!({"client_id": "v"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["changes"],
        json!([]),
        "the viewer's push applied nothing"
    );

    let r = api
        .sync(
            "ed",
            "team",
            push("e", "b", 0, vec![up("t", "x", json!(1), &hlc(1, "e"))]),
        )
        .await;
    assert_eq!(r.body["applied"], 1);
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/members/vera",
            Some("ed"),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = api
        .post(
            "/v1/spaces/team/invites",
            "ed",
            json!({"email": "x@y.z", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Anyone may leave.
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/vera",
            Some("vera"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/spaces/team/changes", "vera").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn members_invites_and_the_last_owner() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let r = api
        .post(
            "/v1/spaces/team/invites",
            "alice",
            json!({"email": " Bob@Example.com", "role": "editor"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["email"], "bob@example.com");
    assert_eq!(r.body["role"], "editor");
    let bob = r.body["user_id"].as_str().unwrap().to_owned();

    let members = api.get("/v1/spaces/team/members", "alice").await.body;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);

    let r = api
        .call(
            Method::PUT,
            &format!("/v1/spaces/team/members/{bob}"),
            Some("alice"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["role"]),
        (StatusCode::OK, &json!("viewer"))
    );
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/members/ghost",
            Some("alice"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .call(
            Method::PUT,
            &format!("/v1/spaces/team/members/{bob}"),
            Some("alice"),
            Some(json!({"role": "king"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/team/members/alice",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = api
        .call(
            Method::DELETE,
            &format!("/v1/spaces/team/members/{bob}"),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .post(
            "/v1/spaces/team/invites",
            "alice",
            json!({"email": "not-an-email", "role": "editor"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_signing_key_added_elsewhere_is_picked_up_and_old_tokens_keep_working() {
    use ferry_server::auth::issuer::{Issuer, generate_key};
    let api = Api::new().await;
    let old_token = api.token("alice");
    // Another node (or `ferry admin rotate-key`) adds a key.
    let key = generate_key(wall_ms() + 1).unwrap();
    api.state.store.add_signing_key(key.clone()).await.unwrap();
    let other_node = Issuer::from_keys(&[key]).unwrap();
    let new_token = other_node
        .mint(&UserId::new("alice").unwrap(), wall_ms() / 1000, 600)
        .unwrap();
    for token in [&new_token, &old_token] {
        let reply = api.get_with_token("/v1/me", token).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let jwks = api
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // A forged key id costs no reload once one happened recently.
    let forged = format!("{}x", &new_token[..new_token.len() - 1]);
    let reply = api.get_with_token("/v1/me", &forged).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
