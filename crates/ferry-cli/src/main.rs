//! `ferry`: runs the sync server, administers it, and is a client of it.
//!
//! - `ferry serve`: the server, on SQLite in `./ferry-data` by default, or
//!   on PostgreSQL with `--database postgres://...`.
//! - `ferry migrate`: brings the database schema up to date.
//! - `ferry admin token --email E`: prints an access token for a user.
//! - `ferry admin compact --older-than 30d`: compacts old tombstones.
//! - `ferry login`, then `ferry put/get/ls/rm/sync/watch/conflicts`: a
//!   client on a local replica ([`client`]), synced with the server.
//!
//! Configuration comes in layers: defaults, then `ferry.toml` (or the file
//! named by `--config`), then `FERRY_*` environment variables, then flags.

mod adopt;
mod client;
mod config;
mod entitlement;
mod limits;
mod login;
mod schema;
mod tokens;
mod webhooks;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_server::auth::external::{EmailTrust, SharedSecretConfig};
use ferry_server::auth::issuer::{self, Issuer};
use ferry_server::auth::jwks::{JwksConfig, default_algorithms, parse_algorithm};
use ferry_server::auth::mail::MailerConfig;
use ferry_server::clock::wall_ms;
use ferry_server::config::{Database, LogFormat, random_node_id};
use ferry_server::ops::compaction;
use ferry_server::{AppState, Config, Settings, Store, ids, spaces};
use tokio::net::TcpListener;

use crate::config::{ConfigArgs, ServeArgs};

/// Ferry: a local-first sync engine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(Box<ServeArgs>),
    /// Bring the database schema up to date (`serve` also does at start).
    Migrate(ConfigArgs),
    /// Sign in to a Ferry server by magic link and keep the credentials
    /// for the client commands.
    Login {
        /// The server, e.g. http://127.0.0.1:8787.
        #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8787")]
        server: String,
        /// Your email address.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        replica: client::ReplicaArgs,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
    /// The app's schema of its collections: apply, compare, show.
    Schema {
        #[command(subcommand)]
        command: schema::SchemaCommand,
    },
    /// Take the rows a table mirrored by the schema already held in as
    /// records, and write rows for the records Ferry already held, without
    /// stopping the app (docs/tables.md). Needs PostgreSQL.
    Adopt(adopt::AdoptArgs),
    /// Your API tokens, for browser extensions, scripts and backends:
    /// create, list, revoke.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Administer a server's database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Print an access token for the user with this email (created, with a
    /// personal space, if new). Prints only the token.
    Token {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// How long the token is valid: 15m, 1h, 7d...
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Add a new signing key for Ferry's own tokens. It signs from now on
    /// (each node picks it up when it first sees a token it signed); older
    /// keys keep verifying the tokens they signed.
    RotateKey(ConfigArgs),
    /// Delete tombstones older than a duration and raise each space's
    /// horizon: clients whose cursor is older must resync from scratch.
    Compact {
        /// How old a tombstone must be: 30d, 12h...
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Set or show a user's plan (the billing gate's entitlements).
    Entitlement {
        #[command(subcommand)]
        command: entitlement::EntitlementCommand,
    },
    /// Webhook endpoints and dead letters: list, add, remove, dead,
    /// replay.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhookCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Migrate(config) => migrate(config).await,
            Command::Login {
                server,
                email,
                replica,
            } => login::login(&server, &email, &replica).await,
            Command::Client(command) => client::run(command).await,
            Command::Schema { command } => schema::run(command).await,
            Command::Adopt(args) => adopt::run(args).await,
            Command::Token { command } => tokens::run(command).await,
            Command::Admin {
                command: AdminCommand::Token { email, ttl, config },
            } => token(&email, ttl, config).await,
            Command::Admin {
                command: AdminCommand::Compact { older_than, config },
            } => compact(older_than, config).await,
            Command::Admin {
                command: AdminCommand::RotateKey(config),
            } => rotate_key(config).await,
            Command::Admin {
                command: AdminCommand::Entitlement { command },
            } => entitlement::run(command).await,
            Command::Admin {
                command: AdminCommand::Webhooks { command },
            } => webhooks::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: a clear message, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal who has not asked for none
    // (NO_COLOR): a file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed
/// now, before the server says it listens, so a signal sent right after that
/// line is never missed.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing requests in flight");
    })
}

