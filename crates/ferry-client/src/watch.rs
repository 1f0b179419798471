//! Live queries in the native client (docs/live-queries.md):
//! [`Replica::watch`] keeps a query's result current as the app writes and
//! pulls apply, with ferry-core's [`LiveQuery`], the engine the browser
//! client runs. Each change costs work proportional to it: the changed
//! record's new state is read by its key, the engine says what the window
//! did, and rows that did not change are the same `Arc`s in the next
//! result. The changes of one transaction (a pulled page) give one result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ferry_core::live::{LiveQuery, WindowChange};
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Map, Value};
use tokio::sync::watch;

use rusqlite::OptionalExtension;

use crate::error::Result;
use crate::query::{Query, candidates};
use crate::replica::{LocalRecord, Replica, corrupt, read_state};

/// A live query's result: the rows of its window, in order, and how far
/// the replica's copy of the space is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    /// A row that did not change is the same `Arc` as in the last result.
    pub rows: Vec<Arc<LocalRecord>>,
    /// Whether the space's first sync has reached the server's head.
    pub status: QueryStatus,
    /// Why the last change could not be taken in whole (a record that
    /// could not be read), with `rows` holding what was taken in before
    /// it; `None` once a later change is taken in.
    pub error: Option<String>,
}

/// Whether a live query's rows are all the server has (`Complete`), or its
/// space's first sync is still under way and more may come (`Loading`).
/// A space of this device alone (`local:…`) is always complete; a space
/// stays complete once its first sync finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryStatus {
    /// The space's first sync has not reached the server's head yet.
    #[default]
    Loading,
    /// A pull of the space has reached the server's head.
    Complete,
}

/// A watched query: [`Watch::current`] is its result now, and
/// [`Watch::changed`] waits for the next one. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    receiver: watch::Receiver<Arc<QueryResult>>,
    _watcher: Arc<Watcher>,
}

impl Watch {
    /// The current result.
    pub fn current(&self) -> Arc<QueryResult> {
        self.receiver.borrow().clone()
    }

    /// Waits for a result newer than the last one seen, and returns it.
    pub async fn changed(&mut self) -> Arc<QueryResult> {
        // The sender lives as long as `_watcher`, held here.
        let _ = self.receiver.changed().await;
        self.receiver.borrow_and_update().clone()
    }

    /// The receiver itself, for `select!` and for other tasks.
    pub fn receiver(&self) -> watch::Receiver<Arc<QueryResult>> {
        self.receiver.clone()
    }
}

#[derive(Debug)]
pub(crate) struct Watcher {
    space: SpaceId,
    collection: Collection,
    state: Mutex<Engine>,
    sender: watch::Sender<Arc<QueryResult>>,
}

#[derive(Debug)]
struct Engine {
    live: LiveQuery,
    /// One row per matching record.
    rows: HashMap<Arc<str>, Arc<LocalRecord>>,
    status: QueryStatus,
}

/// The watchers of a replica (dropped ones are swept as they are met).
pub(crate) type Watchers = Mutex<Vec<Weak<Watcher>>>;

