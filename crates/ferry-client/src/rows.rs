//! The replica's rows as its code reads and writes them: a transaction
//! that takes the write lock at once, the `meta` values (the HLC among
//! them), and a record's state.

use ferry_core::{ClientId, Collection, Hlc, RecordId, RecordState, SpaceId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::Result;
use crate::replica::corrupt;

pub(crate) fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
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
