//! Local reads: records, queries, what waits to be sent, and where each
//! space's sync stands.

use ferry_core::{Change, Collection, Fields, RecordId, SpaceId};
use rusqlite::OptionalExtension;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::query::Query;
use crate::replica::{LocalRecord, Replica, corrupt, read_state};

impl Replica {
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
