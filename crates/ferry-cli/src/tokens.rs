//! `ferry token create|list|revoke`: the signed-in user's API tokens
//! (docs/integrations.md), made through the server's `/v1/tokens` with the
//! session `ferry login` keeps.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{self, ReplicaArgs};

/// The token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token and print it (shown this once; keep it secret).
    Create {
        /// Its name, to recognize it in the list.
        #[arg(long)]
        name: String,
        /// A space it may reach (repeatable) [default: all of yours].
        #[arg(long = "space", value_name = "SPACE")]
        spaces: Vec<String>,
        /// Read only: its writes are refused.
        #[arg(long)]
        read_only: bool,
        /// Its REST writes may set fields the schema reserves to the
        /// server, in spaces you own.
        #[arg(long)]
        server_fields: bool,
        /// When it stops working: 30d, 12h... [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        #[command(flatten)]
        replica: ReplicaFile,
    },
    /// List your API tokens (never their secrets), one JSON object per line.
    List {
        #[command(flatten)]
        replica: ReplicaFile,
    },
    /// Revoke an API token at once, by its id.
    Revoke {
        /// The token's id (from the list).
        id: String,
        #[command(flatten)]
        replica: ReplicaFile,
    },
}

/// The signed-in replica whose session makes the requests.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaFile {
    /// The replica file [default: the one `ferry login` signed in last].
    #[arg(long, env = "FERRY_REPLICA", value_name = "FILE")]
    replica: Option<PathBuf>,
}

/// Runs a token command.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let (replica, method, path, body) = match command {
        TokenCommand::Create {
            name,
            spaces,
            read_only,
            server_fields,
            expires,
            replica,
        } => {
            let mut body = json!({
                "name": name,
                "access": if read_only { "read" } else { "write" },
                "server_fields": server_fields,
            });
            if !spaces.is_empty() {
                body["spaces"] = json!(spaces);
            }
            if let Some(d) = expires {
                body["expires_in"] = json!(d.as_secs().max(1));
            }
            (replica, Method::POST, "/v1/tokens".to_owned(), Some(body))
        }
        TokenCommand::List { replica } => (replica, Method::GET, "/v1/tokens".to_owned(), None),
        TokenCommand::Revoke { id, replica } => {
            (replica, Method::DELETE, format!("/v1/tokens/{id}"), None)
        }
    };
    let opened = client::open(&ReplicaArgs {
        replica: replica.replica,
        space: None,
    })?;
    let server = opened
        .server()?
        .context("this replica is not signed in; run ferry login first")?;
    let remote = opened.remote(&server)?;
    let answer: Value = remote
        .call(method.clone(), &path, body.as_ref())
        .await
        .with_context(|| format!("{method} {path}"))?;
    if method == Method::POST {
        eprintln!(
            "API token {} ({}) made; it is shown this once:",
            answer["id"].as_str().unwrap_or_default(),
            answer["name"].as_str().unwrap_or_default()
        );
        println!("{}", answer["token"].as_str().unwrap_or_default());
    } else if method == Method::GET {
        for token in answer["tokens"].as_array().into_iter().flatten() {
            println!("{token}");
        }
    } else {
        eprintln!("Revoked.");
    }
    Ok(())
}
