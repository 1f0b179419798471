//! A live query (docs/live-queries.md): the result of a [`Query`] kept
//! current change by change, in work proportional to the change.
//!
//! A [`LiveQuery`] holds the id and sort key of every record that matches,
//! in the query's order, never the records' fields, and the window
//! (`offset`, `limit`) it last handed out. Each change gives a record's new
//! fields (or none: deleted, gone); from them and the sort key it held the
//! engine decides whether the record enters, leaves, moves or changes in
//! place, and records what that does to the window as [`Splice`]s. The
//! consumer (the browser client's rows, the native client's `watch`)
//! applies them to its last result at the end of a tick: one new result
//! for any number of changes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::query::Query;

/// One edit of the window, by position in it as the edits before it left
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Splice {
    /// The row at this position leaves.
    Remove(usize),
    /// The record with this id comes in at this position.
    Insert(usize, Arc<str>),
    /// The row at this position is the same record with new fields.
    Replace(usize, Arc<str>),
}

/// What changed in a live query's window since the last [`LiveQuery::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowChange {
    /// The whole window, by id: after a load, or when the splices would
    /// cost more than building it again.
    Reset(Vec<Arc<str>>),
    /// The edits that turn the last window into this one.
    Splices(Vec<Splice>),
}

/// Above this many splices in a tick, the window is handed out whole.
const MAX_SPLICES: usize = 64;

#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    key: Vec<Value>,
}

/// One query's result, kept current by [`LiveQuery::apply`].
#[derive(Debug)]
pub struct LiveQuery {
    query: Query,
    /// Every matching record, in the query's order.
    sorted: Vec<Arc<Entry>>,
    by_id: HashMap<Arc<str>, Arc<Entry>>,
    /// The window as the splices so far leave it.
    window: Vec<Arc<str>>,
    splices: Vec<Splice>,
    reset: bool,
}

impl LiveQuery {
    /// A live query with no records yet: [`LiveQuery::load`] gives it
    /// its first ones.
    pub fn new(query: Query) -> LiveQuery {
        LiveQuery {
            query,
            sorted: Vec::new(),
            by_id: HashMap::new(),
            window: Vec::new(),
            splices: Vec::new(),
            reset: true,
        }
    }

    pub fn query(&self) -> &Query {
        &self.query
    }

    /// How many records match (the whole result, not only the window).
    pub fn matches(&self) -> usize {
        self.sorted.len()
    }

    /// The window's ids, in order.
    pub fn window(&self) -> impl Iterator<Item = &str> {
        self.window.iter().map(|id| &**id)
    }

