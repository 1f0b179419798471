//! Server configuration: what `ferry serve` resolves from its defaults,
//! `ferry.toml`, `FERRY_*` variables and flags, in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::{ClientId, NameError};
use serde::{Deserialize, Serialize};

pub use crate::redact::redact_password;
use crate::store::{PgStore, SqliteStore, Store, StoreError};

mod describe;
pub use describe::parse_listen;

/// The address `ferry serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The data directory `ferry serve` uses by default.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";

/// Everything `ferry serve` can be told. Unknown keys in `ferry.toml` are
/// refused, so a typo never silently falls back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen: an address, or a host name, with a port.
    #[serde(deserialize_with = "describe::deserialize_listen")]
    pub listen: SocketAddr,
    /// Where the embedded database lives when `database` is not set.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; defaults to
    /// `sqlite://{data_dir}/ferry.db`.
    pub database: Option<String>,
    /// With PostgreSQL, the schema Ferry keeps its own tables in (default
    /// `ferry`; docs/tables.md).
    pub postgres_schema: Option<String>,
    /// This node's id in the HLCs it stamps; random when not set.
    pub node_id: Option<String>,
    /// How far ahead of the server's clock a change's HLC may be.
    pub max_clock_skew_secs: u64,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
    /// When set (e.g. `30d`), tombstones older than this are compacted
    /// every hour; clients offline for longer resync from scratch.
    pub tombstone_retention: Option<String>,
    /// Where people reach Ferry or the app; sign-in links start with it.
    /// Defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// When set, sign-in mail is written as files in this directory instead
    /// of printed.
    pub mail_dir: Option<PathBuf>,
    /// When set, sign-in mail is sent through this SMTP server:
    /// `smtps://user:pass@host:465` (TLS), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), or `smtp://host:25` (plain, for a local relay).
    pub smtp_url: Option<String>,
    /// The `From` address of sign-in mail sent by SMTP.
    pub mail_from: Option<String>,
    /// How long access tokens work (e.g. `15m`, the default).
    pub access_token_ttl: Option<String>,
    /// The HS256 secret of an external identity provider (Supabase's "JWT
    /// secret"); tokens it signs are accepted beside Ferry's own.
    pub jwt_secret: Option<String>,
    /// The JWKS URL of an external identity provider; tokens signed with
    /// its keys are accepted beside Ferry's own.
    pub jwks_url: Option<String>,
    /// The algorithms accepted with those keys, comma-separated (default
    /// `EdDSA,RS256,ES256`).
    pub jwks_algorithms: Option<String>,
    /// The `iss` external tokens must carry, when set.
    pub jwt_issuer: Option<String>,
    /// The `aud` external tokens must carry, when set.
    pub jwt_audience: Option<String>,
    /// Which `email` claims of the HS256 provider to believe: `verified`
    /// (the default: only with `email_verified: true`), `always` (a
    /// provider that only signs verified addresses in) or `never`.
    pub jwt_email_trust: Option<String>,
    /// The same for the JWKS provider.
    pub jwks_email_trust: Option<String>,
    /// When set, `/metrics` answers only requests with this bearer token.
    pub metrics_token: Option<String>,
    /// Proxies (addresses or networks, comma-separated) whose
    /// `X-Forwarded-For` names the client, for per-address rate limits.
    pub trusted_proxies: Option<String>,
    /// How long a connection may take to send a request's headers, and
    /// stay idle between requests (default `10s`).
    pub header_timeout: Option<String>,
    /// How long a request body may take to arrive (default `30s`, plus a
    /// second per 64 KiB it announces).
    pub body_timeout: Option<String>,
    /// How long a write may wait for the client to take data (default
    /// `30s`).
    pub write_timeout: Option<String>,
    /// The most connections held at once (default: the open-files limit
    /// less 128).
    pub max_connections: Option<usize>,
    /// The most connections one client address holds at once (default
    /// 256; 0 for no cap); loopback and trusted proxies are not counted.
    pub max_connections_per_address: Option<usize>,
    /// The most spaces one user may create (default 1000).
    pub max_spaces_per_user: Option<usize>,
    /// The most members one space may have (default 1000).
    pub max_members_per_space: Option<usize>,
    /// Requests a second one API token may make on each node (default 20).
    pub api_token_rate: Option<u32>,
    /// Requests one API token may make at once (default 100).
    pub api_token_burst: Option<u32>,
    /// The most live API tokens one user may hold (default 100).
    pub max_api_tokens_per_user: Option<u64>,
    /// Where files' bytes are kept (default `{data_dir}/files`).
    pub files_dir: Option<PathBuf>,
    /// An S3-compatible bucket to keep files' bytes in, for several nodes
    /// (`s3://bucket/prefix`; endpoint, region and credentials from the
    /// `AWS_*` environment variables). Uploads are still staged in
    /// `files_dir`.
    pub files_url: Option<String>,
    /// The largest file, in bytes (default 100 MiB).
    pub max_file_bytes: Option<u64>,
    /// The most bytes one user's uploaded files may take (default 1 GiB).
    pub file_quota_bytes: Option<u64>,
    /// The most uploads a node takes at once (default 32).
    pub max_concurrent_uploads: Option<usize>,
    /// How long a file no record refers to is kept before it is collected
    /// (default `24h`, at least `1h`).
    pub file_grace: Option<String>,
    /// Origins of web pages that may open realtime connections besides
    /// Ferry's own, comma-separated (`https://app.example.com`); `*` for
    /// any.
    pub allowed_origins: Option<String>,
    /// A directory of static files (an app's build) served at `/` instead
    /// of Ferry's todo demo.
    pub app_dir: Option<PathBuf>,
    /// The app's schema file (docs/schema.md), applied at start when it
    /// differs from the stored one and the change is compatible.
    pub schema: Option<PathBuf>,
    /// The billing gate: `[billing]` in `ferry.toml`.
    pub billing: BillingConfig,
    /// Webhook endpoints: `[[webhooks]]` in `ferry.toml` (`id`, `url`,
    /// `secrets`, optional `spaces` and `collections`), stored at start.
    pub webhooks: Vec<crate::store::webhooks::Endpoint>,
}

