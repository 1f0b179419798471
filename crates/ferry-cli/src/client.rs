//! The client commands: `ferry put/get/ls/rm/sync/watch/conflicts` on the
//! local replica of the signed-in user (`ferry login`), synced with the
//! server it signed in to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_client::{
    Op, Order, Query, Replica, ReplicaConfig, Resolution, Source, State, SyncConfig, Syncer,
    sync_space_with,
};
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Map, Value};

/// Where the replica is and which space to use.
#[derive(Debug, Clone, Args)]
pub struct ReplicaArgs {
    /// The replica file [default: the one `ferry login` signed in last;
    /// `ferry login` itself: ~/.local/share/ferry/replica.db].
    #[arg(long, env = "FERRY_REPLICA", value_name = "FILE")]
    pub replica: Option<PathBuf>,
    /// The space [default: your personal space].
    #[arg(long)]
    pub space: Option<String>,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set fields of a record (creating it); other fields stay.
    Put {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        /// The fields, as a JSON object: '{"title": "Milk"}'.
        fields: String,
        /// Make the record exactly these fields (the others become null).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// Print a record's fields.
    Get {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// List a collection's records, one JSON object per line.
    Ls {
        /// The collection.
        collection: String,
        /// Only records whose field equals a value: `done=false`,
        /// `title="Milk"` (a JSON value, or else a string). Repeatable.
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        filters: Vec<String>,
        /// Order by a field: `title`, or `title:desc`.
        #[arg(long, value_name = "FIELD[:desc]")]
        order: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// Delete a record.
    Rm {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// Sync every space of the replica now.
    Sync {
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// Keep syncing, printing each record as it changes, until Ctrl-C.
    Watch {
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// Sign out: syncs what is pending, ends the session on the server and
    /// wipes the replica's data (unless --keep), so the next person on this
    /// device finds nothing.
    Logout {
        /// Keep the local data.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        at: ReplicaArgs,
    },
    /// List the conflicts the server reported (and, once, the changes it
    /// refused for good), or settle a conflict.
    Conflicts {
        /// The conflict to settle.
        #[arg(long, value_name = "N", conflicts_with = "restore")]
        resolve: Option<i64>,
        /// Settle a `record_deleted` conflict by writing what this replica
        /// lost to the delete as a new record (printed).
        #[arg(long, value_name = "N")]
        restore: Option<i64>,
        /// The id of the restored record (default: made from the deleted
        /// one).
        #[arg(long, requires = "restore", value_name = "ID")]
        id: Option<String>,
        /// Write this replica's value again.
        #[arg(long, requires = "resolve")]
        keep_mine: bool,
        /// Keep the server's value.
        #[arg(long, requires = "resolve")]
        take_theirs: bool,
        /// Write this JSON value instead.
        #[arg(long, requires = "resolve", value_name = "JSON")]
        value: Option<String>,
        #[command(flatten)]
        at: ReplicaArgs,
    },
}

/// The replica file `ferry login` uses when told none.
pub fn login_replica() -> anyhow::Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".local")
            .join("share"),
    };
    Ok(data.join("ferry").join("replica.db"))
}

/// Opens the replica `args` names, else the one `ferry login` signed in
/// last. With neither, nobody is signed in on this machine: that is said,
/// and nothing is created.
pub fn open(args: &ReplicaArgs) -> anyhow::Result<Replica> {
    const HOW: &str = "sign in with ferry login --email you@example.com (add --server URL \
                       for a server other than http://127.0.0.1:8787), or name a replica \
                       with --replica FILE";
    if let Some(path) = &args.replica {
        return open_at(path);
    }
    let Some(path) = crate::login::stored_replica()? else {
        bail!("nobody is signed in on this machine: {HOW}");
    };
    // The replica login named is gone, or signed out since: nothing to
    // open, and nothing to create in its place.
    if !path.exists() {
        bail!(
            "the replica {} that ferry login signed in is gone: {HOW}",
            path.display()
        );
    }
    let replica = open_at(&path)?;
    if replica.user()?.is_none() {
        bail!(
            "nobody is signed in on the replica {} (signed out): {HOW}",
            path.display()
        );
    }
    Ok(replica)
}

/// Opens (creating) the replica at `path`, and its directory.
pub fn open_at(path: &std::path::Path) -> anyhow::Result<Replica> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Replica::open(path, ReplicaConfig::default())
        .with_context(|| format!("cannot open the replica {}", path.display()))
}

fn space(replica: &Replica, args: &ReplicaArgs) -> anyhow::Result<SpaceId> {
    Ok(match &args.space {
        Some(s) => SpaceId::new(s.as_str())?,
        None => replica.personal_space()?,
    })
}

fn object(json: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(json).context("the fields are not JSON")? {
        Value::Object(map) => Ok(map),
        _ => bail!("the fields must be a JSON object, like '{{\"title\": \"Milk\"}}'"),
    }
}

/// `1 change`, `2 changes`.
fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A JSON value, or the text as a string.
fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The server a signed-in replica syncs with.
fn server_of(replica: &Replica) -> anyhow::Result<String> {
    match (replica.user()?, replica.server()?) {
        (Some(_), Some(server)) => Ok(server),
        _ => bail!("this replica is not signed in; run ferry login first"),
    }
}

/// Syncs every space, with a progress line on a terminal, and says what
/// it did (on stderr when `quiet`, so that output meant for scripts stays
/// JSON).
pub async fn sync_all(replica: &Replica, quiet: bool) -> anyhow::Result<()> {
    let server = server_of(replica)?;
    let say = |line: String| {
        if quiet {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let Some(_lock) = replica.try_sync_lock() else {
        say("Another process is syncing this replica; it carries these changes too.".into());
        return Ok(());
    };
    let remote = replica.remote(&server)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut spaces = replica.spaces()?;
    let personal = replica.personal_space()?;
    if !spaces.contains(&personal) {
        spaces.push(personal);
    }
    let (mut pushed, mut pulled) = (0, 0);
    for space in spaces
        .iter()
        .filter(|s| !ferry_client::session::is_local(s))
    {
        bar.set_message(format!("syncing {space}"));
        let report = sync_space_with(replica, &remote, space, &mut |r| {
            bar.set_message(format!(
                "syncing {space}: {} sent, {} received",
                r.pushed, r.pulled
            ));
        })
        .await
        .with_context(|| format!("cannot sync {space}"))?;
        pushed += report.pushed;
        pulled += report.pulled;
        if report.conflicts > 0 {
            bar.println(format!(
                "{space}: {} conflicts; see ferry conflicts",
                report.conflicts
            ));
        }
        if report.expired {
            bar.println(format!(
                "{space}: this replica was away longer than the server keeps history; \
                 it pulled the space again, and edits of yours that lost meanwhile \
                 may not be in ferry conflicts"
            ));
        }
    }
    bar.finish_and_clear();
    say(format!(
        "Synced with {server}: {} sent, {} received.",
        counted(pushed, "change"),
        counted(pulled, "record")
    ));
    Ok(())
}

impl ClientCommand {
    fn at(&self) -> &ReplicaArgs {
        match self {
            ClientCommand::Put { at, .. }
            | ClientCommand::Get { at, .. }
            | ClientCommand::Ls { at, .. }
            | ClientCommand::Rm { at, .. }
            | ClientCommand::Sync { at }
            | ClientCommand::Watch { at }
            | ClientCommand::Logout { at, .. }
            | ClientCommand::Conflicts { at, .. } => at,
        }
    }
}

/// Runs a client command.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let args = command.at().clone();
    let replica = open(&args)?;
    match command {
        ClientCommand::Put {
            collection,
            id,
            fields,
            replace,
            ..
        } => {
            let space = space(&replica, &args)?;
            let (collection, id) = (Collection::new(collection)?, RecordId::new(id)?);
            let fields = object(&fields)?;
            if replace {
                replica.put(&space, &collection, &id, fields)?;
            } else {
                replica.patch(&space, &collection, &id, fields)?;
            }
            write_through(&replica).await;
        }
        ClientCommand::Get { collection, id, .. } => {
            let space = space(&replica, &args)?;
            let (collection, id) = (Collection::new(collection)?, RecordId::new(id)?);
            read_through(&replica).await;
            let record = replica
                .get(&space, &collection, &id)?
                .with_context(|| format!("no record {collection}/{id} in {space}"))?;
            println!("{}", Value::Object(record.fields));
        }
        ClientCommand::Ls {
            collection,
            filters,
            order,
            limit,
            ..
        } => {
            let space = space(&replica, &args)?;
            let mut query = Query::new();
            for filter in &filters {
                let (field, v) = filter
                    .split_once('=')
                    .with_context(|| format!("--where {filter}: expected FIELD=VALUE"))?;
                query = query.filter(field, Op::Eq, value(v));
            }
            if let Some(order) = &order {
                query = match order.split_once(':') {
                    Some((field, "desc")) => query.order_by(field, Order::Desc),
                    Some((field, "asc")) | Some((field, "")) => query.order_by(field, Order::Asc),
                    Some((_, other)) => bail!("--order: {other} is neither asc nor desc"),
                    None => query.order_by(order, Order::Asc),
                };
            }
            if let Some(n) = limit {
                query = query.limit(n);
            }
            let collection = Collection::new(collection)?;
            read_through(&replica).await;
            for record in replica.list(&space, &collection, &query)? {
                let mut line = Map::new();
                line.insert("id".into(), Value::String(record.id.into_string()));
                line.extend(record.fields);
                println!("{}", Value::Object(line));
            }
        }
        ClientCommand::Rm { collection, id, .. } => {
            let space = space(&replica, &args)?;
            replica.delete(&space, &Collection::new(collection)?, &RecordId::new(id)?)?;
            write_through(&replica).await;
        }
        ClientCommand::Sync { .. } => sync_all(&replica, false).await?,
        ClientCommand::Watch { .. } => watch(&replica).await?,
        ClientCommand::Logout { keep, .. } => logout(&replica, keep).await?,
        ClientCommand::Conflicts {
            restore: Some(n),
            id,
            ..
        } => {
            let id = id.map(RecordId::new).transpose()?;
            let restored = replica.restore(n, id.as_ref())?;
            println!("Restored as {restored}.");
            write_through(&replica).await;
        }
        ClientCommand::Conflicts {
            resolve,
            keep_mine,
            take_theirs,
            value: v,
            ..
        } => match resolve {
            None => {
                let conflicts = replica.conflicts()?;
                let rejected = replica.rejected()?;
                if conflicts.is_empty() && rejected.is_empty() {
                    eprintln!("No conflicts: every write of this replica stands.");
                }
                for c in conflicts {
                    println!(
                        "{}",
                        serde_json::json!({"n": c.n, "space": c.space, "conflict": c.conflict})
                    );
                }
                // Changes the server refused for good: shown once, then
                // forgotten (the records already hold the server's copy).
                for r in rejected {
                    println!(
                        "{}",
                        serde_json::json!({"space": r.space, "rejected": r.change,
                                           "code": r.code, "message": r.message})
                    );
                    replica.dismiss_rejected(r.n)?;
                }
            }
            Some(n) => {
                let resolution = match (keep_mine, take_theirs, v) {
                    (true, false, None) => Resolution::KeepMine,
                    (false, true, None) => Resolution::TakeTheirs,
                    (false, false, Some(v)) => Resolution::Value(value(&v)),
                    _ => bail!("say one of --keep-mine, --take-theirs or --value"),
                };
                replica.resolve(n, resolution)?;
                println!("Conflict {n} settled.");
                write_through(&replica).await;
            }
        },
    }
    Ok(())
}

/// Signs the replica out, syncing first so that a wipe loses nothing it can
/// help.
async fn logout(replica: &Replica, keep: bool) -> anyhow::Result<()> {
    let server = server_of(replica)?;
    if replica.pending()? > 0
        && let Err(e) = sync_all(replica, false).await
    {
        eprintln!("could not sync before signing out: {e:#}");
    }
    let remote = replica.remote(&server)?;
    let policy = if keep {
        ferry_client::SignOut::Keep
    } else {
        ferry_client::SignOut::Wipe
    };
    let discarded = replica.sign_out(&remote, policy).await?;
    crate::login::forget(replica.path())?;
    if discarded > 0 {
        println!("Signed out; {discarded} changes that never reached the server were discarded.");
    } else if keep {
        println!("Signed out; the local data stays.");
    } else {
        println!("Signed out; the local data is wiped.");
    }
    Ok(())
}

/// After a local write: sync when signed in; a failure only means later.
async fn write_through(replica: &Replica) {
    if server_of(replica).is_err() {
        println!("Saved locally.");
        return;
    }
    match tokio::time::timeout(Duration::from_secs(10), sync_all(replica, false)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => println!("Saved locally; not synced yet: {e:#}"),
        Err(_) => println!("Saved locally; the server is slow, sync again later."),
    }
}

/// Before a read: sync when signed in, so that what is printed includes
/// what other devices wrote; offline, the local copy is read and that is
/// said on stderr (stdout stays the records).
async fn read_through(replica: &Replica) {
    if server_of(replica).is_err() {
        eprintln!("This replica is not signed in: showing what was written on it alone.");
        return;
    }
    match tokio::time::timeout(Duration::from_secs(10), sync_all(replica, true)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("Showing the local copy; could not sync: {e:#}"),
        Err(_) => eprintln!("Showing the local copy; the server is slow."),
    }
}

/// Syncs in the background and prints every change until Ctrl-C.
async fn watch(replica: &Replica) -> anyhow::Result<()> {
    let server = server_of(replica)?;
    let remote = replica.remote(&server)?;
    let mut spaces = replica.spaces()?;
    let personal = replica.personal_space()?;
    if !spaces.contains(&personal) {
        spaces.push(personal);
    }
    let mut changes = replica.subscribe();
    let syncer = Syncer::start(replica.clone(), remote, spaces, SyncConfig::default());
    let mut status = syncer.status();
    eprintln!("Watching {} (Ctrl-C to stop)", replica.path().display());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                match &s.state {
                    State::Offline { reason } | State::Paused { reason } | State::Error { reason } => {
                        eprintln!("sync: {reason} ({} pending)", s.pending);
                    }
                    State::Idle | State::Syncing => {}
                }
            }
            changed = changes.recv() => {
                let Ok(changed) = changed else { continue };
                let record = replica.get(&changed.space, &changed.collection, &changed.id)?;
                let origin = match changed.source {
                    Source::Local => "local",
                    Source::Remote => "remote",
                };
                let line = serde_json::json!({
                    "space": changed.space, "collection": changed.collection, "id": changed.id,
                    "from": origin, "fields": record.map(|r| Value::Object(r.fields)),
                });
                println!("{line}");
            }
        }
    }
    syncer.stop().await;
    Ok(())
}
