//! The `ferry` binary as an operator meets it: help, tokens, clear errors,
//! graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Server, ferry};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_is_there_everywhere() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["admin", "--help"],
        vec!["admin", "token", "--help"],
    ] {
        let out = ferry().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let serve = ferry().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in ["--listen", "--data-dir", "--database", "--config"] {
        assert!(text.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn admin_token_prints_only_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = ferry()
        .args([
            "admin",
            "token",
            "--email",
            "ada@example.com",
            "--ttl",
            "2h",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The same email is the same user.
    let data_args = ["--data-dir".to_owned(), data.display().to_string()];
    let again = common::token(&data_args, "ADA@example.com");
    assert_ne!(again, token);
    let bad = ferry()
        .args(["admin", "token", "--email", "not an email", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr_of(&bad).contains("not an email address"),
        "{}",
        stderr_of(&bad)
    );
}

#[tokio::test]
async fn a_token_from_the_cli_works_against_the_server() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let alice = server.client(&server.token("alice@example.com"));
    let again = server.client(&server.token("alice@example.com"));
    let (status, me) = alice.get("/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(again.user_id().await, alice.user_id().await);
    let (_, spaces) = alice.get("/v1/spaces").await;
    assert_eq!(
        spaces["spaces"][0]["id"],
        format!("user:{}", me["user"]["id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(&Db::new().await);
    let addr = first.url.trim_start_matches("http://").to_owned();
    let out = ferry()
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("b"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("already in use"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = ferry()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("cannot create the data directory"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_skew = 3\n").unwrap();
    let out = ferry()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("max_skew"), "{}", stderr_of(&out));

    // Nothing listens on port 1: the error says so at once, no hang.
    let start = std::time::Instant::now();
    let out = ferry()
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg("postgres://ferry:pw@127.0.0.1:1/x")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("pw@"), "the password is not shown: {err}");
    assert!(!err.contains("backtrace"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn configuration_comes_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    let data = dir.path().join("from-file");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    // The environment names the file; the file names the data dir.
    let out = ferry()
        .args(["admin", "token", "--email", "a@b.c"])
        .env("FERRY_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(data.join("ferry.db").exists());
    // A flag beats the environment.
    let flag = dir.path().join("from-flag");
    let out = ferry()
        .args(["admin", "token", "--email", "a@b.c", "--data-dir"])
        .arg(&flag)
        .env("FERRY_DATA_DIR", dir.path().join("from-env"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(flag.join("ferry.db").exists());
    assert!(!dir.path().join("from-env").exists());
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start(&Db::new().await);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn migrate_brings_the_schema_up_to_date_and_can_run_again() {
    let db = Db::new().await;
    for _ in 0..2 {
        let out = ferry().arg("migrate").args(db.args()).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("is up to date"), "{stdout}");
    }
    let server = Server::start(&db);
    let (status, _) = server.client(&server.token("a@b.c")).get("/v1/me").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn compaction_from_the_cli_and_at_start_expires_older_cursors() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let token = server.token("ops@example.com");
    let client = server.client(&token);
    client.create_space("c").await;
    let record = |id: &str| format!("/v1/spaces/c/collections/t/records/{id}");
    for id in ["r1", "r2"] {
        let body = serde_json::json!({"fields": {"x": 1}});
        let (status, _) = client
            .send(reqwest::Method::PUT, &record(id), Some(body))
            .await;
        assert_eq!(status, 200);
    }
    client
        .send(reqwest::Method::DELETE, &record("r1"), None)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let out = ferry()
        .args(["admin", "compact", "--older-than", "0s"])
        .args(db.args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("c: 1 tombstones deleted, horizon 3"),
        "{stdout}"
    );
    let (status, body) = client.get("/v1/spaces/c/changes?cursor=1").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (410, &serde_json::json!("cursor_expired"))
    );
    let (status, body) = client.get("/v1/spaces/c/changes?cursor=0").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["changes"].as_array().unwrap().len(),
        1,
        "r2 only: {body}"
    );

    // With a retention, a server compacts by itself as it starts.
    client
        .send(reqwest::Method::DELETE, &record("r2"), None)
        .await;
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut args = db.args();
    args.extend(["--tombstone-retention".to_owned(), "1ms".to_owned()]);
    let server = Server::spawn(&db.dir.path().join("again.log"), args, "127.0.0.1:0");
    let client = server.client(&token);
    let start = std::time::Instant::now();
    loop {
        let (status, _) = client.get("/v1/spaces/c/changes?cursor=3").await;
        if status == 410 {
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "no compaction at start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_old_tokens_working() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let before = server.token("ada@example.com");
    let out = ferry()
        .args(["admin", "rotate-key"])
        .args(db.args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Added signing key"));
    let after = server.token("ada@example.com");
    let kid = |t: &str| {
        use base64::Engine;
        let header = t.split('.').next().unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&json).unwrap()["kid"].clone()
    };
    assert_ne!(kid(&before), kid(&after), "the new key signs");
    for token in [&after, &before] {
        let (status, body) = server.client(token).get("/v1/me").await;
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn weak_secrets_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = || {
        let mut cmd = ferry();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            // None of these may come from the machine running the test.
            .env_remove("FERRY_JWT_SECRET")
            .env_remove("FERRY_STRIPE_WEBHOOK_SECRET")
            .env_remove("FERRY_METRICS_TOKEN");
        cmd
    };
    let cases: Vec<(&str, std::process::Command, &str)> = vec![
        (
            "--jwt-secret ''",
            {
                let mut c = serve();
                c.args(["--jwt-secret", ""]);
                c
            },
            "JWT secret",
        ),
        (
            "FERRY_JWT_SECRET=",
            {
                let mut c = serve();
                c.env("FERRY_JWT_SECRET", "");
                c
            },
            "JWT secret",
        ),
        (
            "a short JWT secret",
            {
                let mut c = serve();
                c.args(["--jwt-secret", "secret"]);
                c
            },
            "JWT secret",
        ),
        (
            "an empty Stripe secret",
            {
                let mut c = serve();
                c.env("FERRY_STRIPE_WEBHOOK_SECRET", "");
                c
            },
            "Stripe webhook secret",
        ),
        (
            "a short metrics token",
            {
                let mut c = serve();
                c.args(["--metrics-token", "abc"]);
                c
            },
            "metrics token",
        ),
        (
            "an unknown email rule",
            {
                let mut c = serve();
                c.args(["--jwt-email-trust", "sometimes"]);
                c
            },
            "jwt_email_trust",
        ),
    ];
    for (case, mut cmd, wanted) in cases {
        let out = cmd.output().unwrap();
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{case}: started");
        assert!(stderr.contains(wanted), "{case}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("Ferry listening"),
            "{case}"
        );
    }
}

#[test]
fn printed_sign_in_links_on_a_public_address_are_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let data = [
        "--data-dir".to_owned(),
        dir.path().join("d").display().to_string(),
    ];
    let mut server = Server::spawn(&log, data.to_vec(), "0.0.0.0:0");
    server.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("sign-in links are printed to this terminal"),
        "{text}"
    );
    // Not on loopback, where printing them is what a developer wants.
    let quiet_log = dir.path().join("quiet");
    let mut quiet = Server::spawn(&quiet_log, data.to_vec(), "127.0.0.1:0");
    quiet.terminate();
    let text = std::fs::read_to_string(&quiet_log).unwrap();
    assert!(!text.contains("sign-in links are printed"), "{text}");
}