/// `[billing]`: sync as a paid plan. Off unless `required_plan` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// The plan (or plans, comma-separated) that include sync, e.g. `pro`.
    pub required_plan: Option<String>,
    /// Stripe's webhook signing secrets (`whsec_...`), comma-separated:
    /// several are accepted at once while one is rotated.
    pub stripe_webhook_secret: Option<String>,
    /// Lemon Squeezy's webhook signing secret.
    pub lemonsqueezy_webhook_secret: Option<String>,
    /// What each product grants: `[billing.plans]` maps a Stripe price id,
    /// price lookup key or product id, or a Lemon Squeezy variant or
    /// product id, to the plan it is (`price_1Pxyz = "pro"`). A
    /// subscription to anything not listed grants no plan.
    pub plans: std::collections::BTreeMap<String, String>,
    /// The most bytes a user's files may take, per plan (`pro =
    /// 10737418240`; `free` for users with no active subscription): a
    /// user's quota is the largest of their plans' that this names, else
    /// `file_quota_bytes`.
    pub file_quotas: std::collections::BTreeMap<String, u64>,
}

impl BillingConfig {
    /// The settings these values give.
    pub fn settings(&self) -> crate::billing::BillingSettings {
        let list = |v: &Option<String>| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        crate::billing::BillingSettings {
            required_plans: list(&self.required_plan),
            // Empty entries are kept, for the start-up check to refuse.
            stripe_secrets: self
                .stripe_webhook_secret
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_owned())
                .collect(),
            lemonsqueezy_secret: self.lemonsqueezy_webhook_secret.clone(),
            plans: self
                .plans
                .iter()
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
            file_quotas: self
                .file_quotas
                .iter()
                .map(|(k, v)| (k.trim().to_owned(), *v))
                .collect(),
        }
    }
}

