//! The background sync task: it syncs the replica's spaces when the app
//! writes (debounced), when the server announces a commit (realtime
//! WebSocket, reconnecting by itself), periodically as a fallback, and
//! right away when the server is reachable again, and publishes a
//! [`SyncStatus`] the app can show.
//!
//! What it does on failure:
//! - network errors, `429`, `503`: back off exponentially with jitter
//!   (status `Offline`), then try again;
//! - `402 payment_required`: pause (status `Paused`) and try again only at
//!   the periodic interval or when asked; the app keeps working offline;
//! - `401` that the credentials could not refresh: stop (status `Error`)
//!   until asked again (after the person signed in);
//! - another process on the same replica file syncing: leave it to that
//!   one (a file lock), try again later.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ferry_core::SpaceId;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::error::Error;
use crate::remote::Remote;
use crate::replica::Replica;
use crate::session::is_local;
use crate::sync::sync_space;

/// How the background task behaves.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How long after a local write to sync (more writes meanwhile join).
    pub debounce: Duration,
    /// How often to sync when nothing else says so.
    pub interval: Duration,
    /// The first wait after a failure; doubled each time, with jitter.
    pub min_backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// Whether to listen to the server's realtime signals.
    pub realtime: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            debounce: Duration::from_millis(200),
            interval: Duration::from_secs(60),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            realtime: true,
        }
    }
}

/// What the task is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing to do.
    Idle,
    /// Talking to the server.
    Syncing,
    /// The server cannot be reached; the next try is at the backoff's end.
    Offline {
        /// Why.
        reason: String,
    },
    /// The server wants a paid plan for sync (`402`); local work goes on.
    Paused {
        /// The server's message.
        reason: String,
    },
    /// Sync stopped until the app acts (signing in again, most often).
    Error {
        /// Why.
        reason: String,
    },
}

/// The status the app can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// What the task is doing.
    pub state: State,
    /// Local changes not yet acknowledged by the server.
    pub pending: u64,
    /// When every space last synced completely.
    pub last_synced: Option<SystemTime>,
}

enum Control {
    SyncNow,
}

/// The rounds the task has ended, for [`Syncer::synced`]: how many, and
/// how the last one ended (`Ok(true)`: every space synced; `Ok(false)`:
/// some space waits on another process's lock; `Err`: the state a failure
/// left).
#[derive(Debug, Clone, Default)]
struct Rounds {
    ended: u64,
    last: Option<Result<bool, State>>,
}

/// The running background task; stops when dropped or [`Syncer::stop`]ped.
#[derive(Debug)]
pub struct Syncer {
    control: mpsc::Sender<Control>,
    status: watch::Receiver<SyncStatus>,
    rounds: watch::Receiver<Rounds>,
    task: JoinHandle<()>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Syncer {
    /// Starts syncing `spaces` of `replica` with `remote`.
    pub fn start(
        replica: Replica,
        remote: Remote,
        spaces: Vec<SpaceId>,
        config: SyncConfig,
    ) -> Syncer {
        let pending = replica.pending().unwrap_or(0);
        let (status_tx, status) = watch::channel(SyncStatus {
            state: State::Idle,
            pending,
            last_synced: None,
        });
        let (control, control_rx) = mpsc::channel(16);
        let (rounds_tx, rounds) = watch::channel(Rounds::default());
        let task = tokio::spawn(run(
            replica,
            remote,
            spaces,
            config,
            (status_tx, rounds_tx),
            control_rx,
        ));
        Syncer {
            control,
            status,
            rounds,
            task,
        }
    }

    /// The status, to watch for changes.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Syncs now, whatever the state (after signing in again, say).
    pub fn sync_now(&self) {
        let _ = self.control.try_send(Control::SyncNow);
    }

    /// Syncs now and waits until a round that began after the call has
    /// synced every space: what was written before the call is on the
    /// server, and what the server had is here. Returns the status then,
    /// or an error when that round could not (offline, paused by the
    /// billing gate, or stopped until the app acts). A round that finds
    /// another process syncing the replica is followed by another. Bound
    /// the wait with `tokio::time::timeout` where needed.
    pub async fn synced(&self) -> crate::Result<SyncStatus> {
        let mut rounds = self.rounds.clone();
        // A round under way may have read the outbox before the call: the
        // one after it is the first that surely comes after.
        let under_way = self.status.borrow().state == State::Syncing;
        let mut after = rounds.borrow_and_update().ended + u64::from(under_way);
        self.sync_now();
        loop {
            if rounds.changed().await.is_err() {
                return Err(Error::Offline("the sync task has stopped".into()));
            }
            let now = rounds.borrow_and_update().clone();
            if now.ended <= after {
                continue;
            }
            match now.last {
                Some(Ok(true)) => return Ok(self.status.borrow().clone()),
                Some(Ok(false)) | None => after = now.ended,
                Some(Err(State::Offline { reason })) => return Err(Error::Offline(reason)),
                Some(Err(State::Paused { reason } | State::Error { reason })) => {
                    return Err(Error::Stopped(reason));
                }
                Some(Err(State::Idle | State::Syncing)) => after = now.ended,
            }
        }
    }

    /// Stops the task.
    pub async fn stop(self) {
        self.task.abort();
        let task = &mut { self }.task;
        let _ = task.await;
    }
}

/// A uniformly random fraction in [0.5, 1.5), for jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    0.5 + f64::from(u16::from_le_bytes(b)) / 65536.0
}

