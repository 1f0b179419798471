//! What a person trying Ferry for the first time reads: the server's
//! start-up output (its settings as lines, colour only on a terminal, where
//! sign-in links go, host names in --listen), the errors of a bad data
//! directory, a busy port or a token of another database, and the client
//! commands with nobody signed in, with nothing to show, and right after
//! `ferry login`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};

use common::{Db, Server, ferry};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ferry serve` with info logs on a pipe, stopped once it listens: what
/// it printed on stdout and stderr.
fn start_and_stop(args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let listen = if args.contains(&"--listen") {
        &[][..]
    } else {
        &["--listen", "127.0.0.1:0"][..]
    };
    let mut child = ferry()
        .arg("serve")
        .args(listen)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains("Get a token") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out.push_str(&line);
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest = child.wait_with_output().unwrap();
    (out, text(&rest.stderr))
}

#[test]
fn start_up_logs_its_settings_as_plain_lines() {
    let (stdout, stderr) =
        start_and_stop(&["--jwt-secret", "an-hs256-secret-of-32-bytes-or-more!!"]);
    assert!(
        stdout.starts_with("Ferry listening on http://127.0.0.1:"),
        "{stdout}"
    );
    // One readable line per setting, the secret redacted.
    assert!(stderr.contains("setting listen = 127.0.0.1:0"), "{stderr}");
    assert!(stderr.contains("setting data_dir = "), "{stderr}");
    assert!(stderr.contains("setting database = sqlite://"), "{stderr}");
    assert!(stderr.contains("setting jwt_secret = ***"), "{stderr}");
    assert!(!stderr.contains("an-hs256-secret"), "{stderr}");
    assert!(
        !stderr.contains("Config {") && !stderr.contains("Some("),
        "{stderr}"
    );
    // A pipe gets no colour codes.
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

#[test]
fn the_banner_says_where_sign_in_links_go() {
    let (printed, _) = start_and_stop(&[]);
    assert!(
        printed.contains("sign-in links are printed here"),
        "{printed}"
    );
    let mail = tempfile::tempdir().unwrap();
    let (dir, _) = start_and_stop(&["--mail-dir", mail.path().to_str().unwrap()]);
    assert!(!dir.contains("printed here"), "{dir}");
    assert!(
        dir.contains(&format!(
            "sign-in mail is written to {}",
            mail.path().display()
        )),
        "{dir}"
    );
}

#[test]
fn listen_takes_a_host_name() {
    let (stdout, stderr) = start_and_stop(&["--listen", "localhost:0"]);
    assert!(
        stdout.starts_with("Ferry listening on http://127.0.0.1:"),
        "{stdout}\n{stderr}"
    );
    let out = ferry()
        .args(["serve", "--listen", "no-port-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("like 127.0.0.1:8787 or localhost:8787"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_says_what_flags_govern() {
    let help = text(&ferry().args(["serve", "--help"]).output().unwrap().stdout);
    let flag = |name: &str| -> String {
        let at = help.find(name).unwrap_or_else(|| panic!("{name} missing"));
        help[at..].chars().take(400).collect()
    };
    assert!(flag("--allowed-origins").contains("CORS"), "{help}");
    assert!(flag("--database").contains("postgres://"), "{help}");
    assert!(flag("--listen").contains("localhost:8787"), "{help}");
}

fn serve_fails(data_dir: &std::path::Path) -> String {
    let out = ferry()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    text(&out.stderr)
}

#[test]
fn a_data_dir_that_is_a_file_or_not_writable_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = serve_fails(&file);
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert!(err.contains("--data-dir"), "{err}");

    // A directory this user cannot write in (even root cannot create files
    // in /proc/self).
    if cfg!(target_os = "linux") {
        let err = serve_fails(std::path::Path::new("/proc/self"));
        assert!(err.contains("is not writable"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
    }
}

#[tokio::test]
async fn a_busy_port_creates_nothing() {
    let first = Server::start(&Db::new().await);
    let addr = first.url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = ferry()
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );
    assert!(!data.exists(), "a failed start created {}", data.display());
}

#[tokio::test]
async fn a_token_of_another_database_says_so() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let other = tempfile::tempdir().unwrap();
    let out = ferry()
        .args(["admin", "token", "--email", "ada@example.com", "--data-dir"])
        .arg(other.path())
        .output()
        .unwrap();
    let token = text(&out.stdout).trim().to_owned();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("another Ferry database"), "{message}");
}

/// A client command run as a person on a machine where `home` is their home.
fn client(home: &std::path::Path, args: &[&str]) -> Output {
    ferry()
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("FERRY_REPLICA")
        .env_remove("FERRY_CREDENTIALS")
        .output()
        .unwrap()
}

#[test]
fn with_nobody_signed_in_the_client_says_how_to_sign_in_and_creates_nothing() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["ls", "todos"][..],
        &["get", "todos", "milk"],
        &["sync"],
        &["conflicts"],
    ] {
        let out = client(home.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("nobody is signed in"), "{args:?}: {err}");
        assert!(err.contains("ferry login --email"), "{args:?}: {err}");
    }
    let made: Vec<_> = std::fs::read_dir(home.path()).unwrap().collect();
    assert!(made.is_empty(), "created {made:?}");
}

#[tokio::test]
async fn login_pulls_what_the_account_holds_and_conflicts_says_when_there_are_none() {
    let db = Db::new().await;
    let mut server = Server::start(&db);
    let home = tempfile::tempdir().unwrap();
    // The account already holds a record, written elsewhere.
    let api = server.client(&server.token("ada@example.com"));
    let user = api.user_id().await;
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/spaces/user:{user}/collections/todos/records/milk"),
            Some(serde_json::json!({"fields": {"title": "Milk"}})),
        )
        .await;
    assert_eq!(status, 200);

    let mut login = ferry()
        .args([
            "login",
            "--email",
            "ada@example.com",
            "--server",
            &server.url,
        ])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env_remove("FERRY_REPLICA")
        .env_remove("FERRY_CREDENTIALS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = server.stdout_with("#token=");
    let line = printed.lines().find(|l| l.contains("#token=")).unwrap();
    writeln!(
        login.stdin.take().unwrap(),
        "{}",
        &line[line.find("http").unwrap()..]
    )
    .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 record received"),
        "{}",
        text(&out.stdout)
    );

    // With the server gone, the record is there: login pulled it.
    server.terminate();
    let out = client(home.path(), &["ls", "todos"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#""title":"Milk""#),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("Showing the local copy"),
        "{}",
        text(&out.stderr)
    );

    let out = client(home.path(), &["conflicts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("No conflicts"),
        "{}",
        text(&out.stderr)
    );

    // Signed out, the client says so again instead of reading an empty
    // replica.
    let out = client(home.path(), &["logout"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = client(home.path(), &["ls", "todos"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("nobody is signed in"), "{err}");
}

#[test]
fn the_release_build_ships_lean() {
    // Building the release binary here would double the suite's time; the
    // profile that decides its size is checked instead (23 MB with it,
    // 107 MB with the debug info it leaves out).
    let manifest: toml::Value = toml::from_str(include_str!("../../../Cargo.toml")).unwrap();
    let release = &manifest["profile"]["release"];
    assert_eq!(
        release.get("debug").and_then(toml::Value::as_bool),
        Some(false)
    );
    assert_eq!(release["strip"].as_str(), Some("debuginfo"));
    let profiling = &manifest["profile"]["profiling"];
    assert_eq!(profiling["debug"].as_str(), Some("line-tables-only"));
}