impl Config {
    /// This configuration as it may be logged: no password shows.
    pub fn for_log(&self) -> Config {
        Config {
            database: self.database.as_deref().map(redact_password),
            jwks_url: self.jwks_url.as_deref().map(redact_password),
            public_url: self.public_url.as_deref().map(redact_password),
            files_url: self.files_url.as_deref().map(redact_password),
            jwt_secret: self.jwt_secret.as_ref().map(|_| "***".to_owned()),
            metrics_token: self.metrics_token.as_ref().map(|_| "***".to_owned()),
            smtp_url: self.smtp_url.as_deref().map(redact_password),
            billing: BillingConfig {
                stripe_webhook_secret: self
                    .billing
                    .stripe_webhook_secret
                    .as_ref()
                    .map(|_| "***".to_owned()),
                lemonsqueezy_webhook_secret: self
                    .billing
                    .lemonsqueezy_webhook_secret
                    .as_ref()
                    .map(|_| "***".to_owned()),
                ..self.billing.clone()
            },
            webhooks: self
                .webhooks
                .iter()
                .map(|e| crate::store::webhooks::Endpoint {
                    url: redact_password(&e.url),
                    secrets: e.secrets.iter().map(|_| "***".to_owned()).collect(),
                    ..e.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
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
            postgres_schema: None,
            node_id: None,
            max_clock_skew_secs: 300,
            log_format: LogFormat::Text,
            tombstone_retention: None,
            public_url: None,
            mail_dir: None,
            smtp_url: None,
            mail_from: None,
            access_token_ttl: None,
            jwt_secret: None,
            jwks_url: None,
            jwks_algorithms: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_email_trust: None,
            jwks_email_trust: None,
            metrics_token: None,
            trusted_proxies: None,
            header_timeout: None,
            body_timeout: None,
            write_timeout: None,
            max_connections: None,
            max_connections_per_address: None,
            max_spaces_per_user: None,
            max_members_per_space: None,
            api_token_rate: None,
            api_token_burst: None,
            max_api_tokens_per_user: None,
            files_dir: None,
            files_url: None,
            max_file_bytes: None,
            file_quota_bytes: None,
            max_concurrent_uploads: None,
            file_grace: None,
            webhooks: Vec::new(),
            allowed_origins: None,
            app_dir: None,
            schema: None,
            billing: BillingConfig::default(),
        }
    }
}

/// A database URL Ferry cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    /// Neither `sqlite://PATH` nor `postgres://...` (the URL as it may be
    /// shown: its credentials redacted).
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Unsupported(String),
}

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL, with Ferry's tables in `schema`.
    Postgres {
        /// The URL.
        url: String,
        /// The PostgreSQL schema of Ferry's tables (`postgres_schema`).
        schema: String,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Database {
    /// The database for logs and messages: a password is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Database::Postgres { url, schema } => {
                f.write_str(&redact_password(url))?;
                if schema != crate::store::DEFAULT_POSTGRES_SCHEMA {
                    write!(f, " (schema {schema})")?;
                }
                Ok(())
            }
        }
    }
}

impl Database {
    /// Parses a database URL.
    pub fn parse(url: &str) -> Result<Database, DatabaseUrlError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(DatabaseUrlError::Unsupported(redact_password(url)));
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres {
                url: url.to_owned(),
                schema: crate::store::DEFAULT_POSTGRES_SCHEMA.to_owned(),
            });
        }
        Err(DatabaseUrlError::Unsupported(redact_password(url)))
    }

    /// The database of `config`: its URL, or the file in its data dir.
    pub fn of(config: &Config) -> Result<Database, DatabaseUrlError> {
        match &config.database {
            Some(url) => match Database::parse(url)? {
                Database::Postgres { url, .. } if config.postgres_schema.is_some() => {
                    Ok(Database::Postgres {
                        url,
                        schema: config.postgres_schema.clone().unwrap_or_default(),
                    })
                }
                other => Ok(other),
            },
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
            Database::Postgres { url, schema } => {
                Ok(Arc::new(PgStore::connect_in(url, schema).await?))
            }
        }
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError::Unavailable(format!(
            "the data directory {} is a file, not a directory: move it away, or name \
             another directory with --data-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot create the data directory {}: {e}; name another with --data-dir",
            dir.display()
        ))
    })?;
    // SQLite would only say "unable to open database file": find out here
    // whether this user may write in the directory, and say so.
    // A new file of a random name: never one that is there already (or a
    // link someone planted).
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    let probe = dir.join(format!(".ferry-write-check-{}", crate::ids::hex(&random)));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(StoreError::Unavailable(format!(
            "the data directory {} is not writable ({e}): Ferry keeps its database \
             there; give this user write access, or name another directory with --data-dir",
            dir.display()
        ))),
    }
}

