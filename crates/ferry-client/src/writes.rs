//! Local writes: each stamped with the replica's next HLC, merged into the
//! record with ferry-core and appended to the outbox in one transaction, so
//! a write is either both applied and queued, or neither.

use ferry_core::local::{LocalWrite, local_write};
use ferry_core::{Collection, RecordId, RecordState, SpaceId};
use rusqlite::{Transaction, params};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::replica::{
    Replica, Source, corrupt, immediate, read_state, set_meta, stored_hlc, write_state,
};

impl Replica {
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
}
