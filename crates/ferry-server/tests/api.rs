//! Handler tests: the whole router driven without a socket, on a fresh
//! SQLite database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ferry_core::{ClientId, UserId};
use ferry_server::clock::wall_ms;
use ferry_server::store::SqliteStore;
use ferry_server::{AppState, Settings, routes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    app: Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("ferry.db"))
            .await
            .unwrap();
        let state = AppState::new(
            std::sync::Arc::new(store),
            Settings {
                node_id: ClientId::new("server-1").unwrap(),
                max_clock_skew_ms: 300_000,
            },
        )
        .await
        .unwrap();
        Api {
            app: routes::app(state.clone()),
            state,
            _dir: dir,
        }
    }

    fn token(&self, user: &str) -> String {
        self.state
            .issuer
            .mint(&UserId::new(user).unwrap(), wall_ms() / 1000, 600)
            .unwrap()
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(user) = user {
            req = req.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token(user)),
            );
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn get(&self, path: &str, user: &str) -> Reply {
        self.call(Method::GET, path, Some(user), None).await
    }

    async fn post(&self, path: &str, user: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(user), Some(body)).await
    }

    /// Creates space `id` owned by `owner`.
    async fn space(&self, owner: &str, id: &str) {
        let r = self
            .post("/v1/spaces", owner, json!({"id": id, "name": id}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }

    async fn sync(&self, user: &str, space: &str, body: Value) -> Reply {
        self.post(&format!("/v1/spaces/{space}/sync"), user, body)
            .await
    }

    /// Adds `user` (seen once so they exist) to `space` with `role`.
    async fn add(&self, owner: &str, space: &str, user: &str, role: &str) {
        self.get("/v1/me", user).await;
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/spaces/{space}/members/{user}"),
                Some(owner),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
}

/// An HLC `offset_ms` after a fixed moment a minute before the tests began.
fn hlc(offset_ms: u64, node: &str) -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| wall_ms() - 60_000);
    format!("{:015}:00000:{node}", base + offset_ms)
}

fn up(id: &str, field: &str, value: Value, hlc: &str) -> Value {
    json!({"op": "upsert", "collection": "todos", "id": id,
           "fields": {field: {"value": value, "hlc": hlc}}})
}

fn del(id: &str, hlc: &str) -> Value {
    json!({"op": "delete", "collection": "todos", "id": id, "hlc": hlc})
}

fn push(client: &str, batch: &str, cursor: u64, changes: Vec<Value>) -> Value {
    json!({"client_id": client, "batch_id": batch, "cursor": cursor, "changes": changes})
}

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
async fn health_metrics_and_jwks() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.sync(
        "alice",
        "team",
        push("c", "b", 0, vec![up("a", "t", json!(1), &hlc(1, "c"))]),
    )
    .await;
    let h = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(h.body, json!({"status": "ok", "db": "ok"}));
    let jwks = api
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let m = api.call(Method::GET, "/metrics", None, None).await;
    let text = m.body.as_str().unwrap();
    assert!(text.contains(r#"ferry_http_requests_total{route="/v1/spaces/{space}/sync",method="POST",status="200"} 1"#), "{text}");
    assert!(text.contains("ferry_changes_applied_total 1"), "{text}");
    assert!(
        text.contains("ferry_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let changes: Vec<Value> = (0..200)
        .map(|i| {
            up(
                &format!("r{i}"),
                "title",
                json!("some text to compress"),
                &hlc(1, "c"),
            )
        })
        .collect();
    api.sync("alice", "team", push("c", "b", 0, changes)).await;
    let req = Request::get("/v1/spaces/team/changes")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
}