/// Applies the schema file of the configuration, unless the newest stored
/// version is that schema already; a breaking change stops the start.
async fn start_with_schema(
    store: &dyn ferry_server::Store,
    new: &ferry_core::schema::Schema,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    // A schema superseded since (a node of the last deploy starting again
    // with the file before, or a file behind a schema forced by hand) is
    // never put back in force by a start: only `ferry schema apply` goes
    // back.
    let json = serde_json::to_string(new)?;
    let (newest, _) = store.app_schema().await?;
    if let Some(was) = store.app_schema_version_of(&json).await?
        && was < newest
    {
        tracing::warn!(
            file = %file.display(),
            "the schema in the configuration was version {was}, superseded since by version \
             {newest}: not applied again (to go back to it, ferry schema apply it by hand)"
        );
        return Ok(());
    }
    let tell = |line: &str| tracing::info!("schema: {line}");
    let applied = schema::apply(store, new, false, tell)
        .await
        .with_context(|| format!("cannot apply the schema in {}", file.display()))?;
    match applied {
        schema::Applied::Already(version) => {
            tracing::info!(version, file = %file.display(), "schema in force")
        }
        schema::Applied::New(version) => {
            tracing::info!(version, file = %file.display(), "schema applied")
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logs(config.log_format, "info");
    for line in config.describe() {
        tracing::info!("setting {line}");
    }
    // The port first: a start that cannot listen creates nothing (no data
    // directory, no database).
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot listen on {}: the address is already in use \
                 (is another ferry running? pick another with --listen)",
                config.listen
            ),
            _ => anyhow::anyhow!("cannot listen on {}: {e}", config.listen),
        })?;
    let retention = config
        .tombstone_retention
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .context("tombstone_retention")?;
    let node_id = match &config.node_id {
        Some(id) => ferry_core::ClientId::new(id.clone()).context("node_id")?,
        None => random_node_id()?,
    };
    let mut settings = Settings::new(node_id, String::new());
    settings.max_clock_skew_ms = config.max_clock_skew_secs.saturating_mul(1000);
    settings.mailer = match (&config.smtp_url, &config.mail_dir) {
        (Some(_), Some(_)) => anyhow::bail!("set smtp_url or mail_dir, not both"),
        (Some(url), None) => MailerConfig::Smtp {
            url: url.clone(),
            from: config
                .mail_from
                .clone()
                .context("mail_from is needed with smtp_url (e.g. --mail-from 'Ferry <no-reply@example.com>')")?,
        },
        (None, Some(dir)) => MailerConfig::Dir(dir.clone()),
        (None, None) => MailerConfig::Log,
    };
    let email_trust = |key: &str, value: &Option<String>| -> anyhow::Result<EmailTrust> {
        value
            .as_deref()
            .map_or(Ok(EmailTrust::default()), str::parse)
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
    };
    let jwt_email_trust = email_trust("jwt_email_trust", &config.jwt_email_trust)?;
    let jwks_email_trust = email_trust("jwks_email_trust", &config.jwks_email_trust)?;
    settings.shared_secret = config.jwt_secret.clone().map(|secret| SharedSecretConfig {
        secret,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        email_trust: jwt_email_trust,
    });
    if let Some(url) = &config.jwks_url {
        let algorithms = match &config.jwks_algorithms {
            Some(list) => list
                .split(',')
                .map(|a| {
                    parse_algorithm(a.trim()).map_err(|e| anyhow::anyhow!("jwks_algorithms: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => default_algorithms(),
        };
        settings.jwks = Some(JwksConfig {
            url: url.clone(),
            algorithms,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            min_refresh: ferry_server::auth::jwks::MIN_REFRESH,
            email_trust: jwks_email_trust,
        });
    }
    if let Some(ttl) = &config.access_token_ttl {
        settings.access_ttl_secs = humantime::parse_duration(ttl)
            .context("access_token_ttl")?
            .as_secs()
            .max(1);
    }
    if let Some(origins) = &config.allowed_origins {
        settings.realtime.allowed_origins = origins
            .split(',')
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
    }
    settings.billing = config.billing.settings();
    settings.webhooks.endpoints = config.webhooks.clone();
    limits::apply(&config, &mut settings)?;
    // Before anything else starts: a secret anyone could guess is refused.
    settings.check()?;
    if let Some(dir) = &config.app_dir {
        anyhow::ensure!(
            dir.join("index.html").is_file(),
            "app_dir {} holds no index.html",
            dir.display()
        );
        settings.app_dir = Some(dir.clone());
    }
    let open_files = raise_open_files_limit();
    settings.http.max_connections = match config.max_connections {
        Some(n) => n.max(1),
        None => ferry_server::http::connections_within(open_files),
    };
    if matches!(settings.mailer, MailerConfig::Log) && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "sign-in links are printed to this terminal (no smtp_url or mail_dir) while \
             Ferry listens beyond this machine: people elsewhere cannot sign in, and \
             whoever reads this log can sign in as anyone; set smtp_url for real use"
        );
    }
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    settings.public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let settings_mailer = settings.mailer.clone();
    let app_schema = config.schema.as_deref().map(schema::read).transpose()?;
    // Last: a start refused for its settings creates no data directory.
    let store = open_store(&config).await?;
    if let (Some(new), Some(file)) = (&app_schema, &config.schema) {
        start_with_schema(store.as_ref(), new, file).await?;
    }
    let state = AppState::new(store, settings)
        .await
        .context("cannot start")?;
    let db_flag = match Database::of(&config)? {
        Database::Postgres { url, schema }
            if schema != ferry_server::store::DEFAULT_POSTGRES_SCHEMA =>
        {
            format!(
                "--database {} --postgres-schema {schema}",
                ferry_server::config::redact_password(&url)
            )
        }
        database if config.database.is_some() => format!("--database {database}"),
        _ => format!("--data-dir {}", config.data_dir.display()),
    };
    // On stdout, for people and for scripts that start Ferry on port 0. A
    // closed stdout (a script that read the first line and left) is fine.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "Ferry listening on http://{addr}");
    let links = match &settings_mailer {
        MailerConfig::Log => "sign-in links are printed here".to_owned(),
        MailerConfig::Dir(dir) => format!("sign-in mail is written to {}", dir.display()),
        MailerConfig::Smtp { .. } => "sign-in mail is sent by SMTP".to_owned(),
    };
    let _ = match &config.app_dir {
        None => writeln!(
            stdout,
            "Open http://{addr} in two browser windows for the todo demo; {links}."
        ),
        Some(dir) => writeln!(stdout, "Serving the app in {}; {links}.", dir.display()),
    };
    let _ = writeln!(
        stdout,
        "Get a token: ferry admin token --email you@example.com {db_flag}"
    );
    let _ = stdout.flush();
    tracing::info!(%addr, "listening");
    let compaction = retention.map(|r| compaction::spawn(state.store.clone(), r));
    let served = ferry_server::server::run(listener, state, shutdown).await;
    if let Some(task) = compaction {
        task.abort();
    }
    served.context("server error")?;
    tracing::info!("stopped");
    Ok(())
}

/// Lets this process hold as many sockets as the system allows it (the
/// soft limit up to the hard one): each realtime connection is one, and a
/// soft limit of 1024 is common.
fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open files limit");
            limit
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Opens the database `config` names, migrating it.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let database = Database::of(config)?;
    database
        .open()
        .await
        .with_context(|| format!("cannot open the database {database}"))
}

