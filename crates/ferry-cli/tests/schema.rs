//! `ferry schema` as an app's developer uses it: the TOML file of
//! docs/schema.md compared, applied (breaking changes only when forced) and
//! shown, and a running server holding writes to it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Server, ferry};

const V1: &str = r#"
[collections.todos]
mode = "strict"

[collections.todos.fields]
title = { type = "string", max_length = 100, required = true }
done  = { type = "boolean" }
"#;

/// V1 and an optional field: compatible.
const V2: &str = r#"
[collections.todos]
mode = "strict"

[collections.todos.fields]
title = { type = "string", max_length = 100, required = true }
done  = { type = "boolean" }
note  = { type = "string" }
"#;

/// V2 with a shorter title: breaking.
const V3: &str = r#"
[collections.todos]
mode = "strict"

[collections.todos.fields]
title = { type = "string", max_length = 10, required = true }
done  = { type = "boolean" }
note  = { type = "string" }
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_demo_s_types_are_what_its_schema_gives() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = ferry()
        .args(["schema", "typescript"])
        .arg(root.join("examples/todo/ferry.schema.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = std::fs::read_to_string(root.join("examples/todo/src/schema.ts")).unwrap();
    assert_eq!(
        text(&out.stdout),
        committed,
        "examples/todo/src/schema.ts is stale: write it again with \
         ferry schema typescript examples/todo/ferry.schema.toml"
    );
}

#[tokio::test]
async fn a_schema_file_is_compared_applied_and_held_by_the_running_server() {
    let db = Db::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let (v1, v2, v3) = (
        file("v1.toml", V1),
        file("v2.toml", V2),
        file("v3.toml", V3),
    );
    let schema = |args: &[&str]| {
        ferry()
            .arg("schema")
            .args(args)
            .args(db.args())
            .output()
            .unwrap()
    };

    let diff = ferry()
        .args(["schema", "diff"])
        .arg(&v2)
        .arg(&v3)
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    assert!(
        text(&diff.stdout).contains("BREAKING    todos.title: max_length 100 to 10"),
        "{}",
        text(&diff.stdout)
    );

    let server = Server::start(&db);
    let out = schema(&["apply", v1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Applied schema version 1"),
        "{}",
        text(&out.stdout)
    );

    // The running server holds writes to it from the next one on.
    let api = server.client(&server.token("ada@example.com"));
    let user = api.user_id().await;
    let path = format!("/v1/spaces/user:{user}/collections/todos/records/milk");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"fields": {"title": "Milk", "done": "yes"}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "done");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"fields": {"title": "Milk", "done": false}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let out = schema(&["apply", v2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("compatible  todos.note: optional field added"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("version 2"),
        "{}",
        text(&out.stdout)
    );

    // A record the next schema would refuse, listed before anyone forces it.
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/spaces/user:{user}/collections/todos/records/oat"),
            Some(serde_json::json!({"fields": {"title": "Oat milk, 2 litres"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let out = schema(&["check", v3.to_str().unwrap()]);
    assert!(!out.status.success());
    let listed: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "oat");
    assert_eq!(listed[0]["rule"], "max_length");
    assert!(
        text(&out.stderr).contains("1 of 2 records would be refused"),
        "{}",
        text(&out.stderr)
    );
    let fits = schema(&["check", v2.to_str().unwrap()]);
    assert!(fits.status.success(), "{}", text(&fits.stderr));
    assert!(
        text(&fits.stdout).contains("All 2 records fit"),
        "{}",
        text(&fits.stdout)
    );

    // Breaking: refused unless forced, and nothing stored meanwhile.
    let out = schema(&["apply", v3.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let shown = schema(&["show"]);
    assert!(
        text(&shown.stdout).starts_with("Version 2:"),
        "{}",
        text(&shown.stdout)
    );
    let out = schema(&["apply", v3.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"fields": {"title": "Oat milk, 2 l", "done": false}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["rule"], "max_length");

    // A file that makes no sense says where.
    let bad = file(
        "bad.toml",
        "[collections.todos.fields]\ndone = { type = \"boolean\", max_length = 3 }\n",
    );
    let out = schema(&["apply", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("todos.done: max_length does not apply"),
        "{}",
        text(&out.stderr)
    );
    // A table mapping is read and checked: PostgreSQL keeps the table,
    // and `ferry adopt` gives it the records held so far; the embedded
    // database makes the table in its own file and fills it at the apply,
    // and has no rows of the app's to adopt.
    let mirrored = file(
        "mirrored.toml",
        &V1.replace("mode = \"strict\"", "mode = \"strict\"\ntable = \"todos\""),
    );
    let out = schema(&["apply", mirrored.to_str().unwrap(), "--force"]);
    let adopt = ferry()
        .args(["adopt", "todos", "--wait", "20s"])
        .args(db.args())
        .output()
        .unwrap();
    if let Some(path) = db.sqlite_file() {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let file = rusqlite::Connection::open(path).unwrap();
        let rows: i64 = file
            .query_row("SELECT count(*) FROM todos", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
        assert!(!adopt.status.success());
        assert!(
            text(&adopt.stderr).contains("fills it with the records held"),
            "{}",
            text(&adopt.stderr)
        );
    } else {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(adopt.status.success(), "{}", text(&adopt.stderr));
        let said = text(&adopt.stdout);
        assert!(said.contains("todos: wrote 2 rows"), "{said}");
        assert!(
            said.contains("todos: took in 2 of 2 rows (0 refused"),
            "{said}"
        );
    }
}

/// `ferry serve` with `extra` on `db_args`, which must fail to start: its
/// stderr (killed after 30 s if it starts after all).
fn refused_start(db_args: &[String], extra: &[&str]) -> String {
    let mut child = ferry()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(db_args)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return err;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("ferry serve {extra:?} started; it should have refused");
}

#[tokio::test]
async fn a_schema_in_the_configuration_is_applied_at_start_and_held_by_every_node() {
    // Two nodes on one PostgreSQL database (what several nodes share).
    let db = ferry_server::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (v1, v2, v3) = (
        file("v1.toml", V1),
        file("v2.toml", V2),
        file("v3.toml", V3),
    );
    let args = vec!["--database".to_owned(), db.url.clone()];
    let shown = || {
        let out = ferry()
            .args(["schema", "show"])
            .args(&args)
            .output()
            .unwrap();
        text(&out.stdout)
    };

    // Node B runs with no schema, and a client listens to it.
    let b = Server::spawn(&dir.path().join("b.log"), args.clone(), "127.0.0.1:0");
    let token = b.token("ada@example.com");
    let mut listening = ferry_server::testing::WsClient::connect(&b.url).await;
    listening.auth(&token).await;

    // Node A starts with the schema file in its configuration: applied.
    let log_a = dir.path().join("a.log");
    let mut a = Server::spawn_with(&log_a, args.clone(), "127.0.0.1:0", &["--schema", &v1]);
    assert!(shown().starts_with("Version 1:"), "{}", shown());
    // B tells its connections within about a second, with no write through
    // it, and refuses a write that breaks it.
    let heard = listening
        .recv_within(std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        heard,
        Some(serde_json::json!({"type": "schema", "version": 1}))
    );
    let api = b.client(&token);
    let user = api.user_id().await;
    let path = format!("/v1/spaces/user:{user}/collections/todos/records/milk");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"fields": {"title": "Milk", "done": "yes"}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["rule"], "type");

    // Started again with the same file: no new version.
    assert!(a.terminate().success());
    let mut a = Server::spawn_with(&log_a, args.clone(), "127.0.0.1:0", &["--schema", &v1]);
    assert!(shown().starts_with("Version 1:"), "{}", shown());
    // With a compatible change: the next version.
    assert!(a.terminate().success());
    let mut a = Server::spawn_with(&log_a, args.clone(), "127.0.0.1:0", &["--schema", &v2]);
    assert!(shown().starts_with("Version 2:"), "{}", shown());
    assert!(a.terminate().success());
    // A breaking one stops the start, saying how to force it, and changes
    // nothing; so does a file that is not a schema.
    let err = refused_start(&args, &["--schema", &v3]);
    assert!(err.contains("todos.title: max_length 100 to 10"), "{err}");
    assert!(err.contains("ferry schema apply FILE --force"), "{err}");
    let err = refused_start(
        &args,
        &[
            "--schema",
            &file("bad.toml", "[collections.todos]\nmode = 3\n"),
        ],
    );
    assert!(err.contains("bad.toml"), "{err}");
    assert!(shown().starts_with("Version 2:"), "{}", shown());
    // Forced by hand; a node that starts again with a file superseded
    // since (v1, or v2) does not put it back in force.
    let out = ferry()
        .args(["schema", "apply", &v3, "--force"])
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for older in [&v1, &v2] {
        let mut a = Server::spawn_with(&log_a, args.clone(), "127.0.0.1:0", &["--schema", older]);
        assert!(shown().starts_with("Version 3:"), "{}", shown());
        assert!(a.terminate().success());
    }
    drop(b);
}
