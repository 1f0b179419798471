//! The replica: a local SQLite file holding the records of the spaces the
//! user syncs, and the app's API over it: opening it, its identity and
//! clock, and announcing changes. Local writes are in `writes.rs`, reads in
//! `reads.rs`, the rows they touch in `rows.rs`. Every local write merges
//! into the local record with ferry-core and appends to the outbox in the
//! same transaction, so a write is either both applied and queued, or
//! neither.
//!
//! Calls are synchronous and take well under a millisecond: the app reads
//! and writes local data and never waits on the network.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ferry_core::{ClientId, Collection, Hlc, RecordId, SpaceId};
use rusqlite::Connection;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::schema;

/// Where a change to a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A write of this replica's app.
    Local,
    /// A pull from the server.
    Remote,
}

/// A record that changed, for apps re-rendering what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Its space.
    pub space: SpaceId,
    /// Its collection.
    pub collection: Collection,
    /// Its id.
    pub id: RecordId,
    /// Who changed it.
    pub source: Source,
}

/// A live record as the app sees it: its fields' values.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRecord {
    /// Its collection.
    pub collection: Collection,
    /// Its id.
    pub id: RecordId,
    /// The fields' values by name.
    pub fields: Map<String, Value>,
}

/// What a local write survives once its call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The app crashing or being killed (SQLite's WAL with `synchronous =
    /// NORMAL`): a power cut may lose the last moments of writes. Fast.
    #[default]
    Crash,
    /// Also a power cut (`synchronous = FULL`, a sync of the log per
    /// write): costs a disk flush per write.
    PowerLoss,
}

/// Where the replica reads the time for its hybrid logical clock: the
/// system clock, unless an app or a test brings its own (a simulation that
/// skews and jumps clocks, say). The HLC never goes backwards whatever
/// this reads (PROTOCOL.md section 1).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> u64 + Send + Sync>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock reading milliseconds since the Unix epoch from `now`.
    pub fn from_fn(now: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(now) => now(),
            None => now_ms(),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(custom)"
        } else {
            "Clock(system)"
        })
    }
}

/// How the replica behaves; the defaults suit most apps.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// How long a local operation waits for another process holding the
    /// file's write lock.
    pub busy_timeout: Duration,
    /// What a write survives.
    pub durability: Durability,
    /// The client id a new replica file takes (PROTOCOL.md section 1's
    /// syntax); `None` draws a random one. A file that has one keeps it.
    pub client_id: Option<ClientId>,
    /// Where the HLC reads the time.
    pub clock: Clock,
    /// The most bytes of downloaded files the cache keeps (beside the
    /// replica, in `{replica}.files/`); files waiting to be uploaded are
    /// kept whatever their size.
    pub max_file_cache_bytes: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            busy_timeout: Duration::from_secs(5),
            durability: Durability::default(),
            client_id: None,
            clock: Clock::system(),
            max_file_cache_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The local replica; cheap to clone, shared by the app and the sync task.
#[derive(Debug, Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Changed only by a sign-out that wipes the replica: a wiped replica
    /// is a new device (the server gives each client id to one user).
    client_id: std::sync::RwLock<ClientId>,
    /// One connection: SQLite serializes writes anyway, and every call is
    /// short. A std mutex, since no call holds it across an `.await`.
    conn: Mutex<Connection>,
    clock: Clock,
    changes: broadcast::Sender<Changed>,
    checkpoints: Checkpoints,
    /// The app's schema writes are judged by (see `typed`).
    app_schema: std::sync::RwLock<Arc<crate::typed::HeldSchema>>,
    /// The live queries watching this replica (see `watch`).
    watchers: crate::watch::Watchers,
    /// Uploads in progress (see `files`).
    uploading: crate::files::Progress,
    /// The most bytes of downloaded files kept.
    max_file_cache_bytes: u64,
    /// Whether writes survive a power cut ([`Durability::PowerLoss`]).
    power_loss: bool,
}

/// Checkpoints of the write-ahead log, on a thread of their own: SQLite
/// would otherwise run one inside an app's write now and then, syncing the
/// disk while the app waits (the slowest of its writes by far).
#[derive(Debug)]
struct Checkpoints {
    writes: std::sync::atomic::AtomicU32,
    wake: std::sync::mpsc::SyncSender<()>,
}

/// Local writes between two checkpoints.
const CHECKPOINT_EVERY: u32 = 256;

