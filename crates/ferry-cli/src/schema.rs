//! `ferry schema`: the app's schema of its collections (docs/schema.md),
//! read from the file the app keeps in its repository (TOML, or JSON of the
//! same shape), compared with what is stored, and applied as its next
//! version.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use ferry_core::schema::{Impact, Schema, diff};

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Store FILE as the next version of the schema, which every node then
    /// checks writes against and every client fetches. A breaking change
    /// (one that refuses what the stored schema allowed) needs --force.
    Apply {
        /// The schema file: TOML (ferry.schema.toml) or JSON.
        file: PathBuf,
        /// Apply it even if it breaks what the stored schema allowed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List what changed from OLD to NEW, each compatible or breaking.
    Diff {
        /// The schema before.
        old: PathBuf,
        /// The schema after.
        new: PathBuf,
    },
    /// Print the stored schema (JSON) and its version.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Reads a schema file: JSON when it ends in `.json`, TOML otherwise.
pub fn read(path: &Path) -> anyhow::Result<Schema> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the schema file {}", path.display()))?;
    let json = if path.extension().is_some_and(|e| e == "json") {
        text
    } else {
        let value: toml::Value =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        serde_json::to_string(&value)?
    };
    Schema::parse(&json).with_context(|| format!("the schema in {}", path.display()))
}

/// Prints the differences, one per line; true when one is breaking.
fn print_diff(old: &Schema, new: &Schema) -> bool {
    let differences = diff(old, new);
    if differences.is_empty() {
        println!("No changes.");
    }
    for d in &differences {
        let impact = match d.impact {
            Impact::Compatible => "compatible",
            Impact::Breaking => "BREAKING  ",
        };
        let path = if d.path.is_empty() {
            "(schema)"
        } else {
            &d.path
        };
        println!("{impact}  {path}: {}", d.what);
    }
    differences.iter().any(|d| d.impact == Impact::Breaking)
}

/// Runs a schema command.
pub async fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Diff { old, new } => {
            print_diff(&read(&old)?, &read(&new)?);
            Ok(())
        }
        SchemaCommand::Show { config } => {
            let config = config.resolve()?;
            crate::init_logs(config.log_format, "warn");
            let store = crate::open_store(&config).await?;
            match store.app_schema().await? {
                (0, _) | (_, None) => {
                    println!("No schema applied: every collection takes any fields.")
                }
                (version, Some(json)) => {
                    let schema = Schema::parse(&json)?;
                    println!("Version {version}:");
                    println!("{}", serde_json::to_string_pretty(&schema)?);
                }
            }
            Ok(())
        }
        SchemaCommand::Apply {
            file,
            force,
            config,
        } => {
            let new = read(&file)?;
            let config = config.resolve()?;
            crate::init_logs(config.log_format, "warn");
            let store = crate::open_store(&config).await?;
            let held = ferry_server::app_schema::load(store.as_ref()).await?;
            let old = held.schema.clone().unwrap_or_default();
            let breaking = print_diff(&old, &new);
            if held.schema.as_ref() == Some(&new) {
                println!("Version {} is this schema already.", held.version);
                return Ok(());
            }
            if breaking && !force {
                bail!(
                    "the schema breaks what version {} allowed (see above): writes it \
                     allowed, and devices that queued them offline, would be refused; \
                     apply it with --force if that is meant",
                    held.version
                );
            }
            let json = serde_json::to_string(&new)?;
            let version = store.apply_app_schema(&json, held.version).await?;
            println!("Applied schema version {version}; every node checks writes against it now.");
            Ok(())
        }
    }
}
