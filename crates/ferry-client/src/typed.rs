//! The app's schema of its collections in the replica (docs/schema.md):
//! fetched from the server when a sync answer names a newer version, kept
//! in the replica file (so it holds offline and across restarts), and the
//! judge of every local write before it is stored or queued, with the
//! same ferry-core code the server runs.

use std::sync::Arc;

use ferry_core::schema::{Actor, Schema};
use ferry_core::{Change, RecordState, Role, SpaceId, UserId};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::replica::{Replica, corrupt, meta, set_meta};

/// The schema as the replica holds it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSchema {
    /// Its version on the server; 0 for none.
    pub version: u64,
    /// The schema, when there is one.
    pub schema: Option<Schema>,
}

/// Reads the held schema from the replica's meta table.
pub(crate) fn load(c: &Connection) -> Result<HeldSchema> {
    match meta(c, "app_schema")? {
        None => Ok(HeldSchema::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("the stored app schema: {e}"))),
    }
}

impl Replica {
    /// The app's schema this replica checks its writes against, as last
    /// fetched from the server.
    pub fn app_schema(&self) -> HeldSchema {
        HeldSchema::clone(&self.held_schema())
    }

    /// Keeps `held` (fetched from the server, whose word it is: a lower
    /// version than before means its database was restored) in the
    /// replica, and judges writes by it from now on.
    pub fn hold_app_schema(&self, held: HeldSchema) -> Result<()> {
        let text = serde_json::to_string(&held).map_err(|e| Error::Invalid(e.to_string()))?;
        {
            let conn = self.conn();
            // The indexes first: a held schema's indexes always exist.
            if let Some(schema) = &held.schema {
                create_indexes(&conn, schema)?;
            }
            set_meta(&conn, "app_schema", &text)?;
        }
        self.set_held_schema(Arc::new(held));
        Ok(())
    }

    /// Judges a local write (`change`, turning `before` into `after`)
    /// by the held schema.
    pub(crate) fn judge(
        &self,
        before: &RecordState,
        change: &Change,
        after: &RecordState,
    ) -> Result<()> {
        let held = self.held_schema();
        match &held.schema {
            Some(schema) => schema
                .check(before, change, after)
                .map_err(|violation| Error::Schema(Box::new(violation))),
            None => Ok(()),
        }
    }

    /// Judges a local write by the held schema's permissions, as the
    /// server will: with the user's role in `space` from the server's last
    /// answer (owner of their personal space), and the record's author. A
    /// space whose role this replica has not learned yet is left to the
    /// server (a refusal then comes back as a rejected change).
    pub(crate) fn permit(
        &self,
        tx: &Connection,
        space: &SpaceId,
        before: &RecordState,
        change: &Change,
    ) -> Result<()> {
        let held = self.held_schema();
        let Some(schema) = &held.schema else {
            return Ok(());
        };
        let Some(user) = meta(tx, "user_id")? else {
            return Ok(());
        };
        let user = UserId::new(user).map_err(|e| corrupt("user id", e))?;
        let role = if *space == user.personal_space() {
            Some(Role::Owner)
        } else {
            tx.prepare_cached("SELECT role FROM spaces WHERE space = ?1")?
                .query_row([space.as_str()], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten()
                .and_then(|r| Role::parse(&r))
        };
        let Some(role) = role else {
            return Ok(());
        };
        let author: Option<String> = tx
            .prepare_cached(
                "SELECT author FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
            )?
            .query_row(
                [
                    space.as_str(),
                    change.collection().as_str(),
                    change.id().as_str(),
                ],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let author = author.and_then(|a| UserId::new(a).ok());
        // A record held before this replica kept authors (or pulled from
        // a server that sends none): whether its author is this user is
        // for the server to say.
        let exists = before.deleted.is_some() || !before.fields.is_empty();
        if exists && author.is_none() {
            return Ok(());
        }
        let actor = Actor {
            user,
            role,
            server_fields: false,
        };
        schema
            .permit(&actor, before, author.as_ref(), change)
            .map_err(|forbidden| Error::Forbidden(Box::new(forbidden)))
    }

    /// Whether writes to `collection` need the state before them kept to
    /// be judged.
    pub(crate) fn judges(&self, collection: &ferry_core::Collection) -> bool {
        self.held_schema()
            .schema
            .as_ref()
            .is_some_and(|s| s.judges(collection))
    }
}

/// An SQLite expression index for each field the schema marks `index =
/// true`: queries with `=` on it read their candidates through it
/// (`query::candidates` names it and writes the same expression). Names are checked
/// names (letters, digits, `_`, `-`, never `:` or a quote): safe inside quotes
/// and a JSON path, and `ix:{collection}:{field}` names one pair only.
fn create_indexes(conn: &Connection, schema: &Schema) -> Result<()> {
    for (collection, declared) in &schema.collections {
        for (field, f) in &declared.fields {
            if f.index {
                conn.execute(
                    &format!(
                        "CREATE INDEX IF NOT EXISTS \"ix:{collection}:{field}\" ON records
                         (space, collection, json_extract(fields, '$.{field}.value'))
                         WHERE deleted IS NULL"
                    ),
                    [],
                )?;
            }
        }
    }
    Ok(())
}

/// Reads a record's fields into the app's own type.
/// Fields that are null (not set: a `put` writes null to the fields it
/// leaves out) are read as absent, so `Option` and `#[serde(default)]`
/// fields take them.
fn decode<T: serde::de::DeserializeOwned>(record: crate::replica::LocalRecord) -> Result<T> {
    let (collection, id) = (record.collection, record.id);
    let mut fields = record.fields;
    fields.retain(|_, value| !value.is_null());
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
        Error::Invalid(format!(
            "{collection}/{id} does not fit the type asked for: {e}"
        ))
    })
}

impl Replica {
    /// [`Replica::get`] into the app's own serde type (a struct per
    /// collection, with `#[serde(default)]` or `Option` for optional
    /// fields); a record that does not fit is an error naming it and the
    /// field.
    pub fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        space: &ferry_core::SpaceId,
        collection: &ferry_core::Collection,
        id: &ferry_core::RecordId,
    ) -> Result<Option<T>> {
        self.get(space, collection, id)?.map(decode).transpose()
    }

    /// [`Replica::list`] into the app's own serde type, with each record's
    /// id beside it.
    pub fn list_as<T: serde::de::DeserializeOwned>(
        &self,
        space: &ferry_core::SpaceId,
        collection: &ferry_core::Collection,
        query: &crate::query::Query,
    ) -> Result<Vec<(ferry_core::RecordId, T)>> {
        self.list(space, collection, query)?
            .into_iter()
            .map(|record| {
                let id = record.id.clone();
                decode(record).map(|value| (id, value))
            })
            .collect()
    }
}
