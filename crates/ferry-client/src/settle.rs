//! The conflicts inbox as the app reads and settles it: list the entries,
//! keep one side or write another value, or restore what a delete took as
//! a new record. (How a sync fills the inbox is `sync::inbox`.)

use ferry_core::local::LocalWrite;
use ferry_core::{Conflict, ConflictKind, RecordId, RecordState, SpaceId};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::replica::{Replica, corrupt, random_hex};

/// A stored conflict, waiting for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConflict {
    /// Its number in the inbox.
    pub n: i64,
    /// The space of the record.
    pub space: SpaceId,
    /// What the server reported.
    pub conflict: Conflict,
}

/// How the app settles a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Write this replica's value again, now: it wins with a fresh HLC.
    KeepMine,
    /// Keep what the server holds.
    TakeTheirs,
    /// Write this value instead (a merge made by the app or the person).
    Value(Value),
}

impl Replica {
    /// The conflicts the server reported, oldest first.
    pub fn conflicts(&self) -> Result<Vec<StoredConflict>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT n, space, conflict FROM conflicts ORDER BY n")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (n, space, conflict) = row?;
            Ok(StoredConflict {
                n,
                space: SpaceId::new(space).map_err(|e| corrupt("space id", e))?,
                conflict: serde_json::from_str(&conflict).map_err(|e| corrupt("conflict", e))?,
            })
        })
        .collect()
    }

    /// Settles conflict `n`: keeping this replica's value (written again
    /// with a fresh HLC, so it wins), taking the server's (nothing to
    /// write), or writing another value.
    pub fn resolve(&self, n: i64, resolution: Resolution) -> Result<()> {
        let stored = self.conflict(n)?;
        let c = &stored.conflict;
        let value = match (&resolution, c.kind, &c.yours) {
            (Resolution::TakeTheirs, _, _) => None,
            (_, ConflictKind::RecordDeleted, _) => {
                return Err(Error::Invalid(format!(
                    "{}/{} was deleted; deletes are final: restore what you wrote as a new \
                     record (restore), or take the delete",
                    c.collection, c.id
                )));
            }
            (Resolution::KeepMine, _, Some(yours)) => Some(yours.value.clone()),
            (Resolution::Value(v), _, _) => Some(v.clone()),
            (Resolution::KeepMine, _, None) => None,
        };
        match (value, &c.field) {
            (Some(value), Some(field)) => {
                let mut fields = Map::new();
                fields.insert(field.as_str().to_owned(), value);
                let write = LocalWrite::patch(Value::Object(fields))
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                // The write and the settled conflict in one transaction.
                self.write_with(&stored.space, &c.collection, &c.id, write, |tx, _| {
                    tx.execute("DELETE FROM conflicts WHERE n = ?1", [n])?;
                    Ok(())
                })?;
            }
            _ => {
                self.conn()
                    .execute("DELETE FROM conflicts WHERE n = ?1", [n])?;
            }
        }
        Ok(())
    }

    /// Inbox entry `n`.
    fn conflict(&self, n: i64) -> Result<StoredConflict> {
        self.conflicts()?
            .into_iter()
            .find(|c| c.n == n)
            .ok_or_else(|| Error::Invalid(format!("no conflict {n}")))
    }

    /// Settles `record_deleted` conflict `n` by writing what this replica
    /// lost to the delete (its values of every field it wrote) as a new
    /// record of the same collection: `id`, or a fresh id made from the
    /// deleted one. Returns the new record's id. (A delete is final: the
    /// deleted id stays deleted everywhere.)
    pub fn restore(&self, n: i64, id: Option<&RecordId>) -> Result<RecordId> {
        let stored = self.conflict(n)?;
        let c = &stored.conflict;
        if c.kind != ConflictKind::RecordDeleted {
            return Err(Error::Invalid(format!(
                "conflict {n} is about one field of a live record; resolve it instead"
            )));
        }
        let values = ferry_core::conflict::restorable(c);
        if values.is_empty() {
            return Err(Error::Invalid(format!(
                "conflict {n} holds no values to restore (reported by a server before \
                 protocol v1.2); take the delete"
            )));
        }
        let id = match id {
            Some(id) => id.clone(),
            None => {
                let stem: String = c.id.as_str().chars().take(200).collect();
                RecordId::new(format!("{stem}.{}", random_hex(6)?))
                    .map_err(|e| corrupt("record id", e))?
            }
        };
        let write =
            LocalWrite::put(Value::Object(values)).map_err(|e| Error::Invalid(e.to_string()))?;
        // The new record and the settled conflict in one transaction: a
        // crash leaves both or neither.
        self.write_with(&stored.space, &c.collection, &id, write, |tx, held| {
            if *held != RecordState::default() {
                return Err(Error::Invalid(format!(
                    "{}/{id} exists; restore into a new id",
                    c.collection
                )));
            }
            tx.execute("DELETE FROM conflicts WHERE n = ?1", [n])?;
            Ok(())
        })?;
        Ok(id)
    }
}
