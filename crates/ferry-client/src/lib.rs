//! Ferry's native client: what a Rust app embeds to be local-first.
//!
//! The app reads and writes a [`Replica`], a local SQLite file, and never
//! waits on the network; every write lands in the replica and in its
//! durable outbox in one transaction. [`sync_space`] carries the outbox to
//! a Ferry server ([`Remote`]) and stores what the server sends back,
//! merged with the same code the server runs (`ferry-core`).
//!
//! - [`replica`]: the local store and the app's API (put, patch, delete,
//!   get, list, subscribe, the conflicts inbox).
//! - [`query`]: filters and orders for [`Replica::list`].
//! - [`sync`]: one sync of one space, step by step (its loop in `sync/run.rs`,
//!   the full resync from 0 in `sync/resync.rs`).
//! - [`runtime`]: the background task that syncs when it should, and its
//!   status.
//! - [`remote`]: the server and the credentials sent to it.
//! - [`session`]: anonymous use, sign-in, refresh, sign-out (keep or wipe).
//! - `schema`: the replica's tables.
//!
//! An app, start to end (`examples/notes.rs` has it whole, and
//! docs/rust-client.md shows it):
//!
//! ```no_run
//! use ferry_client::{Query, Replica, ReplicaConfig, SyncConfig, Syncer};
//! use ferry_core::{Collection, RecordId};
//! use serde_json::json;
//!
//! async fn app(server: &str, link_token: &str) -> Result<(), Box<dyn std::error::Error>> {
//!     let replica = Replica::open("notes.db", ReplicaConfig::default())?;
//!     if replica.user()?.is_none() {
//!         replica.sign_in_with_link(server, link_token).await?; // once; the session is kept
//!     }
//!     let space = replica.personal_space()?; // user:{id}
//!     let syncer = Syncer::start(replica.clone(), replica.remote(server)?, vec![space.clone()], SyncConfig::default());
//!
//!     let notes = Collection::new("notes")?;
//!     replica.put(&space, &notes, &RecordId::new("n1")?, json!({"text": "Hello"}))?; // local, durable, queued
//!     let all = replica.list(&space, &notes, &Query::new())?;
//!     let mut changes = replica.subscribe(); // local and remote changes, to re-render
//!     let status = syncer.status(); // idle / syncing / offline / paused / error, pending, last synced
//!     syncer.synced().await?; // the write is on the server
//!     # let _ = (all, changes.try_recv(), status);
//!     Ok(())
//! }
//! ```

pub mod error;
pub mod files;
pub mod query;
mod reads;
pub mod remote;
pub mod replica;
mod rows;
pub mod runtime;
mod schema;
pub mod session;
pub mod settle;
pub mod sync;
pub mod typed;
pub mod watch;
mod writes;

pub use error::{Error, Result};
pub use files::{FileEvent, FileStatus};
pub use query::{Op, Order, Query};
pub use remote::{Credentials, Remote, Token};
pub use replica::{Changed, Clock, Durability, LocalRecord, Replica, ReplicaConfig, Source};
pub use runtime::{State, SyncConfig, SyncStatus, Syncer};
pub use session::{ANONYMOUS_SPACE, Session, SignOut, User, request_magic_link};
pub use settle::{Resolution, StoredConflict};
pub use sync::{Rejected, SyncReport, sync_space, sync_space_with};
pub use watch::{QueryResult, QueryStatus, Watch};
