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
    /// List the stored records FILE would refuse (one JSON line each), to
    /// run before applying a breaking change; fails when there are any.
    Check {
        /// The schema file: TOML or JSON.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print FILE as TypeScript types: a type per collection and a
    /// `Schema` type for `Ferry.open<Schema>()`.
    Typescript {
        /// The schema file: TOML or JSON.
        file: PathBuf,
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

/// Each difference from `old` to `new` as a line (`compatible  path:
/// what`), and whether one is breaking.
fn differences(old: &Schema, new: &Schema) -> (Vec<String>, bool) {
    let differences = diff(old, new);
    let lines = differences
        .iter()
        .map(|d| {
            let impact = match d.impact {
                Impact::Compatible => "compatible",
                Impact::Breaking => "BREAKING  ",
            };
            let path = if d.path.is_empty() {
                "(schema)"
            } else {
                &d.path
            };
            format!("{impact}  {path}: {}", d.what)
        })
        .collect();
    let breaking = differences.iter().any(|d| d.impact == Impact::Breaking);
    (lines, breaking)
}

/// Prints the differences, one per line; true when one is breaking.
fn print_diff(old: &Schema, new: &Schema) -> bool {
    let (lines, breaking) = differences(old, new);
    if lines.is_empty() {
        println!("No changes.");
    }
    for line in lines {
        println!("{line}");
    }
    breaking
}

/// What applying a schema came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The stored version was this schema already.
    Already(u64),
    /// Stored as this new version.
    New(u64),
}

/// Stores `new` as the next version of the app's schema, unless the newest
/// is `new` already. Each difference from the stored one goes to `tell`; a
/// breaking one refuses the apply unless `force`. Two applies racing (two
/// nodes starting with the same file) end with one version: the loser
/// finds its schema stored.
pub async fn apply(
    store: &dyn ferry_server::Store,
    new: &Schema,
    force: bool,
    mut tell: impl FnMut(&str),
) -> anyhow::Result<Applied> {
    let mut told = false;
    loop {
        let held = ferry_server::app_schema::load(store).await?;
        if held.schema.as_ref() == Some(new) {
            return Ok(Applied::Already(held.version));
        }
        let old = held.schema.clone().unwrap_or_default();
        let (lines, breaking) = differences(&old, new);
        if !told {
            lines.iter().for_each(|line| tell(line));
            told = true;
        }
        if breaking && !force {
            bail!(
                "the schema breaks what version {} allowed ({}): writes it allowed, and \
                 devices that queued them offline, would be refused; apply it with \
                 `ferry schema apply FILE --force` if that is meant",
                held.version,
                lines
                    .iter()
                    .filter(|l| l.starts_with("BREAKING"))
                    .map(|l| l.trim_start_matches("BREAKING").trim())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let json = serde_json::to_string(new)?;
        match store.apply_app_schema(&json, held.version).await {
            Ok(version) => return Ok(Applied::New(version)),
            // Applied by someone else meanwhile: judge again against it.
            // A refusal that leaves the version where it was (a table the
            // database cannot keep) is the answer, not a race.
            Err(ferry_server::StoreError::Conflict(why)) => {
                let now = ferry_server::app_schema::load(store).await?;
                if now.version == held.version {
                    bail!("{why}");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Judges every live record of every space by `schema`, printing each
/// violation as a JSON line; returns how many records were checked and how
/// many break it.
async fn check(store: &dyn ferry_server::Store, schema: &Schema) -> anyhow::Result<(u64, u64)> {
    use ferry_core::{Collection, Fields, Hlc, RecordId, RecordState};
    let (mut checked, mut refused) = (0u64, 0u64);
    let mut after = None;
    loop {
        let spaces = store.space_ids(after.as_ref(), 500).await?;
        let Some(last) = spaces.last().cloned() else {
            return Ok((checked, refused));
        };
        for space in &spaces {
            let mut cursor = 0;
            loop {
                let query = ferry_server::store::PullQuery {
                    cursor,
                    limit: 1000,
                    collections: None,
                    conflicts: None,
                };
                let page = store.pull(space, query).await?;
                for row in &page.records {
                    if row.deleted.is_some() {
                        continue;
                    }
                    let state = RecordState {
                        fields: serde_json::from_str::<Fields>(row.fields.get())?,
                        deleted: row.deleted.as_deref().map(str::parse::<Hlc>).transpose()?,
                    };
                    let (collection, id) = (
                        Collection::new(row.collection.as_str())?,
                        RecordId::new(row.id.as_str())?,
                    );
                    let found = schema.check_record(&collection, &id, &state);
                    checked += 1;
                    if !found.is_empty() {
                        refused += 1;
                    }
                    for v in found {
                        println!(
                            "{}",
                            serde_json::json!({"space": space, "collection": v.collection, "id": v.id,
                                               "field": v.field, "rule": v.rule, "message": v.message})
                        );
                    }
                }
                cursor = page.cursor;
                if !page.has_more {
                    break;
                }
            }
        }
        after = Some(last);
    }
}

/// Runs a schema command.
pub async fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Diff { old, new } => {
            print_diff(&read(&old)?, &read(&new)?);
            Ok(())
        }
        SchemaCommand::Typescript { file } => {
            print!("{}", ferry_core::schema::typescript(&read(&file)?));
            Ok(())
        }
        SchemaCommand::Check { file, config } => {
            let schema = read(&file)?;
            let config = config.resolve()?;
            crate::init_logs(config.log_format, "warn");
            let store = crate::open_store(&config).await?;
            let (checked, refused) = check(store.as_ref(), &schema).await?;
            if refused > 0 {
                bail!(
                    "{refused} of {checked} records would be refused by {}",
                    file.display()
                );
            }
            println!("All {checked} records fit {}.", file.display());
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
            let mut changed = false;
            let applied = apply(store.as_ref(), &new, force, |line| {
                changed = true;
                println!("{line}");
            })
            .await?;
            match applied {
                Applied::Already(version) => {
                    println!("Version {version} is this schema already.")
                }
                Applied::New(version) => {
                    if !changed {
                        println!("No changes.");
                    }
                    println!(
                        "Applied schema version {version}; every node checks writes against it now."
                    )
                }
            }
            Ok(())
        }
    }
}
