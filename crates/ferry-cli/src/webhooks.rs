//! `ferry admin webhooks`: the operator's endpoints and dead letters,
//! straight in the database (docs/integrations.md#webhooks). Every node
//! sees a change at its next round (within a second).

use anyhow::Context;
use clap::Subcommand;
use ferry_core::{Collection, SpaceId};
use ferry_server::clock::wall_ms;
use ferry_server::store::webhooks::Endpoint;

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// The endpoints, one JSON object per line (secrets hidden).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Add an endpoint, or replace the one with this id (a new one is sent
    /// what is committed from now on).
    Add {
        /// Its name.
        #[arg(long)]
        id: String,
        /// Where deliveries are POSTed.
        #[arg(long)]
        url: String,
        /// A signing secret, 16 bytes at least (repeat it to rotate: sign
        /// with the new one beside the old, then remove the old).
        #[arg(long = "secret", required = true, env = "FERRY_WEBHOOK_SECRET")]
        secrets: Vec<String>,
        /// Only this space (repeatable) [default: every space].
        #[arg(long = "space")]
        spaces: Vec<String>,
        /// Only this collection (repeatable) [default: every collection].
        #[arg(long = "collection")]
        collections: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove an endpoint, its cursors and its dead letters.
    Remove {
        /// Its name.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The deliveries given up on after failing for the retry window, one
    /// JSON object per line.
    Dead {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Send a dead letter again, under its delivery id (removed once the
    /// endpoint takes it).
    Replay {
        /// The dead letter's number (from `dead`).
        id: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn config_of(command: &WebhookCommand) -> &ConfigArgs {
    match command {
        WebhookCommand::List { config }
        | WebhookCommand::Add { config, .. }
        | WebhookCommand::Remove { config, .. }
        | WebhookCommand::Dead { config }
        | WebhookCommand::Replay { config, .. } => config,
    }
}

/// Runs a webhook command.
pub async fn run(command: WebhookCommand) -> anyhow::Result<()> {
    let config = config_of(&command).resolve()?;
    crate::init_logs(config.log_format, "warn");
    let store = crate::open_store(&config).await?;
    match command {
        WebhookCommand::List { .. } => {
            for mut endpoint in store.webhook_endpoints().await? {
                endpoint.secrets = endpoint.secrets.iter().map(|_| "***".to_owned()).collect();
                endpoint.url = ferry_server::redact::redact_password(&endpoint.url);
                println!("{}", serde_json::to_string(&endpoint)?);
            }
        }
        WebhookCommand::Add {
            id,
            url,
            secrets,
            spaces,
            collections,
            ..
        } => {
            let endpoint = Endpoint {
                id,
                url,
                secrets,
                spaces: (!spaces.is_empty())
                    .then(|| spaces.into_iter().map(SpaceId::new).collect())
                    .transpose()
                    .context("--space")?,
                collections: (!collections.is_empty())
                    .then(|| collections.into_iter().map(Collection::new).collect())
                    .transpose()
                    .context("--collection")?,
            };
            endpoint.check().map_err(anyhow::Error::msg)?;
            store.put_webhook_endpoint(&endpoint, wall_ms()).await?;
            eprintln!(
                "Webhook {} delivers to {}.",
                endpoint.id,
                ferry_server::redact::redact_password(&endpoint.url)
            );
        }
        WebhookCommand::Remove { id, .. } => {
            anyhow::ensure!(
                store.remove_webhook_endpoint(&id).await?,
                "no webhook endpoint {id}"
            );
            eprintln!("Removed webhook {id}.");
        }
        WebhookCommand::Dead { .. } => {
            for letter in store.webhook_dead_letters().await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        WebhookCommand::Replay { id, .. } => {
            anyhow::ensure!(store.replay_webhook(id).await?, "no dead letter {id}");
            eprintln!("Dead letter {id} is sent again within a second by a running node.");
        }
    }
    Ok(())
}