impl Replica {
    /// Watches `query` over a collection: the current result at once, then
    /// each new one as local writes and pulls change what it selects.
    /// Writes by another process on the same file are not seen.
    pub fn watch(&self, space: &SpaceId, collection: &Collection, query: &Query) -> Result<Watch> {
        let core = query.core()?;
        let (sender, mut receiver) = watch::channel(Arc::new(QueryResult::default()));
        let watcher = Arc::new(Watcher {
            space: space.clone(),
            collection: collection.clone(),
            state: Mutex::new(Engine {
                live: LiveQuery::new(core.clone()),
                rows: HashMap::new(),
                status: QueryStatus::Loading,
            }),
            sender,
        });
        // Registered before it reads, and reading under its engine's lock:
        // a change committed meanwhile waits for the lock, then reads the
        // record again, so none is missed.
        let mut engine = watcher.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.watchers()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&watcher));
        engine.status = self.status_of(space)?;
        let records = self.candidates(&core, space, collection)?;
        engine
            .live
            .load(records.iter().map(|r| (r.id.as_str(), &r.fields)));
        for r in records {
            if core.matches(|f| r.fields.get(f)) {
                engine.rows.insert(Arc::from(r.id.as_str()), Arc::new(r));
            }
        }
        let status = engine.status;
        let first = engine.result(&QueryResult {
            status,
            ..QueryResult::default()
        });
        watcher.sender.send_replace(Arc::new(first));
        drop(engine);
        // The first result is the current one, not a change.
        receiver.mark_unchanged();
        Ok(Watch {
            receiver,
            _watcher: watcher,
        })
    }

    /// The live records a query's candidates statement reads.
    pub(crate) fn candidates(
        &self,
        core: &ferry_core::query::Query,
        space: &SpaceId,
        collection: &Collection,
    ) -> Result<Vec<LocalRecord>> {
        let held = self.held_schema();
        let indexed = held
            .schema
            .as_ref()
            .map(|s| s.indexed(collection))
            .unwrap_or_default();
        let (sql, params) = candidates(core, space, collection, &indexed);
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (id, fields) = row?;
            let fields: ferry_core::Fields =
                serde_json::from_str(&fields).map_err(|e| corrupt("record fields", e))?;
            Ok(LocalRecord {
                collection: collection.clone(),
                id: RecordId::new(id).map_err(|e| corrupt("record id", e))?,
                fields: crate::replica::values(fields),
            })
        })
        .collect()
    }

    /// Whether `space`'s first sync has finished, as the replica holds it.
    fn status_of(&self, space: &SpaceId) -> Result<QueryStatus> {
        if crate::session::is_local(space) {
            return Ok(QueryStatus::Complete);
        }
        let complete: Option<bool> = self
            .conn()
            .query_row(
                "SELECT complete FROM spaces WHERE space = ?1",
                [space.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(if complete == Some(true) {
            QueryStatus::Complete
        } else {
            QueryStatus::Loading
        })
    }

    /// Brings the watchers of `space` up to date with the records named,
    /// after the transaction that changed them committed; with `complete`,
    /// that transaction finished the space's first sync (one result says
    /// both).
    pub(crate) fn update_watchers(
        &self,
        space: &SpaceId,
        changed: &[(Collection, RecordId)],
        complete: bool,
    ) {
        let watchers: Vec<Arc<Watcher>> = {
            let mut all = self
                .watchers()
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for w in watchers.iter().filter(|w| &w.space == space) {
            let mine: Vec<&RecordId> = changed
                .iter()
                .filter(|(c, _)| c == &w.collection)
                .map(|(_, id)| id)
                .collect();
            if mine.is_empty() && !complete {
                continue;
            }
            if let Err(e) = self.update_one(w, &mine, complete) {
                tracing::warn!(error = %e, "a live query could not read a changed record");
            }
        }
    }

    fn update_one(&self, w: &Watcher, ids: &[&RecordId], complete: bool) -> Result<()> {
        // The states are read under the engine's lock: of two updates, the
        // later one reads the later state.
        let mut engine = w.state.lock().unwrap_or_else(PoisonError::into_inner);
        if complete {
            engine.status = QueryStatus::Complete;
        }
        let read = self.take_in(&mut engine, w, ids);
        // Published under the lock, with what was taken in before any
        // failure and the failure itself.
        let error = read.as_ref().err().map(ToString::to_string);
        let before = w.sender.borrow().clone();
        let next = match engine.next(&before) {
            Some(next) => QueryResult {
                error: error.clone(),
                ..next
            },
            None if before.status != engine.status || before.error != error => QueryResult {
                rows: before.rows.clone(),
                status: engine.status,
                error,
            },
            None => return read,
        };
        w.sender.send_replace(Arc::new(next));
        read
    }

    /// Reads each record named and feeds it to the engine.
    fn take_in(&self, engine: &mut Engine, w: &Watcher, ids: &[&RecordId]) -> Result<()> {
        for id in ids {
            let state = read_state(&self.conn(), &w.space, &w.collection, id)?;
            // A record the replica no longer holds reads as no fields.
            let live = !state.is_deleted() && !state.fields.is_empty();
            let fields: Option<Map<String, Value>> =
                live.then(|| crate::replica::values(state.fields));
            let matches = engine.live.apply(id.as_str(), fields.as_ref());
            match fields {
                Some(fields) if matches => {
                    let row = LocalRecord {
                        collection: w.collection.clone(),
                        id: (*id).clone(),
                        fields,
                    };
                    let key: Arc<str> = Arc::from(id.as_str());
                    if engine.rows.get(&key).is_none_or(|held| **held != row) {
                        engine.rows.insert(key, Arc::new(row));
                    }
                }
                _ => {
                    engine.rows.remove(id.as_str());
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// The result after what the engine says changed, or `None`.
    fn next(&mut self, before: &QueryResult) -> Option<QueryResult> {
        let change = self.live.take()?;
        Some(self.apply(before, change))
    }

    fn result(&mut self, before: &QueryResult) -> QueryResult {
        match self.live.take() {
            Some(change) => self.apply(before, change),
            None => before.clone(),
        }
    }

    fn apply(&self, before: &QueryResult, change: WindowChange) -> QueryResult {
        let row = |id: &Arc<str>| self.rows.get(id).cloned();
        let rows = match change {
            WindowChange::Reset(ids) => ids.iter().filter_map(row).collect(),
            WindowChange::Splices(splices) => {
                let mut rows: Vec<Option<Arc<LocalRecord>>> =
                    before.rows.iter().cloned().map(Some).collect();
                for s in splices {
                    s.apply(&mut rows, row);
                }
                // Every id the engine names is held: none is left out.
                rows.into_iter().flatten().collect()
            }
        };
        QueryResult {
            rows,
            status: self.status,
            error: None,
        }
    }
}
