//! The conflicts inbox as a sync fills it, with the rules of
//! [`ferry_core::conflict`]: a report already settled by this replica's own
//! later write is dropped, a report about a field or a deleted record the
//! inbox already holds is folded into that entry (so a report delivered
//! twice, or the same loss told two ways, is one entry), and a record found
//! deleted gathers everything this replica lost of it, its pending changes
//! included, into one `record_deleted` entry that can be restored.

use ferry_core::conflict::{deleted_under, fold, settled_locally};
use ferry_core::{Change, ClientId, Collection, Conflict, Hlc, RecordId, RecordState, SpaceId};
use rusqlite::{Transaction, params};

use crate::error::Result;
use crate::replica::{corrupt, read_state};

/// The inbox entries about one record: `(n, conflict)`.
fn held(
    tx: &Transaction<'_>,
    space: &SpaceId,
    collection: &Collection,
    id: &RecordId,
) -> Result<Vec<(i64, Conflict)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT n, conflict FROM conflicts WHERE space = ?1 AND collection = ?2 AND id = ?3
         ORDER BY n",
    )?;
    let rows = stmt.query_map([space.as_str(), collection.as_str(), id.as_str()], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|row| {
        let (n, text) = row?;
        Ok((
            n,
            serde_json::from_str(&text).map_err(|e| corrupt("conflict", e))?,
        ))
    })
    .collect()
}

fn insert(tx: &Transaction<'_>, space: &SpaceId, c: &Conflict, now_ms: u64) -> Result<()> {
    let text = serde_json::to_string(c).map_err(|e| corrupt("conflict", e))?;
    tx.prepare_cached(
        "INSERT INTO conflicts (space, collection, id, conflict, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        space.as_str(),
        c.collection.as_str(),
        c.id.as_str(),
        text,
        now_ms as i64
    ])?;
    Ok(())
}

/// Puts a conflict the server reported into the inbox, unless this
/// replica's record shows it settled; whether it did.
pub(super) fn take(
    tx: &Transaction<'_>,
    space: &SpaceId,
    conflict: &Conflict,
    me: &ClientId,
    now_ms: u64,
) -> Result<bool> {
    let local = read_state(tx, space, &conflict.collection, &conflict.id)?;
    if settled_locally(conflict, &local, me) {
        return Ok(false);
    }
    let entries = held(tx, space, &conflict.collection, &conflict.id)?;
    match entries
        .iter()
        .find_map(|(n, h)| fold(h, conflict).map(|kept| (n, kept)))
    {
        Some((n, kept)) => {
            let text = serde_json::to_string(&kept).map_err(|e| corrupt("conflict", e))?;
            tx.prepare_cached("UPDATE conflicts SET conflict = ?2, at = ?3 WHERE n = ?1")?
                .execute(params![n, text, now_ms as i64])?;
        }
        None => insert(tx, space, conflict, now_ms)?,
    }
    Ok(true)
}

/// A record this replica held as `local` was deleted on the server (at
/// `deleted`, when known): its pending changes are dropped (a replica
/// never sends a change to a record it knows deleted: the server may have
/// compacted the tombstone since, and the change would bring the record
/// back; a change already stamped into a batch may go too, since the
/// server applied that batch whole or not at all, and a batch sent again
/// under its id is answered from its record if applied), and what they
/// wrote, with the inbox's reports about the record, becomes one
/// `record_deleted` entry. Whether changes were lost here.
pub(super) fn deleted(
    tx: &Transaction<'_>,
    space: &SpaceId,
    (collection, id): (&Collection, &RecordId),
    deleted: Option<&Hlc>,
    local: &RecordState,
    me: &ClientId,
    now_ms: u64,
) -> Result<bool> {
    let dropped: Vec<Change> = {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM outbox WHERE space = ?1 AND collection = ?2 AND id = ?3
             RETURNING change",
        )?;
        let rows = stmt.query_map([space.as_str(), collection.as_str(), id.as_str()], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|text| serde_json::from_str(&text?).map_err(|e| corrupt("outbox change", e)))
            .collect::<Result<_>>()?
    };
    let entries = held(tx, space, collection, id)?;
    if dropped.is_empty() && entries.is_empty() {
        return Ok(false);
    }
    let reports: Vec<Conflict> = entries.iter().map(|(_, c)| c.clone()).collect();
    let kept = deleted_under(collection, id, &dropped, &reports, deleted, local, me);
    // The first entry about the record stays (its number is the app's
    // handle) holding the gathered report; the others fold into it.
    let mut numbers = entries.iter().map(|(n, _)| *n);
    let first = numbers.next();
    for n in numbers.chain(first.filter(|_| kept.is_none())) {
        tx.prepare_cached("DELETE FROM conflicts WHERE n = ?1")?
            .execute([n])?;
    }
    match (&kept, first) {
        (Some(kept), Some(n)) => {
            let text = serde_json::to_string(kept).map_err(|e| corrupt("conflict", e))?;
            tx.prepare_cached("UPDATE conflicts SET conflict = ?2, at = ?3 WHERE n = ?1")?
                .execute(params![n, text, now_ms as i64])?;
        }
        (Some(kept), None) => insert(tx, space, kept, now_ms)?,
        (None, _) => {}
    }
    // Only changes dropped here are news; the rest was in the inbox.
    Ok(kept.is_some() && !dropped.is_empty())
}
