//! Resolving the configuration: defaults, then the TOML file, then
//! `FERRY_*` variables and flags (clap reads both, flags winning).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_server::Config;
use ferry_server::config::LogFormat;

/// The file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG_FILE: &str = "ferry.toml";

/// Where the configuration and the database are.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A TOML configuration file [default: ./ferry.toml when present].
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the embedded database [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH, or postgres://USER@HOST/DB for
    /// PostgreSQL (several nodes share one) [default:
    /// sqlite://DATA_DIR/ferry.db].
    #[arg(
        long,
        env = "FERRY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// With PostgreSQL, the schema Ferry keeps its own tables in
    /// [default: ferry].
    #[arg(long, env = "FERRY_POSTGRES_SCHEMA", value_name = "NAME")]
    postgres_schema: Option<String>,
    /// Log format.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// `ferry serve`'s options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on, an IP address or a host name with a port
    /// (localhost:8787) [default: 127.0.0.1:8787]; port 0 picks a free one.
    #[arg(long, env = "FERRY_LISTEN", value_name = "ADDR", value_parser = ferry_server::config::parse_listen)]
    listen: Option<SocketAddr>,
    /// This node's id in the HLCs it stamps [default: random].
    #[arg(long, env = "FERRY_NODE_ID")]
    node_id: Option<String>,
    /// How far ahead of the server's clock a change may be, in seconds [default: 300].
    #[arg(long, env = "FERRY_MAX_CLOCK_SKEW_SECS", value_name = "SECS")]
    max_clock_skew_secs: Option<u64>,
    /// Compact tombstones older than this (30d, 12h...) at start and every
    /// hour [default: never].
    #[arg(long, env = "FERRY_TOMBSTONE_RETENTION", value_name = "DURATION")]
    tombstone_retention: Option<String>,
    /// Where people reach Ferry or the app; sign-in links start with it
    /// [default: http://LISTEN].
    #[arg(long, env = "FERRY_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Write sign-in mail as files in DIR instead of printing it.
    #[arg(long, env = "FERRY_MAIL_DIR", value_name = "DIR")]
    mail_dir: Option<PathBuf>,
    /// Send sign-in mail through this SMTP server: smtps://user:pass@host:465,
    /// smtp://user:pass@host:587?tls=required (STARTTLS) or smtp://host:25.
    #[arg(
        long,
        env = "FERRY_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    smtp_url: Option<String>,
    /// The From address of sign-in mail sent by SMTP.
    #[arg(long, env = "FERRY_MAIL_FROM", value_name = "ADDRESS")]
    mail_from: Option<String>,
    /// How long access tokens work [default: 15m].
    #[arg(long, env = "FERRY_ACCESS_TOKEN_TTL", value_name = "DURATION")]
    access_token_ttl: Option<String>,
    /// Also accept HS256 tokens signed with this secret (an external
    /// identity provider's, e.g. Supabase's JWT secret).
    #[arg(
        long,
        env = "FERRY_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// Also accept tokens signed with the keys published at this JWKS URL
    /// (an external identity provider's).
    #[arg(long, env = "FERRY_JWKS_URL", value_name = "URL")]
    jwks_url: Option<String>,
    /// The algorithms accepted with those keys [default: EdDSA,RS256,ES256].
    #[arg(long, env = "FERRY_JWKS_ALGORITHMS", value_name = "ALGS")]
    jwks_algorithms: Option<String>,
    /// The `iss` external tokens must carry.
    #[arg(long, env = "FERRY_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// The `aud` external tokens must carry (Supabase: authenticated).
    #[arg(long, env = "FERRY_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Which email claims of the HS256 provider to believe: verified (only
    /// with email_verified: true), always, or never [default: verified].
    #[arg(long, env = "FERRY_JWT_EMAIL_TRUST", value_name = "RULE")]
    jwt_email_trust: Option<String>,
    /// The same for the JWKS provider [default: verified].
    #[arg(long, env = "FERRY_JWKS_EMAIL_TRUST", value_name = "RULE")]
    jwks_email_trust: Option<String>,
    /// Answer /metrics only to requests bearing this token.
    #[arg(
        long,
        env = "FERRY_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// Proxies whose X-Forwarded-For names the client (addresses or
    /// networks, comma-separated), e.g. your load balancer's.
    #[arg(long, env = "FERRY_TRUSTED_PROXIES", value_name = "NETS")]
    trusted_proxies: Option<String>,
    /// How long a connection may take to send a request's headers, and
    /// stay idle between requests [default: 10s].
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", value_name = "DURATION")]
    header_timeout: Option<String>,
    /// How long a request body may take to arrive [default: 30s, plus a
    /// second per 64 KiB it announces].
    #[arg(long, env = "FERRY_BODY_TIMEOUT", value_name = "DURATION")]
    body_timeout: Option<String>,
    /// How long a write may wait for a client that does not read
    /// [default: 30s].
    #[arg(long, env = "FERRY_WRITE_TIMEOUT", value_name = "DURATION")]
    write_timeout: Option<String>,
    /// The most connections held at once [default: the open-files limit
    /// less 128].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// The most connections one client address holds at once; 0 for no
    /// cap [default: 256; loopback and trusted proxies are not counted].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// Origins of web pages (https://app.example.com) that may call the
    /// API from the browser (CORS) and open realtime connections, besides
    /// Ferry's own; comma-separated, `*` for any.
    #[arg(long, env = "FERRY_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    allowed_origins: Option<String>,
    /// Serve the static files of this directory (an app's build) at `/`
    /// instead of the todo demo.
    #[arg(long, env = "FERRY_APP_DIR", value_name = "DIR")]
    app_dir: Option<PathBuf>,
    /// The app's schema file (ferry.schema.toml): applied at start when it
    /// differs from the stored one; a breaking change needs `ferry schema
    /// apply FILE --force` first.
    #[arg(long, env = "FERRY_SCHEMA", value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Keep files' bytes in an S3-compatible bucket, for several nodes
    /// (s3://bucket/prefix; the endpoint, region and credentials come from
    /// AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "FERRY_FILES_URL", value_name = "URL")]
    files_url: Option<String>,
    /// Sync needs an active subscription to this plan (or plans,
    /// comma-separated), e.g. pro [default: sync is free].
    #[arg(long, env = "FERRY_BILLING_REQUIRED_PLAN", value_name = "PLAN")]
    billing_required_plan: Option<String>,
    /// What each product grants, comma-separated: a Stripe price id, price
    /// lookup key or product id, or a Lemon Squeezy variant or product id,
    /// each `=` a plan (price_1Pxyz=pro,price_1Qabc=pro). Added to
    /// `[billing.plans]` of the file.
    #[arg(long, env = "FERRY_BILLING_PLANS", value_name = "PRODUCT=PLAN,...")]
    billing_plans: Option<String>,
    /// The most bytes a user's files may take per plan, comma-separated
    /// (pro=10737418240,free=104857600; `free`: no active subscription).
    /// Added to `[billing.file_quotas]` of the file.
    #[arg(long, env = "FERRY_BILLING_FILE_QUOTAS", value_name = "PLAN=BYTES,...")]
    billing_file_quotas: Option<String>,
    /// Stripe's webhook signing secrets (whsec_...), comma-separated.
    #[arg(
        long,
        env = "FERRY_STRIPE_WEBHOOK_SECRET",
        value_name = "SECRETS",
        hide_env_values = true
    )]
    stripe_webhook_secret: Option<String>,
    /// Lemon Squeezy's webhook signing secret.
    #[arg(
        long,
        env = "FERRY_LEMONSQUEEZY_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    lemonsqueezy_webhook_secret: Option<String>,
}

