//! The replica: a local SQLite file holding the records of the spaces the
//! user syncs, and the app's API over it. Every local write merges into the
//! local record with ferry-core and appends to the outbox in the same
//! transaction, so a write is either both applied and queued, or neither.
//!
//! Calls are synchronous and take well under a millisecond: the app reads
//! and writes local data and never waits on the network.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ferry_core::local::{LocalWrite, local_write};
use ferry_core::{Change, ClientId, Collection, Fields, Hlc, RecordId, RecordState, SpaceId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::query::Query;
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

fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Reads a meta value.
pub(crate) fn meta(tx: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    // Cached, as every statement of a local write is: compiling them
    // again was a tenth of a write's time.
    tx.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Writes a meta value.
pub(crate) fn set_meta(tx: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// The replica's HLC as stored, or zero.
pub(crate) fn stored_hlc(tx: &Connection, client_id: &ClientId) -> Result<Hlc> {
    match meta(tx, "hlc")? {
        Some(text) => text.parse().map_err(|e| corrupt("hlc", e)),
        None => Ok(Hlc::zero(client_id.clone())),
    }
}

/// A record's state as stored, or the empty state.
pub(crate) fn read_state(
    tx: &Connection,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
) -> Result<RecordState> {
    let row: Option<(String, Option<String>)> = tx
        .prepare_cached(
            "SELECT fields, deleted FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )?
        .query_row([space.as_str(), collection.as_str(), id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((fields, deleted)) = row else {
        return Ok(RecordState::default());
    };
    Ok(RecordState {
        fields: serde_json::from_str(&fields).map_err(|e| corrupt("record fields", e))?,
        deleted: deleted
            .map(|d| d.parse())
            .transpose()
            .map_err(|e| corrupt("tombstone", e))?,
    })
}

/// Stores a record's state as a local write leaves it: whether the server
/// has had the record, and whether a resync met it, stay as they were.
/// A record this replica makes has its user for author (the server
/// records the same when it takes the write).
pub(crate) fn write_state(
    tx: &Connection,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
    state: &RecordState,
) -> Result<()> {
    let fields = serde_json::to_string(&state.fields).map_err(|e| corrupt("fields", e))?;
    tx.prepare_cached(
        "INSERT INTO records (space, collection, id, fields, deleted, seen, remote, author)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, (SELECT value FROM meta WHERE key = 'user_id'))
         ON CONFLICT (space, collection, id) DO UPDATE
         SET fields = excluded.fields, deleted = excluded.deleted",
    )?
    .execute(params![
        space.as_str(),
        collection.as_str(),
        id.as_str(),
        fields,
        state.deleted.as_ref().map(Hlc::to_string),
    ])?;
    Ok(())
}

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

    /// One local write, stamped with the replica's next HLC, merged into the
    /// record and queued in the outbox, in one transaction.
    fn write(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
        write: LocalWrite,
    ) -> Result<()> {
        self.write_with(space, collection, id, write, |_, _| Ok(()))
    }

    /// [`Self::write`], with `also` run in its transaction first, given
    /// the record as held: an error from it writes nothing.
    pub(crate) fn write_with(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
        write: LocalWrite,
        also: impl FnOnce(&Transaction<'_>, &RecordState) -> Result<()>,
    ) -> Result<()> {
        {
            let mut conn = self.conn();
            let tx = immediate(&mut conn)?;
            let hlc = stored_hlc(&tx, &self.client_id())?.tick(self.now_ms());
            set_meta(&tx, "hlc", &hlc.to_string())?;
            let state = read_state(&tx, space, collection, id)?;
            also(&tx, &state)?;
            // Kept only where the app's schema has something to judge.
            let before = self.judges(collection).then(|| state.clone());
            // A put leaves the fields only the server writes as they are.
            let write = match self.held_schema().schema.as_ref() {
                Some(schema) => write.keeping(&state, |f| schema.server_only(collection, f)),
                None => write,
            };
            let done = local_write(state, collection, id, write, &hlc)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            if let Some(before) = &before {
                self.judge(before, &done.change, &done.state)?;
                self.permit(&tx, space, before, &done.change)?;
            }
            let text = serde_json::to_string(&done.change).map_err(|e| corrupt("change", e))?;
            write_state(&tx, space, collection, id, &done.state)?;
            tx.prepare_cached(
                "INSERT INTO outbox (space, collection, id, change) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                space.as_str(),
                collection.as_str(),
                id.as_str(),
                text
            ])?;
            tx.prepare_cached(
                "INSERT INTO spaces (space) VALUES (?1) ON CONFLICT (space) DO NOTHING",
            )?
            .execute([space.as_str()])?;
            tx.commit()?;
        }
        self.wrote(1);
        self.announce_all(space, vec![(collection.clone(), id.clone())], Source::Local);
        Ok(())
    }

    /// Sets the named fields of a record (creating it), leaving its other
    /// fields as they are. `fields` is a JSON object.
    pub fn patch(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
        fields: impl Into<Value>,
    ) -> Result<()> {
        let write = LocalWrite::patch(fields.into()).map_err(|e| Error::Invalid(e.to_string()))?;
        self.write(space, collection, id, write)
    }

    /// Makes a record exactly `fields`, a JSON object (creating the record):
    /// fields it held that `fields` does not name are set to `null`.
    pub fn put(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
        fields: impl Into<Value>,
    ) -> Result<()> {
        let write = LocalWrite::put(fields.into()).map_err(|e| Error::Invalid(e.to_string()))?;
        self.write(space, collection, id, write)
    }

    /// Deletes a record; the delete wins over every write, before or after.
    pub fn delete(&self, space: &SpaceId, collection: &Collection, id: &RecordId) -> Result<()> {
        self.write(space, collection, id, LocalWrite::Delete)
    }

    /// A live record; `None` when it does not exist or was deleted.
    pub fn get(
        &self,
        space: &SpaceId,
        collection: &Collection,
        id: &RecordId,
    ) -> Result<Option<LocalRecord>> {
        let state = read_state(&self.conn(), space, collection, id)?;
        if state.is_deleted() || state.fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(LocalRecord {
            collection: collection.clone(),
            id: id.clone(),
            fields: values(state.fields),
        }))
    }

    /// The live records of a collection that `query` selects, in its order.
    pub fn list(
        &self,
        space: &SpaceId,
        collection: &Collection,
        query: &Query,
    ) -> Result<Vec<LocalRecord>> {
        let core = query.core()?;
        let records = self.candidates(&core, space, collection)?;
        let ids = ferry_core::live::run(&core, records.iter().map(|r| (r.id.as_str(), &r.fields)));
        let mut by_id: std::collections::HashMap<&str, &LocalRecord> =
            records.iter().map(|r| (r.id.as_str(), r)).collect();
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(&**id).cloned())
            .collect())
    }

    /// How many local changes wait to be acknowledged by the server.
    pub fn pending(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The local changes of `space` not yet acknowledged by the server,
    /// oldest first, as they will be sent.
    pub fn pending_changes(&self, space: &SpaceId) -> Result<Vec<Change>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT change FROM outbox WHERE space = ?1 ORDER BY n")?;
        let rows = stmt.query_map([space.as_str()], |r| r.get::<_, String>(0))?;
        rows.map(|text| serde_json::from_str(&text?).map_err(|e| corrupt("outbox change", e)))
            .collect()
    }

    /// The spaces this replica holds (written to or synced).
    pub fn spaces(&self) -> Result<Vec<SpaceId>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT space FROM spaces ORDER BY space")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| SpaceId::new(r?).map_err(|e| corrupt("space id", e)))
            .collect()
    }

    /// Adds `space` to the spaces this replica syncs.
    pub fn track(&self, space: &SpaceId) -> Result<()> {
        self.conn().execute(
            "INSERT INTO spaces (space) VALUES (?1) ON CONFLICT (space) DO NOTHING",
            [space.as_str()],
        )?;
        Ok(())
    }

    /// The cursor of `space`: the highest `seq` stored.
    pub fn cursor(&self, space: &SpaceId) -> Result<u64> {
        let cursor: Option<i64> = self
            .conn()
            .query_row(
                "SELECT cursor FROM spaces WHERE space = ?1",
                [space.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(cursor.unwrap_or(0).max(0) as u64)
    }

    /// The cursor of `space`, and how far its conflict reports were taken
    /// into the inbox (past the cursor while a resync pulls from 0).
    pub fn cursors(&self, space: &SpaceId) -> Result<(u64, u64)> {
        let row: Option<(i64, i64)> = self
            .conn()
            .query_row(
                "SELECT cursor, conflict_cursor FROM spaces WHERE space = ?1",
                [space.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (cursor, reported) = row.unwrap_or((0, 0));
        Ok((cursor.max(0) as u64, reported.max(0) as u64))
    }
}

pub(crate) fn values(fields: Fields) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, f)| (name.into_string(), f.value))
        .collect()
}
