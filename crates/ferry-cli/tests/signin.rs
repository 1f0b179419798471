//! Signing in by magic link against a real `ferry serve`, as a newcomer
//! does from a terminal (the default mailer prints the mail) and as tests
//! and tools do (the `dir` mailer writes it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Server};
use serde_json::{Value, json};

fn token_in(mail: &str) -> String {
    let at = mail.find("#token=").expect("a link with a token") + 7;
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn me(base: &str, access: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The first mail the `dir` mailer writes in `dir` (its `.eml` files only:
/// a mail being written has a temporary name), waiting up to 5 s.
async fn first_mail(dir: &std::path::Path) -> String {
    for _ in 0..100 {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "eml"))
        });
        if let Some(path) = found {
            return std::fs::read_to_string(path).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail in {}", dir.display());
}

#[tokio::test]
async fn a_newcomer_signs_in_from_the_printed_mail() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let (status, _) = post(
        &server.url,
        "/v1/auth/magic-link",
        json!({"email": "new@example.com"}),
    )
    .await;
    assert_eq!(status, 202);
    let printed = server.stdout_with("#token=");
    assert!(printed.contains("To: new@example.com"), "{printed}");
    assert!(
        printed.contains(&format!("{}/auth/magic-link#token=", server.url)),
        "{printed}"
    );
    let (status, session) = post(
        &server.url,
        "/v1/auth/verify",
        json!({"token": token_in(&printed)}),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let me = me(&server.url, session["access_token"].as_str().unwrap()).await;
    assert_eq!(me["user"]["email"], "new@example.com");
}

#[tokio::test]
async fn the_dir_mailer_writes_each_mail_as_a_file() {
    let db = Db::new().await;
    let mail_dir = db.dir.path().join("mail");
    let mut args = db.args();
    args.extend(["--mail-dir".to_owned(), mail_dir.display().to_string()]);
    args.extend([
        "--public-url".to_owned(),
        "https://app.example.com".to_owned(),
    ]);
    let server = Server::spawn(&db.dir.path().join("ferry.log"), args, "127.0.0.1:0");
    post(
        &server.url,
        "/v1/auth/magic-link",
        json!({"email": "ada@example.com"}),
    )
    .await;
    let mail = first_mail(&mail_dir).await;
    assert!(
        mail.contains("https://app.example.com/auth/magic-link#token="),
        "{mail}"
    );
    let (status, session) = post(
        &server.url,
        "/v1/auth/verify",
        json!({"token": token_in(&mail)}),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let (status, next) = post(
        &server.url,
        "/v1/auth/refresh",
        json!({"refresh_token": session["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(
        me(&server.url, next["access_token"].as_str().unwrap()).await["user"]["email"],
        "ada@example.com"
    );
}

#[tokio::test]
async fn ferry_login_runs_the_magic_link_flow_and_keeps_the_credentials() {
    use std::io::Write;
    let db = Db::new().await;
    let mail_dir = db.dir.path().join("mail");
    let mut args = db.args();
    args.extend(["--mail-dir".to_owned(), mail_dir.display().to_string()]);
    let server = Server::spawn(&db.dir.path().join("ferry.log"), args, "127.0.0.1:0");
    let credentials = db.dir.path().join("creds").join("credentials.json");
    let mut login = common::ferry()
        .args([
            "login",
            "--server",
            &server.url,
            "--email",
            "cli@example.com",
        ])
        .env("FERRY_CREDENTIALS", &credentials)
        .env("FERRY_REPLICA", db.dir.path().join("replica.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mail = first_mail(&mail_dir).await;
    let link = mail
        .lines()
        .find(|l| l.contains("#token="))
        .unwrap()
        .to_owned();
    writeln!(login.stdin.take().unwrap(), "{link}").unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signed in"));
    let stored: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    assert_eq!(stored["server"], server.url.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner reads the credentials");
    }
    // The session lives in the replica, private to its owner too.
    let replica_path = std::path::PathBuf::from(stored["replica"].as_str().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&replica_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner reads the replica");
    }
    assert!(!String::from_utf8_lossy(&std::fs::read(&credentials).unwrap()).contains("token"));
    let replica =
        ferry_client::Replica::open(&replica_path, ferry_client::ReplicaConfig::default()).unwrap();
    let token = replica
        .remote(&server.url)
        .unwrap()
        .credentials()
        .token()
        .unwrap();
    let me = me(&server.url, &token).await;
    assert_eq!(me["user"]["email"], "cli@example.com");
    assert_eq!(stored["user"]["email"], "cli@example.com");
}