fn load_file(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => PathBuf::from(DEFAULT_CONFIG_FILE),
        None => return Ok(Config::default()),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

impl ConfigArgs {
    /// The configuration these arguments name.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = load_file(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database {
            config.database = Some(url.clone());
        }
        if let Some(schema) = &self.postgres_schema {
            config.postgres_schema = Some(schema.clone());
        }
        if let Some(format) = self.log_format {
            config.log_format = match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        Ok(config)
    }
}

impl ServeArgs {
    /// The configuration to serve with.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = self.config.resolve()?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(id) = &self.node_id {
            config.node_id = Some(id.clone());
        }
        if let Some(secs) = self.max_clock_skew_secs {
            config.max_clock_skew_secs = secs;
        }
        if let Some(retention) = &self.tombstone_retention {
            config.tombstone_retention = Some(retention.clone());
        }
        if let Some(url) = &self.public_url {
            config.public_url = Some(url.clone());
        }
        if let Some(dir) = &self.mail_dir {
            config.mail_dir = Some(dir.clone());
        }
        if let Some(ttl) = &self.access_token_ttl {
            config.access_token_ttl = Some(ttl.clone());
        }
        if let Some(dir) = &self.app_dir {
            config.app_dir = Some(dir.clone());
        }
        if let Some(file) = &self.schema {
            config.schema = Some(file.clone());
        }
        if let Some(url) = &self.files_url {
            config.files_url = Some(url.clone());
        }
        if let Some(n) = self.max_connections {
            config.max_connections = Some(n);
        }
        if let Some(n) = self.max_connections_per_address {
            config.max_connections_per_address = Some(n);
        }
        if let Some(list) = &self.billing_plans {
            for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (product, plan) = pair
                    .split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                    .with_context(|| {
                        format!("billing_plans: {pair:?} is not PRODUCT=PLAN (price_1Pxyz=pro)")
                    })?;
                config
                    .billing
                    .plans
                    .insert(product.to_owned(), plan.to_owned());
            }
        }
        if let Some(list) = &self.billing_file_quotas {
            for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (plan, bytes) = pair
                    .split_once('=')
                    .and_then(|(k, v)| Some((k.trim(), v.trim().parse::<u64>().ok()?)))
                    .filter(|(k, _)| !k.is_empty())
                    .with_context(|| {
                        format!("billing_file_quotas: {pair:?} is not PLAN=BYTES (pro=10737418240)")
                    })?;
                config.billing.file_quotas.insert(plan.to_owned(), bytes);
            }
        }
        for (flag, key) in [
            (&self.jwt_secret, &mut config.jwt_secret),
            (&self.smtp_url, &mut config.smtp_url),
            (&self.mail_from, &mut config.mail_from),
            (&self.jwks_url, &mut config.jwks_url),
            (&self.jwks_algorithms, &mut config.jwks_algorithms),
            (&self.jwt_issuer, &mut config.jwt_issuer),
            (&self.jwt_audience, &mut config.jwt_audience),
            (&self.allowed_origins, &mut config.allowed_origins),
            (&self.jwt_email_trust, &mut config.jwt_email_trust),
            (&self.jwks_email_trust, &mut config.jwks_email_trust),
            (&self.metrics_token, &mut config.metrics_token),
            (&self.trusted_proxies, &mut config.trusted_proxies),
            (&self.header_timeout, &mut config.header_timeout),
            (&self.body_timeout, &mut config.body_timeout),
            (&self.write_timeout, &mut config.write_timeout),
            (
                &self.billing_required_plan,
                &mut config.billing.required_plan,
            ),
            (
                &self.stripe_webhook_secret,
                &mut config.billing.stripe_webhook_secret,
            ),
            (
                &self.lemonsqueezy_webhook_secret,
                &mut config.billing.lemonsqueezy_webhook_secret,
            ),
        ] {
            if let Some(value) = flag {
                *key = Some(value.clone());
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax_clock_skew_secs = 60\n",
        )
        .unwrap();
        let config = load_file(Some(&path)).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.max_clock_skew_secs, 60);
        assert_eq!(config.data_dir, PathBuf::from("ferry-data"));

        std::fs::write(&path, "lisen = \"127.0.0.1:9999\"\n").unwrap();
        let err = format!("{:#}", load_file(Some(&path)).unwrap_err());
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\n").unwrap();
        let args = ConfigArgs {
            config: Some(path),
            data_dir: Some(PathBuf::from("/from/flag")),
            database: None,
            postgres_schema: None,
            log_format: None,
        };
        assert_eq!(
            args.resolve().unwrap().data_dir,
            PathBuf::from("/from/flag")
        );
    }
}
