//! Handler tests: the whole router driven without a socket, on a fresh
//! SQLite database per test. This file is the harness; each module holds
//! the tests of one area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod app;
mod attack;
mod bad_input;
mod billing;
mod billing_plans;
mod burst;
mod conflicts;
mod external;
mod files;
mod files_quota;
mod files_resume;
mod files_s3;
mod flood;
mod hardening;
mod jwks;
mod ops;
mod permissions;
mod quotas;
mod realtime;
mod records;
mod schema;
mod signin;
mod sync;
mod tables;
mod tables_adopt;
mod tables_checks;
mod tables_conflicts;
mod tables_refused;
mod tables_sqlite;
mod tables_types;
mod tables_uuid;
mod tokens;
mod webhooks;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ferry_core::{ClientId, UserId};
use ferry_server::auth::mail::MailerConfig;
use ferry_server::clock::wall_ms;
use ferry_server::testing::Served;
use ferry_server::{AppState, Settings, routes, testing};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

#[derive(Debug)]
pub struct Api {
    pub app: Router,
    pub state: AppState,
    pub _guard: testing::Guard,
    pub mail_dir: tempfile::TempDir,
    /// Where the API keeps files.
    pub files_dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    /// The API over a fresh database of the backend `FERRY_TEST_BACKEND`
    /// names (SQLite by default).
    pub async fn new() -> Api {
        Api::configured(|_| {}).await
    }

    /// The API with settings changed by `configure`.
    pub async fn configured(configure: impl FnOnce(&mut Settings)) -> Api {
        Api::on(testing::fresh_store().await, configure).await
    }

    /// The API over a fresh PostgreSQL database, whatever the backend of
    /// the run: for what only PostgreSQL does (tables of the app's own).
    pub async fn postgres() -> Api {
        Api::on(testing::fresh_postgres().await, |_| {}).await
    }

    /// The API over `store`, kept alive by `guard`.
    pub async fn on(
        (store, guard): (std::sync::Arc<dyn ferry_server::Store>, testing::Guard),
        configure: impl FnOnce(&mut Settings),
    ) -> Api {
        let mail_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(ClientId::new("server-1").unwrap(), "http://ferry.test");
        settings.mailer = MailerConfig::Dir(mail_dir.path().to_owned());
        let files_dir = tempfile::tempdir().unwrap();
        settings.files.dir = Some(files_dir.path().to_owned());
        configure(&mut settings);
        let state = AppState::new(store, settings).await.unwrap();
        Api {
            app: routes::app(state.clone()),
            state,
            _guard: guard,
            mail_dir,
            files_dir,
        }
    }

    /// Serves this API on a socket (127.0.0.1, port 0) as well, for
    /// clients that need one (WebSocket, streams); requests through
    /// [`Api::call`] share its state.
    pub async fn serve(&self) -> Served {
        Served::start(self.state.clone()).await
    }

    /// The mails sent so far, oldest first, waiting up to 2 s for `n`.
    pub async fn mails(&self, n: usize) -> Vec<String> {
        for _ in 0..40 {
            let mut names: Vec<_> = std::fs::read_dir(self.mail_dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            if names.len() >= n {
                names.sort();
                return names
                    .iter()
                    .map(|p| std::fs::read_to_string(p).unwrap())
                    .collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} mails arrived");
    }

    pub fn token(&self, user: &str) -> String {
        self.state
            .issuer
            .get()
            .mint(&UserId::new(user).unwrap(), wall_ms() / 1000, 600)
            .unwrap()
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
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

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let token = user.map(|u| self.token(u));
        self.call_with_token(method, path, token.as_deref(), body)
            .await
    }

    /// A request with `token` as the bearer token, whatever issued it.
    pub async fn call_with_token(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                let bytes = serde_json::to_vec(&v).unwrap();
                req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, bytes.len());
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    /// `GET path` with `token` as the bearer token, whatever issued it.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.call_with_token(Method::GET, path, Some(token), None)
            .await
    }

    pub async fn get(&self, path: &str, user: &str) -> Reply {
        self.call(Method::GET, path, Some(user), None).await
    }

    pub async fn post(&self, path: &str, user: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(user), Some(body)).await
    }

    /// Creates space `id` owned by `owner`.
    pub async fn space(&self, owner: &str, id: &str) {
        let r = self
            .post("/v1/spaces", owner, json!({"id": id, "name": id}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }

    pub async fn sync(&self, user: &str, space: &str, body: Value) -> Reply {
        self.post(&format!("/v1/spaces/{space}/sync"), user, body)
            .await
    }

    /// Adds `user` (seen once so they exist) to `space` with `role`.
    pub async fn add(&self, owner: &str, space: &str, user: &str, role: &str) {
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
pub fn hlc(offset_ms: u64, node: &str) -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| wall_ms() - 60_000);
    format!("{:015}:00000:{node}", base + offset_ms)
}

pub fn up(id: &str, field: &str, value: Value, hlc: &str) -> Value {
    json!({"op": "upsert", "collection": "todos", "id": id,
           "fields": {field: {"value": value, "hlc": hlc}}})
}

pub fn del(id: &str, hlc: &str) -> Value {
    json!({"op": "delete", "collection": "todos", "id": id, "hlc": hlc})
}

pub fn push(client: &str, batch: &str, cursor: u64, changes: Vec<Value>) -> Value {
    json!({"client_id": client, "batch_id": batch, "cursor": cursor, "changes": changes})
}