async fn migrate(args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logs(config.log_format, "warn");
    open_store(&config).await?;
    println!("The schema of {} is up to date.", Database::of(&config)?);
    Ok(())
}

async fn compact(older_than: Duration, args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logs(config.log_format, "warn");
    let store = open_store(&config).await?;
    let report = compaction::compact_older_than(store.as_ref(), older_than).await?;
    for space in &report.spaces {
        println!(
            "{}: {} tombstones deleted, horizon {}",
            space.space, space.tombstones, space.horizon
        );
    }
    let tombstones: u64 = report.spaces.iter().map(|s| s.tombstones).sum();
    println!(
        "Compacted {tombstones} tombstones in {} spaces and {} old batch records.",
        report.spaces.len(),
        report.batches
    );
    Ok(())
}

async fn rotate_key(args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logs(config.log_format, "warn");
    let store = open_store(&config).await?;
    // Loading first makes sure the database has keys, so the new one is
    // the second, not the first.
    Issuer::load(store.as_ref(), wall_ms()).await?;
    let key = issuer::generate_key(wall_ms() + 1)?;
    let kid = key.kid.clone();
    store.add_signing_key(key).await?;
    println!("Added signing key {kid}; new tokens are signed with it.");
    Ok(())
}

async fn token(email: &str, ttl: Duration, args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logs(config.log_format, "warn");
    let email = spaces::normalize_email(email)?;
    let store = open_store(&config).await?;
    let issuer = Issuer::load(store.as_ref(), wall_ms())
        .await
        .context("cannot load the signing keys")?;
    let user = store.user_by_email(&email, &ids::new_user_id()?).await?;
    let token = issuer.mint(&user.id, wall_ms() / 1000, ttl.as_secs().max(1))?;
    println!("{token}");
    Ok(())
}