/// A random node id, `ferry-` and 8 hex digits.
pub fn random_node_id() -> Result<ClientId, NameError> {
    let mut bytes = [0u8; 4];
    // A node id only needs to differ between nodes; the time will do if the
    // random source fails.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (crate::clock::wall_ms() as u32).to_be_bytes();
    }
    ClientId::new(format!("ferry-{}", crate::ids::hex(&bytes)))
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
        assert_eq!(
            Database::parse("postgres://localhost/ferry").unwrap(),
            Database::Postgres {
                url: "postgres://localhost/ferry".into(),
                schema: "ferry".into()
            }
        );
        assert!(Database::parse("mysql://x").is_err());
        assert!(Database::parse("sqlite://").is_err());
    }

    #[test]
    fn billing_settings_come_from_lists_and_secrets_never_show() {
        let config = Config {
            billing: BillingConfig {
                required_plan: Some("pro, team".into()),
                stripe_webhook_secret: Some("whsec_a,whsec_b".into()),
                lemonsqueezy_webhook_secret: Some("ls_1".into()),
                plans: [("price_1".to_owned(), " pro ".to_owned())].into(),
                file_quotas: [(" pro ".to_owned(), 5_000)].into(),
            },
            ..Config::default()
        };
        let settings = config.billing.settings();
        assert_eq!(settings.required_plans, ["pro", "team"]);
        assert_eq!(settings.stripe_secrets, ["whsec_a", "whsec_b"]);
        assert_eq!(settings.lemonsqueezy_secret.as_deref(), Some("ls_1"));
        assert_eq!(settings.plans["price_1"], "pro");
        assert_eq!(settings.file_quotas["pro"], 5_000);
        let quotas: Config =
            toml::from_str("[billing.file_quotas]\nfree = 100\npro = 10737418240\n").unwrap();
        assert_eq!(quotas.billing.settings().file_quotas["pro"], 10_737_418_240);
        let logged = format!("{:?}", config.for_log());
        assert!(
            !logged.contains("whsec_") && !logged.contains("ls_1"),
            "{logged}"
        );
        assert!(logged.contains("pro, team"), "{logged}");
        let off = Config::default().billing.settings();
        assert!(!off.gated());
        let parsed: Config = toml::from_str(
            "[billing]\nrequired_plan = \"pro\"\nstripe_webhook_secret = \"whsec_x\"\n",
        )
        .unwrap();
        assert!(parsed.billing.settings().gated());
        assert!(toml::from_str::<Config>("[billing]\nrequired_plans = \"pro\"\n").is_err());
    }

    #[test]
    fn passwords_never_show() {
        let db = Database::parse("postgres://ferry:s3cret@db:5432/ferry?sslmode=require").unwrap();
        assert_eq!(
            db.to_string(),
            "postgres://ferry:***@db:5432/ferry?sslmode=require"
        );
        assert_eq!(format!("{db:?}"), db.to_string());
        let typo = Database::parse("postgress://u:pw1@h/d?password=s3cret").unwrap_err();
        assert!(
            !typo.to_string().contains("s3cret") && !typo.to_string().contains("pw1"),
            "{typo}"
        );
        let db = Database::parse("postgres://u@h/d?password=s3cret").unwrap();
        assert!(!db.to_string().contains("s3cret"), "{db}");
        let config = Config {
            database: Some("postgres://u:pw1@h/d?password=s3cret".into()),
            smtp_url: Some("smtp://h:25?password=s3cret2".into()),
            webhooks: vec![crate::store::webhooks::Endpoint {
                id: "backend".into(),
                url: "https://hook:s3cret3@api.example.com/ferry".into(),
                secrets: vec!["whsec-s3cret4-0123456789".into()],
                spaces: None,
                collections: None,
            }],
            ..Config::default()
        };
        assert!(!config.describe().join("\n").contains("s3cret"));
        let logged = format!("{:?}", config.for_log());
        assert!(
            !logged.contains("s3cret") && !logged.contains("pw1"),
            "{logged}"
        );
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
