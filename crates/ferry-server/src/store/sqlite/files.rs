//! The files each space holds, in SQLite (docs/files.md §3).

use ferry_core::{Sha256Hex, SpaceId, UserId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::StoreError;
use crate::store::files::{Added, FileRows, Row, StoredFile, from_row};
use crate::store::stored::{count, int};

const COLUMNS: &str =
    "f.sha256, f.size, f.media_type, f.name, f.object, f.uploaded_by, f.created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn file(c: &Connection, space: &str, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM files f JOIN spaces s ON s.sid = f.sid
         WHERE s.id = ?1 AND f.sha256 = ?2"
    ))?
    .query_row(params![space, sha256], row)
    .optional()?
    .map(from_row)
    .transpose()
}

fn usage(c: &Connection, user: &str) -> Result<u64, StoreError> {
    let used: i64 = c
        .prepare_cached("SELECT coalesce(sum(size), 0) FROM files WHERE uploaded_by = ?1")?
        .query_row([user], |r| r.get(0))?;
    Ok(count(used))
}

fn add(c: &mut Connection, space: &str, f: &StoredFile, quota: u64) -> Result<Added, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let sid: i64 = tx
        .prepare_cached("SELECT sid FROM spaces WHERE id = ?1")?
        .query_row([space], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound("space"))?;
    if let Some(held) = file(&tx, space, f.sha256.as_str())? {
        return Ok(Added::Held(held));
    }
    let used = usage(&tx, f.uploaded_by.as_str())?;
    if used.saturating_add(f.size) > quota {
        return Ok(Added::OverQuota { used });
    }
    tx.prepare_cached(
        "INSERT INTO files (sid, sha256, size, media_type, name, object, uploaded_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        sid,
        f.sha256.as_str(),
        int(f.size),
        f.media_type,
        f.name,
        f.object,
        f.uploaded_by.as_str(),
        int(f.created_at)
    ])?;
    tx.commit()?;
    Ok(Added::New(f.clone()))
}

fn remove(c: &mut Connection, space: &str, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(held) = file(&tx, space, sha256)? else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM files WHERE sha256 = ?2 AND sid = (SELECT sid FROM spaces WHERE id = ?1)",
        params![space, sha256],
    )?;
    tx.commit()?;
    Ok(Some(held))
}

#[async_trait::async_trait]
impl FileRows for super::SqliteStore {
    async fn file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        let (space, sha256) = (space.to_string(), sha256.to_string());
        self.read(move |c| file(c, &space, &sha256)).await
    }

    async fn add_file(
        &self,
        space: &SpaceId,
        f: &StoredFile,
        quota: u64,
    ) -> Result<Added, StoreError> {
        let (space, f) = (space.to_string(), f.clone());
        self.write(move |c| add(c, &space, &f, quota)).await
    }

    async fn remove_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        let (space, sha256) = (space.to_string(), sha256.to_string());
        self.write(move |c| remove(c, &space, &sha256)).await
    }

    async fn file_usage(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.to_string();
        self.read(move |c| usage(c, &user)).await
    }
}
