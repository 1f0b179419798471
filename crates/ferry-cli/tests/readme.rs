//! The first things a newcomer runs, as written, against a real server: the
//! README's first sync from the terminal (with one email, after the demo
//! and the guides asked for links of their own), and the curl walkthrough
//! of docs/first-sync.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Server};

/// The curl guide's `sh` blocks, with the binary and address of this
/// test's server, each command's output on its own line.
fn walkthrough(server: &Server, db: &Db) -> String {
    let readme = include_str!("../../../docs/first-sync.md");
    let mut script = String::from("set -eu\n");
    for block in readme.split("```sh\n").skip(1) {
        let body = block.split("```").next().unwrap();
        script.push_str(body);
        script.push('\n');
    }
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let db_args: Vec<String> = db.args().iter().map(|a| format!("{a:?}")).collect();
    script
        .replace(
            "F=\"cargo run --release -q -p ferry-cli --\"",
            &format!("F={ferry:?}"),
        )
        .replace(
            "admin token --email",
            &format!("admin token {} --email", db_args.join(" ")),
        )
        .replace(
            "API=http://127.0.0.1:8787/v1",
            &format!("API={}/v1", server.url),
        )
        .replace("curl -s ", "echo; curl -sS ")
}

#[tokio::test]
async fn the_curl_guide_works_as_written() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(walkthrough(&server, &db))
        .output()
        .expect("bash and curl are needed to run the curl guide");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| lines.iter().any(pred);
    assert!(
        find(&|v| v["conflicts"][0]["kind"] == "stale_write"),
        "{stdout}"
    );
    assert!(
        find(&|v| v["conflicts"][0]["kind"] == "record_deleted"),
        "{stdout}"
    );
    assert!(
        find(&|v| v["cursor"] == 4 && v["has_more"] == true),
        "{stdout}"
    );
    assert!(find(&|v| v["error"]["code"] == "not_found"), "{stdout}");
    assert!(find(&|v| v["role"] == "viewer"), "{stdout}");
    assert!(
        lines
            .iter()
            .all(|v| v["error"].is_null() || v["error"]["code"] == "not_found"),
        "{stdout}"
    );
}

/// How many sign-in links the server has printed so far.
fn links_printed(server: &Server) -> usize {
    server.stdout_with("").matches("#token=").count()
}

/// The newest sign-in link the server printed, once there are `n`.
fn nth_link(server: &Server, n: usize) -> String {
    for _ in 0..200 {
        let out = server.stdout_with("");
        if out.matches("#token=").count() >= n {
            let line = out.lines().rfind(|l| l.contains("#token=")).unwrap();
            return line[line.find("http").unwrap()..].trim().to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the server printed no link number {n}");
}

#[tokio::test]
async fn the_readme_first_sync_works_in_order_with_one_email() {
    use std::io::Write;
    let db = Db::new().await;
    // Ferry's default: links printed on the server's terminal.
    let server = Server::start(&db);
    let home = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // Before it, the demo and the guides each asked for a link for the
    // same person: three, the most a mailbox would get at once.
    for _ in 0..3 {
        let r = http
            .post(format!("{}/v1/auth/magic-link", server.url))
            .json(&serde_json::json!({"email": "ada@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // All three printed before the walkthrough starts.
    nth_link(&server, 3);
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README's first sync is its one sh block");
    let mut outputs = Vec::new();
    for line in block.lines() {
        let command = line.split('#').next().unwrap().trim();
        if command.is_empty() || command.starts_with("export PATH=") {
            continue;
        }
        let words = shell_words(command);
        assert_eq!(words[0], "ferry", "{line}");
        let mut run = common::ferry();
        run.args(&words[1..])
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("FERRY_SERVER", &server.url)
            .env_remove("FERRY_REPLICA")
            .env_remove("FERRY_CREDENTIALS")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let before = links_printed(&server);
        let mut child = run.spawn().unwrap();
        if words[1] == "login" {
            // The person copies the link the server printed.
            let link = nth_link(&server, before + 1);
            writeln!(child.stdin.take().unwrap(), "{link}").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{line}\n{stdout}\n{stderr}");
        assert!(!stderr.contains("error"), "{line}\n{stderr}");
        if words[1] == "login" {
            assert!(stdout.contains("Signed in to"), "{stdout}");
            assert!(stdout.contains("Synced with"), "login syncs: {stdout}");
        }
        outputs.push(stdout);
    }
    // The last command, ls on the phone, prints the laptop's record.
    let last = outputs.last().unwrap();
    let record: serde_json::Value =
        serde_json::from_str(last.trim()).unwrap_or_else(|_| panic!("{last}"));
    assert_eq!(record["id"], "milk");
    assert_eq!(record["title"], "Milk");
}

/// A command line split as the shell would: words, and '...' kept whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
