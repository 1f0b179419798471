//! Server configuration: what `ferry serve` resolves from its defaults,
//! `ferry.toml`, `FERRY_*` variables and flags, in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::{ClientId, NameError};
use serde::{Deserialize, Serialize};

use crate::store::{SqliteStore, Store, StoreError};

/// The address `ferry serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The data directory `ferry serve` uses by default.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";

/// Everything `ferry serve` can be told. Unknown keys in `ferry.toml` are
/// refused, so a typo never silently falls back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the embedded database lives when `database` is not set.
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; defaults to `sqlite://{data_dir}/ferry.db`.
    pub database: Option<String>,
    /// This node's id in the HLCs it stamps; random when not set.
    pub node_id: Option<String>,
    /// How far ahead of the server's clock a change's HLC may be.
    pub max_clock_skew_secs: u64,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database: None,
            node_id: None,
            max_clock_skew_secs: 300,
            log_format: LogFormat::Text,
        }
    }
}

/// A database URL Ferry cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    /// Not `sqlite://PATH`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH")]
    Unsupported(String),
    /// PostgreSQL is not built in yet.
    #[error("PostgreSQL URLs are not supported by this version of Ferry yet: use sqlite://PATH")]
    Postgres,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
}

impl Database {
    /// Parses a database URL.
    pub fn parse(url: &str) -> Result<Database, DatabaseUrlError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(DatabaseUrlError::Unsupported(url.to_owned()));
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(DatabaseUrlError::Postgres);
        }
        Err(DatabaseUrlError::Unsupported(url.to_owned()))
    }

    /// The database of `config`: its URL, or the file in its data dir.
    pub fn of(config: &Config) -> Result<Database, DatabaseUrlError> {
        match &config.database {
            Some(url) => Database::parse(url),
            None => Ok(Database::Sqlite(config.data_dir.join("ferry.db"))),
        }
    }

    /// Opens the store, creating directories and schema as needed.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Database::Sqlite(path) => {
                create_parent(path)?;
                Ok(Arc::new(SqliteStore::open(path.clone()).await?))
            }
        }
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// A random node id, `ferry-` and 8 hex digits.
pub fn random_node_id() -> Result<ClientId, NameError> {
    let mut bytes = [0u8; 4];
    // A node id only needs to differ between nodes; the time will do if the
    // random source fails.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (crate::clock::wall_ms() as u32).to_be_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ClientId::new(format!("ferry-{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_database_urls() {
        assert_eq!(
            Database::parse("sqlite://./data/f.db").unwrap(),
            Database::Sqlite("./data/f.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/ferry.db").unwrap(),
            Database::Sqlite("/var/lib/ferry.db".into())
        );
        assert!(matches!(
            Database::parse("postgres://localhost/ferry"),
            Err(DatabaseUrlError::Postgres)
        ));
        assert!(Database::parse("mysql://x").is_err());
        assert!(Database::parse("sqlite://").is_err());
    }

    #[test]
    fn the_default_database_is_in_the_data_dir() {
        let config = Config::default();
        assert_eq!(
            Database::of(&config).unwrap(),
            Database::Sqlite(PathBuf::from("ferry-data/ferry.db"))
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml_like("listne = \"x\"").is_err());
    }

    fn toml_like(s: &str) -> Result<Config, serde_json::Error> {
        // `Config` is format-agnostic; JSON stands in for TOML here.
        let (k, v) = s.split_once(" = ").unwrap();
        serde_json::from_str(&format!("{{\"{k}\": {v}}}"))
    }
}
