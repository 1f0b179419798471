//! The worked example of docs/integrations.md, against a real `ferry serve`
//! configured with a `[[webhooks]]` endpoint: a browser extension holding
//! an API token limited to one space adds a bookmark card; the app's
//! backend hears of it by a signed webhook, fetches the page's title and
//! writes it back into the card's server-only `title` with an API token of
//! its own; the extension's token cannot write that field. Then `ferry
//! admin webhooks` lists, adds and removes endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use common::{Db, Server, ferry};
use ferry_server::webhooks::sign;
use serde_json::{Value, json};

const SECRET: &str = "whsec-bookmarks-0123456789";

const SCHEMA: &str = r#"
[collections.cards]
fields.url   = { type = "string", required = true }
fields.title = { type = "string", server_only = true }
"#;

/// The app's backend: what it needs to write back.
struct Backend {
    ferry: String,
    token: tokio::sync::OnceCell<String>,
}

/// The webhook receiver: checks the signature, answers at once, and
/// fetches each new card's title in the background.
async fn hook(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let signature = headers
        .get(sign::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if !sign::verify(signature, SECRET, &body, now, 300) {
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    let delivery: Value = serde_json::from_slice(&body).unwrap();
    for record in delivery["records"].as_array().cloned().unwrap_or_default() {
        let untitled = record["deleted"].is_null() && record["fields"]["title"]["value"].is_null();
        if record["collection"] != "cards" || !untitled {
            continue;
        }
        let b = b.clone();
        let space = delivery["space"].as_str().unwrap().to_owned();
        tokio::spawn(async move {
            let url = record["fields"]["url"]["value"]
                .as_str()
                .unwrap()
                .to_owned();
            let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let title = page
                .split("<title>")
                .nth(1)
                .and_then(|t| t.split("</title>").next())
                .unwrap_or(&url);
            let id = record["id"].as_str().unwrap();
            let r = reqwest::Client::new()
                .patch(format!(
                    "{}/v1/spaces/{space}/collections/cards/records/{id}",
                    b.ferry
                ))
                .bearer_auth(b.token.get().unwrap())
                .json(&json!({"fields": {"title": title}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        });
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(
        "<html><head><title>Rust in production</title></head><body>...</body></html>",
    )
}

#[tokio::test]
async fn an_extension_adds_a_card_and_the_backend_titles_it_through_a_webhook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    let backend = Arc::new(Backend {
        ferry: String::new(),
        token: tokio::sync::OnceCell::new(),
    });
    let db = Db::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    let schema = dir.path().join("ferry.schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    std::fs::write(
        &config,
        format!(
            "schema = {schema:?}\n\n[[webhooks]]\nid = \"backend\"\nurl = \"{site}/hook\"\n\
             secrets = [\"{SECRET}\"]\ncollections = [\"cards\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(&db, &["--config", config.to_str().unwrap()]);
    let backend = Arc::new(Backend {
        ferry: server.url.clone(),
        token: backend.token.clone(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .route("/article", axum::routing::get(page))
        .with_state(backend.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The person signs in (a session) and makes two tokens: one for the
    // extension, limited to their space; one for the backend, which may
    // write server-only fields.
    let session = server.token("ada@example.com");
    let http = reqwest::Client::new();
    let me: Value = http
        .get(format!("{}/v1/me", server.url))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let space = format!("user:{}", me["user"]["id"].as_str().unwrap());
    let make = |body: Value| {
        let (http, url, session) = (http.clone(), server.url.clone(), session.clone());
        async move {
            let made: Value = http
                .post(format!("{url}/v1/tokens"))
                .bearer_auth(session)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            made["token"].as_str().unwrap().to_owned()
        }
    };
    let extension =
        make(json!({"name": "Bookmarks extension", "spaces": [space], "access": "write"})).await;
    backend
        .token
        .set(make(json!({"name": "backend", "access": "write", "server_fields": true})).await)
        .unwrap();

    // The extension saves the page it is on.
    let card = format!(
        "{}/v1/spaces/{space}/collections/cards/records/c1",
        server.url
    );
    let saved = http
        .put(&card)
        .bearer_auth(&extension)
        .json(&json!({"fields": {"url": format!("{site}/article")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200, "{}", saved.text().await.unwrap());
    // It may not write the title itself.
    let refused = http
        .patch(&card)
        .bearer_auth(&extension)
        .json(&json!({"fields": {"title": "mine"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // The backend titles it.
    let mut title = Value::Null;
    for _ in 0..100 {
        let read: Value = http
            .get(&card)
            .bearer_auth(&extension)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        title = read["fields"]["title"]["value"].clone();
        if !title.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(title, "Rust in production");

    // The operator's view.
    let admin = |args: &[&str]| {
        let out = ferry()
            .arg("admin")
            .arg("webhooks")
            .args(args)
            .args(db.args())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = admin(&["list"]);
    assert!(
        listed.contains("\"id\":\"backend\"") && !listed.contains(SECRET),
        "{listed}"
    );
    admin(&[
        "add",
        "--id",
        "search",
        "--url",
        "https://search.example.com/ferry",
        "--secret",
        "another-secret-0123456789",
        "--collection",
        "notes",
    ]);
    assert_eq!(admin(&["list"]).lines().count(), 2);
    assert_eq!(admin(&["dead"]), "");
    admin(&["remove", "search"]);
    assert_eq!(admin(&["list"]).lines().count(), 1);
    let bad = ferry()
        .args([
            "admin",
            "webhooks",
            "add",
            "--id",
            "x",
            "--url",
            "ftp://x",
            "--secret",
            "0123456789abcdef",
        ])
        .args(db.args())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("http:// or https://"));
}
