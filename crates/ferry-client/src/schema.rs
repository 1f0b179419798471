//! The replica's SQLite schema, versioned by `PRAGMA user_version`.
//!
//! - `meta`: the replica's client id and HLC (the HLC is read and written
//!   inside every local write's transaction, so it never goes backwards,
//!   across restarts and across processes sharing the file).
//! - `spaces`: per space, the cursor of the last pull stored, how far its
//!   conflict reports were taken (`conflict_cursor`), and where a
//!   full resync (after `410 cursor_expired`) stands: 0 none, 1 pulling the
//!   space from 0, 2 sending the batch stamped before it began.
//!   `complete` once a pull reached the server's head (the first sync is
//!   done; it stays set).
//! - `records`: each record's fields as `{name: {value, hlc}}` JSON and its
//!   tombstone, exactly as the server keeps them. `seen` marks records met
//!   by a full resync; those left unmarked at its end are gone. `remote`
//!   marks records the server has had.
//! - `outbox`: local changes not yet acknowledged, in order; `batch` is set
//!   when a change is first sent and kept until the server acknowledges
//!   it, so a retry sends the same batch id and nothing applies twice.
//! - `conflicts`: the server's conflict reports, until the app resolves
//!   them, one per field or deleted record (later reports fold in).
//! - `rejected`: local changes the server refused for good (a viewer's
//!   write), with its reason, until the app dismisses them.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE spaces (
    space       TEXT PRIMARY KEY,
    cursor      INTEGER NOT NULL DEFAULT 0,
    resync      INTEGER NOT NULL DEFAULT 0,
    synced_at   INTEGER
) WITHOUT ROWID;
CREATE TABLE records (
    space      TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    fields     TEXT NOT NULL,
    deleted    TEXT,
    seen       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (space, collection, id)
) WITHOUT ROWID;
CREATE TABLE outbox (
    n          INTEGER PRIMARY KEY AUTOINCREMENT,
    space      TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    change     TEXT NOT NULL,
    batch      TEXT
);
CREATE INDEX outbox_by_space ON outbox (space, n);
CREATE INDEX outbox_by_record ON outbox (space, collection, id);
CREATE TABLE conflicts (
    n        INTEGER PRIMARY KEY AUTOINCREMENT,
    space    TEXT NOT NULL,
    conflict TEXT NOT NULL,
    at       INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE rejected (
    n       INTEGER PRIMARY KEY AUTOINCREMENT,
    space   TEXT NOT NULL,
    change  TEXT NOT NULL,
    code    TEXT NOT NULL,
    message TEXT NOT NULL,
    at      INTEGER NOT NULL
);
"#,
    // `remote`: the server has had this record (it was pulled, or a batch
    // writing it was acknowledged). A resync tells a record deleted on the
    // server and compacted since (remote, and gone) from one only this
    // replica has made (not remote). A record with no pending change was
    // acknowledged or pulled; one with pending changes may never have left.
    r#"
ALTER TABLE records ADD COLUMN remote INTEGER NOT NULL DEFAULT 0;
UPDATE records SET remote = 1 WHERE NOT EXISTS (
    SELECT 1 FROM outbox o WHERE o.space = records.space
      AND o.collection = records.collection AND o.id = records.id);
"#,
    // `conflict_cursor`: how far the server's conflict reports have been
    // taken into the inbox; a resync moves `cursor` back to 0, not this.
    // Inbox entries name their record, so that a report about the same
    // field or deleted record folds into the entry already there.
    r#"
ALTER TABLE spaces ADD COLUMN conflict_cursor INTEGER NOT NULL DEFAULT 0;
UPDATE spaces SET conflict_cursor = cursor;
ALTER TABLE conflicts ADD COLUMN collection TEXT NOT NULL DEFAULT '';
ALTER TABLE conflicts ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE conflicts SET collection = coalesce(json_extract(conflict, '$.collection'), ''),
                     id = coalesce(json_extract(conflict, '$.id'), '')
WHERE json_valid(conflict);
CREATE INDEX conflicts_by_record ON conflicts (space, collection, id);
"#,
    // The schema's permissions, judged locally: each record's author (from
    // the server, or this replica's user for a record it made) and the
    // user's role in each space (from the server's last answer).
    r#"
ALTER TABLE records ADD COLUMN author TEXT;
ALTER TABLE spaces ADD COLUMN role TEXT;
"#,
    // Files (docs/files.md §6): the local cache of file bytes (in the
    // directory `{replica}.files/`, named by hash; `pinned` while an
    // upload needs them), the upload queue beside the outbox, and the
    // files the server did not hold when last asked.
    r#"
CREATE TABLE files (
    sha256  TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    pinned  INTEGER NOT NULL DEFAULT 0,
    used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE uploads (
    space      TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    name       TEXT,
    failed     TEXT,
    PRIMARY KEY (space, sha256)
) WITHOUT ROWID;
CREATE TABLE missing (
    space  TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (space, sha256)
) WITHOUT ROWID;
"#,
    // `complete`: a pull of the space has reached the server's head, so
    // its first sync is done (a live query's status). A space synced
    // before this step was: it had pulled at least once, and a sync pulls
    // to the head.
    r#"
ALTER TABLE spaces ADD COLUMN complete INTEGER NOT NULL DEFAULT 0;
UPDATE spaces SET complete = 1 WHERE synced_at IS NOT NULL;
"#,
];

/// Brings the schema up to date, one step per transaction. The version is
/// read under the write lock, so processes opening a new file together
/// apply each step once.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return tx.commit();
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_replica_of_before_conflict_cursors_keeps_its_inbox_and_cursors() {
        let mut conn = Connection::open_in_memory().unwrap();
        // The step that added conflict cursors.
        let before = 3;
        for step in &MIGRATIONS[..before] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64)
            .unwrap();
        conn.execute_batch(
            r#"INSERT INTO spaces (space, cursor) VALUES ('team', 42);
               INSERT INTO conflicts (space, conflict, at) VALUES ('team',
                 '{"collection":"todos","id":"t-1","field":null,"kind":"record_deleted","yours":null,"winner":null}', 0);"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let row: (i64, String, String) = conn
            .query_row(
                "SELECT s.conflict_cursor, c.collection, c.id FROM spaces s, conflicts c",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(row, (42, "todos".to_owned(), "t-1".to_owned()));
    }

    #[test]
    fn spaces_synced_before_completeness_was_kept_count_as_complete() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.len() - 1;
        for step in &MIGRATIONS[..before] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO spaces (space, cursor, synced_at) VALUES ('synced', 7, 1700000000000);
             INSERT INTO spaces (space, cursor) VALUES ('never', 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let complete: Vec<(String, bool)> = conn
            .prepare("SELECT space, complete FROM spaces ORDER BY space")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            complete,
            [("never".to_owned(), false), ("synced".to_owned(), true)]
        );
    }
}
