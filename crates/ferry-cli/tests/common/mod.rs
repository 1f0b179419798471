//! Starting real `ferry` processes for end-to-end tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use ferry_server::testing::{self, Backend, TestDatabase};
use serde_json::{Value, json};

/// The `ferry` binary under test.
pub fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Where a test's servers keep their data: a data directory, or a fresh
/// PostgreSQL database when `FERRY_TEST_BACKEND=postgres`.
pub struct Db {
    pub dir: tempfile::TempDir,
    pg: Option<TestDatabase>,
}

impl Db {
    pub async fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let pg = match testing::backend() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await),
        };
        Db { dir, pg }
    }

    /// The flags that point `ferry` at this database.
    pub fn args(&self) -> Vec<String> {
        match &self.pg {
            Some(db) => vec!["--database".into(), db.url.clone()],
            None => vec![
                "--data-dir".into(),
                self.dir.path().join("data").display().to_string(),
            ],
        }
    }

    /// The SQLite file of the server's data directory, when not on
    /// PostgreSQL.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.pg
            .is_none()
            .then(|| self.dir.path().join("data").join("ferry.db"))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("ferry.log")
    }
}

/// A running `ferry serve` on a port of its own choosing.
pub struct Server {
    child: Child,
    pub url: String,
    db_args: Vec<String>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `ferry serve --listen 127.0.0.1:0` on `db` and waits until it
    /// says where it listens.
    pub fn start(db: &Db) -> Server {
        Server::start_on(db, "127.0.0.1:0")
    }

    pub fn start_on(db: &Db, listen: &str) -> Server {
        Server::spawn(&db.log(), db.args(), listen)
    }

    /// Starts `ferry serve` with `db_args`, logging to `log`.
    pub fn spawn(log_path: &std::path::Path, db_args: Vec<String>, listen: &str) -> Server {
        Server::spawn_with(log_path, db_args, listen, &[])
    }

    /// Starts `ferry serve` on `db` with more flags of `serve`.
    pub fn start_with(db: &Db, extra: &[&str]) -> Server {
        Server::spawn_with(&db.log(), db.args(), "127.0.0.1:0", extra)
    }

    pub fn spawn_with(
        log_path: &std::path::Path,
        db_args: Vec<String>,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let mut child = ferry()
            .args(["serve", "--listen", listen])
            .args(&db_args)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut line).unwrap();
        // The rest of stdout (the log mailer prints there) is kept, and the
        // pipe never fills up.
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for rest in reader.lines() {
                let Ok(rest) = rest else { return };
                let mut sink = sink.lock().unwrap();
                sink.push_str(&rest);
                sink.push('\n');
            }
        });
        let url = line
            .trim()
            .strip_prefix("Ferry listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!("ferry serve did not start: {line:?}\n{log}")
            })
            .to_owned();
        Server {
            child,
            url,
            db_args,
            stdout,
        }
    }

    /// What the server printed after its first line, waiting up to 5 s for
    /// `wanted` to appear.
    pub fn stdout_with(&self, wanted: &str) -> String {
        for _ in 0..100 {
            let text = self.stdout.lock().unwrap().clone();
            if text.contains(wanted) {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the server never printed {wanted:?}");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    /// An access token for `email`, minted by `ferry admin token`.
    pub fn token(&self, email: &str) -> String {
        token(&self.db_args, email)
    }

    pub fn client(&self, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.url.clone(),
            token: token.to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ferry admin token` with `db_args` and returns what it printed.
pub fn token(db_args: &[String], email: &str) -> String {
    let out = ferry()
        .args(["admin", "token", "--email", email])
        .args(db_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A user's HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn bearer(&self) -> &str {
        &self.token
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn user_id(&self) -> String {
        self.get("/v1/me").await.1["user"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn create_space(&self, id: &str) {
        let (status, body) = self.post("/v1/spaces", json!({"id": id, "name": id})).await;
        assert_eq!(status, 201, "{body}");
    }

    /// One sync call.
    pub async fn sync(&self, space: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v1/spaces/{space}/sync"), body).await
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
