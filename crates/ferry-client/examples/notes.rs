//! A local-first app in a few lines: a replica file, signed in once, a
//! write that reaches the server before the program ends, and every note
//! read back from the local replica.
//!
//! With `ferry serve` running, the first time (paste the sign-in link the
//! server printed after asking for one, e.g. with the demo or `ferry login`):
//!
//! ```text
//! cargo run -p ferry-client --example notes -- http://127.0.0.1:8787 'http://127.0.0.1:8787/auth/magic-link#token=...'
//! ```
//!
//! and every time after, with the session kept in `notes.db`:
//!
//! ```text
//! cargo run -p ferry-client --example notes -- http://127.0.0.1:8787
//! ```

use std::path::Path;

use ferry_client::{LocalRecord, Query, Replica, ReplicaConfig, SyncConfig, Syncer};
use ferry_core::{Collection, RecordId};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().ok_or("usage: notes SERVER [SIGN-IN-LINK]")?;
    let link = args.next();
    for note in notes(Path::new("notes.db"), &server, link.as_deref()).await? {
        println!("{} {}", note.id, serde_json::Value::Object(note.fields));
    }
    Ok(())
}

/// Adds a note in the replica at `file`, syncs it, and returns every note.
pub async fn notes(
    file: &Path,
    server: &str,
    link: Option<&str>,
) -> Result<Vec<LocalRecord>, Box<dyn std::error::Error>> {
    let replica = Replica::open(file, ReplicaConfig::default())?;

    // Sign in once: the session (and its refresh token) stays in the
    // replica, so later runs go straight on.
    if replica.user()?.is_none() {
        let link = link.ok_or("not signed in yet: pass the sign-in link after the server")?;
        let token = link.rsplit("token=").next().unwrap_or(link);
        let user = replica.sign_in_with_link(server, token).await?;
        println!(
            "Signed in as {}",
            user.email.unwrap_or_else(|| user.id.to_string())
        );
    }

    let space = replica.personal_space()?; // user:{id}
    let syncer = Syncer::start(
        replica.clone(),
        replica.remote(server)?,
        vec![space.clone()],
        SyncConfig::default(),
    );

    // Local, durable and queued at once; the app never waits on the network.
    let notes = Collection::new("notes")?;
    let count = replica.list(&space, &notes, &Query::new())?.len();
    let id = RecordId::new(format!("n{}", count + 1))?;
    replica.put(&space, &notes, &id, json!({"text": "Hello from Rust"}))?;

    // Before the program ends, the write reaches the server.
    syncer.synced().await?;
    println!("{id} is on the server");

    let all = replica.list(&space, &notes, &Query::new())?;
    syncer.stop().await;
    Ok(all)
}
