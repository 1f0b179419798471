//! `ferry token create|list|revoke` against a real `ferry serve`: a token
//! made on the command line writes through the REST API into the one space
//! it names, is listed without its secret, and stops at once when revoked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Db, Server, ferry};
use ferry_client::{Replica, ReplicaConfig};
use serde_json::{Value, json};

fn run(replica: &Path, args: &[&str]) -> Output {
    let out = ferry()
        .args(args)
        .arg("--replica")
        .arg(replica)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn a_token_made_on_the_command_line_works_in_its_space_only_until_revoked() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.db");
    let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
    let user = replica
        .sign_in_with_token(&server.url, &server.token("alice@example.com"))
        .await
        .unwrap();
    let personal = format!("user:{}", user.id);

    let out = run(
        &path,
        &[
            "token",
            "create",
            "--name",
            "extension",
            "--space",
            &personal,
            "--expires",
            "30d",
        ],
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("fyt_"), "{secret}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown this once"));

    let http = reqwest::Client::new();
    let record = |space: &str| {
        format!(
            "{}/v1/spaces/{space}/collections/cards/records/c1",
            server.url
        )
    };
    let put = http
        .put(record(&personal))
        .bearer_auth(&secret)
        .json(&json!({"fields": {"url": "https://example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    // The replica's own session reads what the token wrote.
    let read: Value = http
        .get(record(&personal))
        .bearer_auth(server.token("alice@example.com"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["fields"]["url"]["value"], "https://example.com");

    let listed = String::from_utf8(run(&path, &["token", "list"]).stdout).unwrap();
    let token: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(token["name"], "extension");
    assert!(!listed.contains(&secret[4..]), "the list shows the secret");

    run(&path, &["token", "revoke", token["id"].as_str().unwrap()]);
    let refused = http
        .put(record(&personal))
        .bearer_auth(&secret)
        .json(&json!({"fields": {"url": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        String::from_utf8(run(&path, &["token", "list"]).stdout).unwrap(),
        ""
    );
}
