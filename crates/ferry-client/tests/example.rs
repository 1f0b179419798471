//! The example a Rust developer copies first (`examples/notes.rs`, shown in
//! docs/rust-client.md), run as written against a real server: signed in
//! by link the first time, straight on the second, each write on the
//! server before it returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/notes.rs"]
mod example;

use std::time::Duration;

use ferry_client::request_magic_link;
use ferry_core::ClientId;
use ferry_server::auth::mail::MailerConfig;
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings};

/// The newest sign-in link in `dir`.
async fn link_in(dir: &std::path::Path) -> String {
    for _ in 0..200 {
        for entry in std::fs::read_dir(dir).unwrap() {
            // Whole mails only, never one being written.
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if let Some(at) = text.find("http") {
                return text[at..].split_whitespace().next().unwrap().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no sign-in mail");
}

#[tokio::test]
async fn the_rust_example_runs_twice_and_its_writes_reach_the_server() {
    let (store, _guard) = testing::fresh_store().await;
    let mail = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = Settings::new(ClientId::new("server").unwrap(), base.clone());
    settings.mailer = MailerConfig::Dir(mail.path().to_owned());
    let state = AppState::new(store.clone(), settings).await.unwrap();
    let _server = Served::start_on(state, listener).await;

    request_magic_link(&base, "ada@example.com").await.unwrap();
    let link = link_in(mail.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.db");

    let first = example::notes(&file, &base, Some(&link)).await.unwrap();
    assert_eq!(first.len(), 1);
    // The second run signs in with nothing (the link is used up: a second
    // sign-in would fail) and adds a second note.
    let second = example::notes(&file, &base, None).await.unwrap();
    let ids: Vec<&str> = second.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"]);

    // Both are on the server, in the user's personal space.
    let user = store
        .user_by_email(
            "ada@example.com",
            &ferry_server::ids::new_user_id().unwrap(),
        )
        .await
        .unwrap();
    let space = ferry_core::SpaceId::new(format!("user:{}", user.id)).unwrap();
    let query = ferry_server::store::PullQuery {
        cursor: 0,
        limit: 100,
        collections: None,
        conflicts: None,
    };
    let page = store.pull(&space, query).await.unwrap();
    let on_server: Vec<&str> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(on_server, ["n1", "n2"], "{:?}", page.records);
}

#[test]
fn the_guide_shows_the_example_as_it_is() {
    let example = include_str!("../examples/notes.rs");
    let code = &example[example.find("use std::path::Path;").unwrap()..];
    let guide = include_str!("../../../docs/rust-client.md");
    assert!(
        guide.contains(code),
        "docs/rust-client.md must show examples/notes.rs from its first `use` on"
    );
}