impl Checkpoints {
    fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpoints> {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        std::thread::Builder::new()
            .name("ferry-checkpoint".into())
            .spawn(move || {
                // Ends when the replica is dropped (the sender with it).
                while woken.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "checkpoint failed; the next one will catch up");
                    }
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpoints {
            writes: Default::default(),
            wake,
        })
    }

    /// Counts `n` written pages' worth of work; wakes the thread now and then.
    fn wrote(&self, n: u32) {
        let before = self
            .writes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if before / CHECKPOINT_EVERY != (before + n) / CHECKPOINT_EVERY {
            let _ = self.wake.try_send(());
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

/// Random hex digits, for ids.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) use crate::reads::values;
pub(crate) use crate::rows::{immediate, meta, read_state, set_meta, stored_hlc, write_state};

impl Replica {
    /// Opens (or creates) the replica at `path`.
    pub fn open(path: impl AsRef<Path>, config: ReplicaConfig) -> Result<Replica> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)?;
        // Tokens and the user's data: for the owner's eyes (SQLite gives
        // the journal files the same mode).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| Error::Invalid(format!("cannot make {} private: {e}", path.display())),
            )?;
        }
        conn.busy_timeout(config.busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        let synchronous = match config.durability {
            Durability::Crash => "normal",
            Durability::PowerLoss => "full",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        // Checkpoints run on their own thread (see `Checkpoints`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        schema::migrate(&mut conn)?;
        let tx = immediate(&mut conn)?;
        let client_id = match meta(&tx, "client_id")? {
            Some(id) => ClientId::new(id).map_err(|e| corrupt("client id", e))?,
            None => {
                let id = match config.client_id {
                    Some(id) => id,
                    None => ClientId::new(format!("c_{}", random_hex(12)?))?,
                };
                set_meta(&tx, "client_id", id.as_str())?;
                id
            }
        };
        let app_schema = crate::typed::load(&tx)?;
        tx.commit()?;
        let (changes, _) = broadcast::channel(1024);
        let checkpoints = Checkpoints::start(&path, config.busy_timeout)?;
        let replica = Replica {
            inner: Arc::new(Inner {
                path,
                client_id: std::sync::RwLock::new(client_id),
                conn: Mutex::new(conn),
                clock: config.clock,
                changes,
                checkpoints,
                app_schema: std::sync::RwLock::new(Arc::new(app_schema)),
                watchers: Default::default(),
                uploading: Default::default(),
                max_file_cache_bytes: config.max_file_cache_bytes,
                power_loss: config.durability == Durability::PowerLoss,
            }),
        };
        replica.sweep_temporaries();
        Ok(replica)
    }

    /// The app schema held now.
    pub(crate) fn held_schema(&self) -> Arc<crate::typed::HeldSchema> {
        self.inner
            .app_schema
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_held_schema(&self, held: Arc<crate::typed::HeldSchema>) {
        *self
            .inner
            .app_schema
            .write()
            .unwrap_or_else(PoisonError::into_inner) = held;
    }

    /// Gives the replica a new client id, in `tx`, with its clock moved to
    /// it (the same time, the new node); the new id is used once `tx`
    /// commits and [`Self::use_client_id`] is called.
    pub(crate) fn renew_client_id(&self, tx: &Connection) -> Result<ClientId> {
        let old = stored_hlc(tx, &self.client_id())?;
        let id = ClientId::new(format!("c_{}", random_hex(12)?))?;
        let hlc = Hlc::new(old.physical(), old.logical(), id.clone())
            .ok_or_else(|| corrupt("hlc", "out of range"))?;
        set_meta(tx, "client_id", id.as_str())?;
        set_meta(tx, "hlc", &hlc.to_string())?;
        Ok(id)
    }

    pub(crate) fn use_client_id(&self, id: ClientId) {
        *self
            .inner
            .client_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    /// The replica's sync lock, unless another process holds it: whoever
    /// syncs holds it, so that one process at a time talks to the server for
    /// this file (the others keep reading and writing). Released when the
    /// returned file is dropped, or the process ends.
    pub fn try_sync_lock(&self) -> Option<std::fs::File> {
        let mut path = self.path().as_os_str().to_owned();
        path.push(".sync-lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ok()?;
        file.try_lock().ok().map(|()| file)
    }

    /// Where the replica lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This replica's client id, in every change it sends.
    pub fn client_id(&self) -> ClientId {
        self.inner
            .client_id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The replica's hybrid logical clock as it stands: at or after every
    /// HLC it wrote or heard from the server.
    pub fn hlc(&self) -> Result<Hlc> {
        stored_hlc(&self.conn(), &self.client_id())
    }

    /// Milliseconds since the Unix epoch, by the replica's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn inner_progress(&self) -> &crate::files::Progress {
        &self.inner.uploading
    }

    pub(crate) fn max_file_cache_bytes(&self) -> u64 {
        self.inner.max_file_cache_bytes
    }

    /// Whether writes must survive a power cut.
    pub(crate) fn survives_power_loss(&self) -> bool {
        self.inner.power_loss
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records changed from now on: local writes and applied pulls. A
    /// receiver that falls more than 1,024 changes behind is told it lagged
    /// and should re-read what it shows. Changes made by other processes
    /// on the same file are not seen here.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.inner.changes.subscribe()
    }

    /// Counts `n` records written, for the checkpoint thread.
    pub(crate) fn wrote(&self, n: u32) {
        self.inner.checkpoints.wrote(n);
    }

    pub(crate) fn announce(&self, changed: Changed) {
        // No receiver is fine.
        let _ = self.inner.changes.send(changed);
    }

    pub(crate) fn watchers(&self) -> &crate::watch::Watchers {
        &self.inner.watchers
    }

    /// Tells the live queries and the subscribers about the records of one
    /// committed transaction.
    pub(crate) fn announce_all(
        &self,
        space: &SpaceId,
        changed: Vec<(Collection, RecordId)>,
        source: Source,
    ) {
        self.announce_all_completing(space, changed, source, false);
    }

    /// [`Self::announce_all`], after a transaction that may have finished
    /// the space's first sync (`complete`).
    pub(crate) fn announce_all_completing(
        &self,
        space: &SpaceId,
        changed: Vec<(Collection, RecordId)>,
        source: Source,
        complete: bool,
    ) {
        self.update_watchers(space, &changed, complete);
        for (collection, id) in changed {
            self.announce(Changed {
                space: space.clone(),
                collection,
                id,
                source,
            });
        }
    }
}