/// One round: every space once. `Ok(true)` when all synced, `Ok(false)`
/// when another process holds the sync lock.
async fn round(
    replica: &Replica,
    remote: &Remote,
    spaces: &BTreeSet<SpaceId>,
) -> Result<bool, Error> {
    let Some(_lock) = replica.try_sync_lock() else {
        tracing::debug!("another process syncs this replica");
        return Ok(false);
    };
    // One space failing (the user was removed from it, say) must not keep
    // the others from syncing: each is tried, and the first error is
    // reported after. A network failure stops the round at once.
    let mut failed = None;
    for space in spaces {
        match sync_space(replica, remote, space).await {
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::warn!(%space, error = %e, "cannot sync this space");
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Aborts a task when dropped: the listener goes when the sync task goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(
    replica: Replica,
    remote: Remote,
    spaces: Vec<SpaceId>,
    config: SyncConfig,
    (status, rounds): (watch::Sender<SyncStatus>, watch::Sender<Rounds>),
    mut control: mpsc::Receiver<Control>,
) {
    let ended = |last: Result<bool, State>| {
        rounds.send_modify(|r| {
            r.ended += 1;
            r.last = Some(last);
        });
    };
    let mut spaces: BTreeSet<SpaceId> = spaces.into_iter().collect();
    let mut local = replica.subscribe();
    let (signal_tx, mut signals) = mpsc::channel::<SpaceId>(64);
    let listener = |spaces: &BTreeSet<SpaceId>| {
        config.realtime.then(|| {
            AbortOnDrop(tokio::spawn(listen(
                remote.clone(),
                spaces.iter().cloned().collect(),
                signal_tx.clone(),
                config.min_backoff,
                config.max_backoff,
            )))
        })
    };
    let mut _listening = listener(&spaces);
    // When to sync next: at once, since the outbox may hold writes of an
    // earlier run. `hold` is the earliest any trigger may make it: the end
    // of a backoff or a pause; `None` after an error only the app clears.
    let mut due = Instant::now();
    let mut hold = Some(Instant::now());
    let mut backoff = config.min_backoff;
    loop {
        let asked = |hold: Option<Instant>, at: Instant| hold.map(|h| at.max(h));
        tokio::select! {
            () = sleep_until(due) => {
                if hold.is_none() {
                    due = Instant::now() + config.interval;
                    continue;
                }
            }
            changed = local.recv() => {
                if let Ok(changed) = &changed {
                    // A space written for the first time: listen to it too.
                    if !is_local(&changed.space) && spaces.insert(changed.space.clone()) {
                        _listening = listener(&spaces);
                    }
                    if changed.source == crate::replica::Source::Remote {
                        continue;
                    }
                }
                publish(&replica, &status, None, false).await;
                if let Some(at) = asked(hold, Instant::now() + config.debounce) {
                    due = due.min(at);
                }
                continue;
            }
            Some(_space) = signals.recv() => {
                if let Some(at) = asked(hold, Instant::now()) {
                    due = due.min(at);
                }
                continue;
            }
            Some(Control::SyncNow) = control.recv() => {
                backoff = config.min_backoff;
            }
        }
        publish(&replica, &status, Some(State::Syncing), false).await;
        let now = Instant::now();
        match round(&replica, &remote, &spaces).await {
            Ok(all) => {
                backoff = config.min_backoff;
                publish(&replica, &status, Some(State::Idle), all).await;
                ended(Ok(all));
                hold = Some(now);
                // Another process holds the lock: look again soon.
                due = if all {
                    now + config.interval
                } else {
                    now + config.debounce * 5
                };
            }
            Err(e) if e.status() == Some(402) => {
                let state = State::Paused {
                    reason: e.to_string(),
                };
                publish(&replica, &status, Some(state.clone()), false).await;
                ended(Err(state));
                hold = Some(now + config.interval);
                due = now + config.interval;
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.mul_f64(jitter());
                tracing::debug!(error = %e, retry_in = ?wait, "sync failed; backing off");
                let state = State::Offline {
                    reason: e.to_string(),
                };
                publish(&replica, &status, Some(state.clone()), false).await;
                ended(Err(state));
                hold = Some(now + wait);
                due = now + wait;
                backoff = (backoff * 2).min(config.max_backoff);
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync stopped until the app asks again");
                let state = State::Error {
                    reason: e.to_string(),
                };
                publish(&replica, &status, Some(state.clone()), false).await;
                ended(Err(state));
                hold = None;
                due = now + config.interval;
            }
        }
    }
}

/// Listens to the server's realtime signals for `spaces`, reconnecting with
/// backoff, and passes each `sync-available` on, and each `schema` (a new
/// app schema) as a signal to sync. Reconnecting counts as a signal too:
/// commits may have been missed meanwhile.
async fn listen(
    remote: Remote,
    spaces: Vec<SpaceId>,
    signals: mpsc::Sender<SpaceId>,
    min_backoff: Duration,
    max_backoff: Duration,
) {
    let url = format!("{}/v1/ws", remote.base().replacen("http", "ws", 1));
    let mut backoff = min_backoff;
    loop {
        match listen_once(&url, &remote, &spaces, &signals).await {
            Ok(()) => backoff = min_backoff,
            Err(e) => tracing::debug!(error = %e, "realtime connection lost"),
        }
        if signals.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.mul_f64(jitter())).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

async fn listen_once(
    url: &str,
    remote: &Remote,
    spaces: &[SpaceId],
    signals: &mpsc::Sender<SpaceId>,
) -> Result<(), String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let token = remote.credentials().token().unwrap_or_default();
    tracing::debug!("realtime connected");
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send(Message::text(
            json!({"type": "subscribe", "spaces": spaces}).to_string(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(message) = socket.next().await {
        let text = match message.map_err(|e| e.to_string())? {
            Message::Text(text) => text,
            Message::Close(frame) => return Err(format!("closed: {frame:?}")),
            _ => continue,
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match message["type"].as_str() {
            Some("subscribed") => {
                // Connected (again): whatever was missed, sync.
                if let Some(first) = spaces.first() {
                    let _ = signals.send(first.clone()).await;
                }
            }
            // A new app schema: the next sync answer names its version,
            // and the sync fetches it before any more writes are judged.
            Some("schema") => {
                if let Some(first) = spaces.first()
                    && signals.send(first.clone()).await.is_err()
                {
                    return Ok(());
                }
            }
            Some("sync-available") => {
                let space = message["space"].as_str().and_then(|s| SpaceId::new(s).ok());
                if let Some(space) = space
                    && signals.send(space).await.is_err()
                {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Publishes the sync status with the replica's pending count, read off the
/// async threads.
async fn publish(
    replica: &Replica,
    status: &watch::Sender<SyncStatus>,
    state: Option<State>,
    synced: bool,
) {
    let pending = crate::sync::blocking(replica, |r| r.pending())
        .await
        .unwrap_or(0);
    status.send_modify(|s| {
        if let Some(state) = state {
            s.state = state;
        }
        s.pending = pending;
        if synced {
            s.last_synced = Some(SystemTime::now());
        }
    });
}
