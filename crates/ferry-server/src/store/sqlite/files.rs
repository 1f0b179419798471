//! The files each space holds, in SQLite (docs/files.md §3).

use std::collections::HashSet;

use ferry_core::{Sha256Hex, SpaceId, UserId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::StoreError;
use crate::store::files::{
    Added, COLUMNS, FileRows, Row, StoredFile, Verdict, from_row, referenced, verdict,
};
use crate::store::stored::{count, int};

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

/// Unmarks the file and reads it, if the space holds it.
fn touch(c: &Connection, space: &str, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
    c.prepare_cached(
        "UPDATE files SET unreferenced_since = NULL
         WHERE sha256 = ?2 AND sid = (SELECT sid FROM spaces WHERE id = ?1)",
    )?
    .execute(params![space, sha256])?;
    file(c, space, sha256)
}

/// One space's collector pass, in one write transaction (the writer is
/// the lock a push takes).
fn collect_space(
    c: &mut Connection,
    sid: i64,
    now: u64,
    cutoff: u64,
) -> Result<Vec<StoredFile>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Marked when the lock is held, not when the pass began.
    let now = now.max(crate::clock::wall_ms());
    let fields: Vec<String> = tx
        .prepare_cached(
            "SELECT fields FROM records
             WHERE sid = ?1 AND deleted IS NULL AND instr(fields, 'sha256') > 0",
        )?
        .query_map([sid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let refs = referenced(fields.iter().map(String::as_str))?;
    let files: Vec<Row> = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM files f WHERE f.sid = ?1"))?
        .query_map([sid], row)?
        .collect::<Result<_, _>>()?;
    let mut swept = Vec::new();
    for f in files {
        let f = from_row(f)?;
        let mark = match verdict(
            refs.contains(&f.sha256),
            f.unreferenced_since,
            f.created_at,
            cutoff,
        ) {
            Verdict::Keep => continue,
            Verdict::Unmark => None,
            Verdict::Mark => Some(int(now)),
            Verdict::Sweep => {
                tx.prepare_cached("DELETE FROM files WHERE sid = ?1 AND sha256 = ?2")?
                    .execute(params![sid, f.sha256.as_str()])?;
                swept.push(f);
                continue;
            }
        };
        tx.prepare_cached(
            "UPDATE files SET unreferenced_since = ?3 WHERE sid = ?1 AND sha256 = ?2",
        )?
        .execute(params![sid, f.sha256.as_str(), mark])?;
    }
    tx.commit()?;
    Ok(swept)
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
    if let Some(held) = touch(&tx, space, f.sha256.as_str())? {
        tx.commit()?;
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

    async fn touch_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        let (space, sha256) = (space.to_string(), sha256.to_string());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held = touch(&tx, &space, &sha256)?;
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn collect_files(&self, now: u64, cutoff: u64) -> Result<Vec<StoredFile>, StoreError> {
        let sids: Vec<i64> = self
            .read(|c| {
                Ok(c.prepare_cached("SELECT DISTINCT sid FROM files")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?)
            })
            .await?;
        let mut swept = Vec::new();
        // A space at a time, so pushes wait for one space's pass at most.
        for sid in sids {
            swept.extend(
                self.write(move |c| collect_space(c, sid, now, cutoff))
                    .await?,
            );
        }
        Ok(swept)
    }

    async fn file_objects(&self) -> Result<HashSet<String>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT object FROM files")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}