    /// Starts over from `records` (each its id and its live fields): the
    /// next [`LiveQuery::take`] hands out the whole window.
    pub fn load<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>,
    ) {
        self.sorted.clear();
        self.by_id.clear();
        for (id, fields) in records {
            if let Some(entry) = self.entry(id, fields) {
                self.by_id.insert(entry.id.clone(), entry.clone());
                self.sorted.push(entry);
            }
        }
        let query = &self.query;
        self.sorted
            .sort_by(|a, b| query.cmp_keys((&a.id, &a.key), (&b.id, &b.key)));
        // Two entries of one id (a caller's duplicate) would break the
        // order's uniqueness: keep the one the map kept.
        if self.sorted.len() != self.by_id.len() {
            let by_id = &self.by_id;
            self.sorted
                .retain(|e| by_id.get(&e.id).is_some_and(|kept| Arc::ptr_eq(kept, e)));
        }
        self.window = self.sorted[self.query.window(self.sorted.len())]
            .iter()
            .map(|e| e.id.clone())
            .collect();
        self.splices.clear();
        self.reset = true;
    }

    /// Takes in one record's new state: its live fields, or `None` when it
    /// is deleted or gone. Returns whether the record now matches.
    pub fn apply(&mut self, id: &str, fields: Option<&Map<String, Value>>) -> bool {
        let old = self.by_id.remove(id);
        let new = fields.and_then(|f| self.entry(id, f));
        let matches = new.is_some();
        match (old, new) {
            (None, None) => {}
            (Some(old), None) => {
                let at = self.position(&old);
                self.sorted.remove(at);
                self.removed(at);
            }
            (None, Some(new)) => self.insert(new),
            (Some(old), Some(new)) => {
                let at = self.position(&old);
                self.sorted.remove(at);
                let to = self.position(&new);
                self.by_id.insert(new.id.clone(), new.clone());
                if to == at {
                    // Same place: the row changes in place.
                    self.sorted.insert(at, new.clone());
                    if let Some(i) = self.in_window(at) {
                        self.splice(Splice::Replace(i, new.id.clone()));
                    }
                } else {
                    self.removed(at);
                    self.sorted.insert(to, new.clone());
                    self.inserted(to);
                }
            }
        }
        matches
    }

    /// What changed in the window since the last call, or `None` when
    /// nothing did.
    pub fn take(&mut self) -> Option<WindowChange> {
        if self.reset || self.splices.len() > MAX_SPLICES {
            self.reset = false;
            self.splices.clear();
            return Some(WindowChange::Reset(self.window.clone()));
        }
        if self.splices.is_empty() {
            return None;
        }
        Some(WindowChange::Splices(std::mem::take(&mut self.splices)))
    }

    fn entry(&self, id: &str, fields: &Map<String, Value>) -> Option<Arc<Entry>> {
        self.query.matches(|f| fields.get(f)).then(|| {
            Arc::new(Entry {
                id: Arc::from(id),
                key: self.query.sort_key(|f| fields.get(f)),
            })
        })
    }

    fn insert(&mut self, new: Arc<Entry>) {
        let to = self.position(&new);
        self.by_id.insert(new.id.clone(), new.clone());
        self.sorted.insert(to, new);
        self.inserted(to);
    }

    /// Where an entry is in `sorted`, or goes.
    fn position(&self, entry: &Entry) -> usize {
        let query = &self.query;
        self.sorted
            .binary_search_by(|e| query.cmp_keys((&e.id, &e.key), (&entry.id, &entry.key)))
            .unwrap_or_else(|at| at)
    }

    /// The window's bounds over the current `sorted`, unclamped at the end.
    fn bounds(&self) -> (usize, usize) {
        let start = usize::try_from(self.query.offset).unwrap_or(usize::MAX);
        let end = match self.query.limit {
            Some(limit) => start.saturating_add(usize::try_from(limit).unwrap_or(usize::MAX)),
            None => usize::MAX,
        };
        (start, end)
    }

    fn in_window(&self, rank: usize) -> Option<usize> {
        let (start, end) = self.bounds();
        (start <= rank && rank < end).then(|| rank - start)
    }

    /// The window after the entry at `rank` left `sorted`.
    fn removed(&mut self, rank: usize) {
        let (start, end) = self.bounds();
        if rank >= end {
            return;
        }
        if rank >= start {
            self.splice(Splice::Remove(rank - start));
        } else if !self.window.is_empty() {
            // Everything after it moved up one: the first row leaves.
            self.splice(Splice::Remove(0));
        }
        self.refill();
    }

    /// The window after an entry came into `sorted` at `rank`.
    fn inserted(&mut self, rank: usize) {
        let (start, end) = self.bounds();
        if rank >= end {
            return;
        }
        if rank >= start {
            self.splice(Splice::Insert(rank - start, self.sorted[rank].id.clone()));
        } else if let Some(first) = self.sorted.get(start) {
            // Everything after it moved down one: a row comes in first.
            self.splice(Splice::Insert(0, first.id.clone()));
        }
        let want = self.query.window(self.sorted.len()).len();
        while self.window.len() > want {
            self.splice(Splice::Remove(self.window.len() - 1));
        }
    }

    /// Brings a window that lost a row back to its length.
    fn refill(&mut self) {
        let range = self.query.window(self.sorted.len());
        if self.window.len() < range.len() {
            let id = self.sorted[range.start + self.window.len()].id.clone();
            self.splice(Splice::Insert(self.window.len(), id));
        }
    }

    fn splice(&mut self, splice: Splice) {
        splice.apply(&mut self.window, |id| id.clone());
        if !self.reset {
            self.splices.push(splice);
        }
    }
}

impl Splice {
    /// Applies the splice to a window of rows, `row` making the row of an
    /// id that comes in.
    pub fn apply<R>(&self, rows: &mut Vec<R>, row: impl FnOnce(&Arc<str>) -> R) {
        match self {
            Splice::Remove(i) => {
                if *i < rows.len() {
                    rows.remove(*i);
                }
            }
            Splice::Insert(i, id) => rows.insert((*i).min(rows.len()), row(id)),
            Splice::Replace(i, id) => {
                if let Some(slot) = rows.get_mut(*i) {
                    *slot = row(id);
                }
            }
        }
    }
}

/// A query run from scratch over `records`: the ids of its window, in
/// order. What `list()` gives, and what a live query must always equal.
pub fn run<'a>(
    query: &Query,
    records: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>,
) -> Vec<Arc<str>> {
    let mut live = LiveQuery::new(query.clone());
    live.load(records);
    live.window
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
