//! The README's curl walkthrough, run as written against a real server, so
//! the first thing a newcomer tries keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Server};

/// The README's `sh` blocks, with the binary and address of this test's
/// server, each command's output on its own line.
fn walkthrough(server: &Server, db: &Db) -> String {
    let readme = include_str!("../../../README.md");
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
async fn the_readme_walkthrough_works_as_written() {
    let db = Db::new().await;
    let server = Server::start(&db);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(walkthrough(&server, &db))
        .output()
        .expect("bash and curl are needed to run the README walkthrough");
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
