//! Test support, for Ferry's own tests (feature `testing`): fresh databases
//! of either backend. A test that asks for PostgreSQL fails loudly when it
//! cannot reach it; it never skips.

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::store::{PgStore, SqliteStore, Store};

/// The environment variable naming the PostgreSQL server tests use: a URL
/// of a database to connect to in order to create the test databases.
pub const POSTGRES_ENV: &str = "FERRY_TEST_POSTGRES";
/// Used when [`POSTGRES_ENV`] is not set.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The environment variable choosing the backend of backend-agnostic tests:
/// `sqlite` (the default) or `postgres`.
pub const BACKEND_ENV: &str = "FERRY_TEST_BACKEND";

/// Which backend backend-agnostic tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// The backend [`BACKEND_ENV`] names.
pub fn backend() -> Backend {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("{BACKEND_ENV}={other}: use sqlite or postgres"),
    }
}

fn admin_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(slash) => &base[..start + slash],
            None => base,
        },
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A PostgreSQL database created for one test and dropped after it.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database.
    pub async fn create() -> TestDatabase {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for this test and is unreachable at {admin}: {e}\n\
                 start it, or point {POSTGRES_ENV} at one"
            )
        });
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("random: {e}"));
        let name = format!("ferry_test_{}", crate::ids::hex(&bytes));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        TestDatabase {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }

    /// A plain connection to this database that finds Ferry's tables (in
    /// their own schema, `ferry`) by their bare names, as Ferry's do.
    pub async fn connect(&self) -> PgConnection {
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)
            .unwrap_or_else(|e| panic!("{}: {e}", self.url))
            .options([("search_path", crate::store::DEFAULT_POSTGRES_SCHEMA)]);
        PgConnection::connect_with(&options)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }

    /// A store on this database.
    pub async fn store(&self) -> Arc<dyn Store> {
        Arc::new(
            PgStore::connect(&self.url)
                .await
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.url)),
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime, so the cleanup gets its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// What keeps a test's database alive; dropping it removes the database.
#[derive(Debug)]
pub enum Guard {
    /// The temporary directory of an SQLite file.
    Sqlite(tempfile::TempDir),
    /// A PostgreSQL database.
    Postgres(TestDatabase),
}

impl Guard {
    /// Another store on the same database, as a server restarted on it
    /// opens (whatever the first store left unfinished is gone with it).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match self {
            Guard::Sqlite(dir) => Arc::new(
                SqliteStore::open(dir.path().join("ferry.db"))
                    .await
                    .unwrap_or_else(|e| panic!("cannot open SQLite again: {e}")),
            ),
            Guard::Postgres(db) => db.store().await,
        }
    }
}

/// A fresh store on the backend [`backend`] names.
pub async fn fresh_store() -> (Arc<dyn Store>, Guard) {
    match backend() {
        Backend::Sqlite => fresh_sqlite().await,
        Backend::Postgres => fresh_postgres().await,
    }
}

/// A fresh SQLite store.
pub async fn fresh_sqlite() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let store = SqliteStore::open(dir.path().join("ferry.db"))
        .await
        .unwrap_or_else(|e| panic!("cannot open SQLite: {e}"));
    (Arc::new(store), Guard::Sqlite(dir))
}

/// A fresh PostgreSQL store.
pub async fn fresh_postgres() -> (Arc<dyn Store>, Guard) {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    (store, Guard::Postgres(db))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}

pub mod fuzz;
mod s3;
mod ws;
pub use s3::{MOTO_ENV, S3Server};
pub use ws::WsClient;

/// Ferry serving `state` in this process on 127.0.0.1, a port of its own,
/// for tests and benchmarks that need a socket; stops when dropped.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The state it serves.
    pub state: crate::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Serves `state` on a free port.
    pub async fn start(state: crate::AppState) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1: {e}"));
        Served::start_on(state, listener).await
    }

    /// Serves `state` on `listener` (bound beforehand when the address
    /// must be known first, or reused).
    pub async fn start_on(state: crate::AppState, listener: tokio::net::TcpListener) -> Served {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Served {
            base: format!("http://{addr}"),
            state,
            stop: Some(stop),
            task,
        }
    }

    /// An access token of Ferry's own issuer for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        let user = ferry_core::UserId::new(user).unwrap_or_else(|e| panic!("{e}"));
        self.state
            .issuer
            .get()
            .mint(&user, crate::clock::wall_ms() / 1000, 3600)
            .unwrap_or_else(|e| panic!("cannot mint a token: {e}"))
    }

    /// Shuts the server down gracefully and waits until it stopped (10 s
    /// at most); panics unless it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        match tokio::time::timeout(std::time::Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the server failed: {e}"),
            Ok(Err(e)) => panic!("the server task failed: {e}"),
            Err(_) => panic!("the server did not stop within 10 s"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
