//! The files each space holds, in PostgreSQL (docs/files.md §3).

use std::collections::HashSet;

use ferry_core::{Sha256Hex, SpaceId, UserId};
use sqlx::{PgConnection, PgPool};

use crate::store::StoreError;
use crate::store::files::{
    Added, COLUMNS, FileRows, Row, StoredFile, Verdict, from_row, referenced, verdict,
};
use crate::store::stored::{count, int};

async fn file(
    c: &mut PgConnection,
    space: &str,
    sha256: &str,
) -> Result<Option<StoredFile>, StoreError> {
    sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM files f JOIN spaces s ON s.sid = f.sid
         WHERE s.id = $1 AND f.sha256 = $2"
    ))
    .bind(space)
    .bind(sha256)
    .fetch_optional(c)
    .await?
    .map(from_row)
    .transpose()
}

/// Unmarks the file and reads it, if the space holds it. A collector
/// deleting it at the same time goes first or finds it unmarked.
async fn touch(
    c: &mut PgConnection,
    space: &str,
    sha256: &str,
) -> Result<Option<StoredFile>, StoreError> {
    sqlx::query_as::<_, Row>(&format!(
        "UPDATE files f SET unreferenced_since = NULL FROM spaces s
         WHERE s.sid = f.sid AND s.id = $1 AND f.sha256 = $2
         RETURNING {COLUMNS}"
    ))
    .bind(space)
    .bind(sha256)
    .fetch_optional(c)
    .await?
    .map(from_row)
    .transpose()
}

/// One space's collector pass, in one transaction holding the space's row
/// lock, as a push does: no push adds a reference while it decides.
async fn collect_space(
    pool: &PgPool,
    sid: i64,
    now: u64,
    cutoff: u64,
) -> Result<Vec<StoredFile>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM spaces WHERE sid = $1 FOR UPDATE")
        .bind(sid)
        .execute(&mut *tx)
        .await?;
    // Marked when the lock is held, not when the pass began.
    let now = now.max(crate::clock::wall_ms());
    let fields: Vec<String> = sqlx::query_scalar(
        "SELECT fields FROM records
         WHERE sid = $1 AND deleted IS NULL AND strpos(fields, 'sha256') > 0",
    )
    .bind(sid)
    .fetch_all(&mut *tx)
    .await?;
    let refs = referenced(fields.iter().map(String::as_str))?;
    let files: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM files f WHERE f.sid = $1"))
            .bind(sid)
            .fetch_all(&mut *tx)
            .await?;
    let mut swept = Vec::new();
    for f in files {
        let f = from_row(f)?;
        let hash = f.sha256.as_str().to_owned();
        match verdict(
            refs.contains(&f.sha256),
            f.unreferenced_since,
            f.created_at,
            cutoff,
        ) {
            Verdict::Keep => {}
            Verdict::Unmark | Verdict::Mark => {
                let mark = (f.unreferenced_since.is_none()).then_some(int(now));
                sqlx::query(
                    "UPDATE files SET unreferenced_since = $3 WHERE sid = $1 AND sha256 = $2",
                )
                .bind(sid)
                .bind(&hash)
                .bind(mark)
                .execute(&mut *tx)
                .await?;
            }
            Verdict::Sweep => {
                // Unless an upload unmarked it since it was read.
                let gone = sqlx::query(
                    "DELETE FROM files WHERE sid = $1 AND sha256 = $2
                     AND unreferenced_since IS NOT NULL AND unreferenced_since <= $3",
                )
                .bind(sid)
                .bind(&hash)
                .bind(int(cutoff))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if gone == 1 {
                    swept.push(f);
                }
            }
        }
    }
    tx.commit().await?;
    Ok(swept)
}

async fn usage(c: &mut PgConnection, user: &str) -> Result<u64, StoreError> {
    let used: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(size), 0)::bigint FROM files WHERE uploaded_by = $1",
    )
    .bind(user)
    .fetch_one(c)
    .await?;
    Ok(count(used))
}

async fn add(pool: &PgPool, space: &str, f: &StoredFile, quota: u64) -> Result<Added, StoreError> {
    let mut tx = pool.begin().await?;
    // One uploader's additions in turn, so that the quota holds across
    // nodes.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(f.uploaded_by.as_str())
        .execute(&mut *tx)
        .await?;
    let sid: i64 = sqlx::query_scalar("SELECT sid FROM spaces WHERE id = $1")
        .bind(space)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("space"))?;
    if let Some(held) = touch(&mut tx, space, f.sha256.as_str()).await? {
        tx.commit().await?;
        return Ok(Added::Held(held));
    }
    let used = usage(&mut tx, f.uploaded_by.as_str()).await?;
    if used.saturating_add(f.size) > quota {
        return Ok(Added::OverQuota { used });
    }
    let added = sqlx::query(
        "INSERT INTO files (sid, sha256, size, media_type, name, object, uploaded_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sid, sha256) DO NOTHING",
    )
    .bind(sid)
    .bind(f.sha256.as_str())
    .bind(int(f.size))
    .bind(&f.media_type)
    .bind(&f.name)
    .bind(&f.object)
    .bind(f.uploaded_by.as_str())
    .bind(int(f.created_at))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    // Another uploader's copy landed first: that one is held.
    let outcome = if added {
        Added::New(f.clone())
    } else {
        match touch(&mut tx, space, f.sha256.as_str()).await? {
            Some(held) => Added::Held(held),
            None => return Err(StoreError::Internal("a file vanished while added".into())),
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn remove(
    pool: &PgPool,
    space: &str,
    sha256: &str,
) -> Result<Option<StoredFile>, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "DELETE FROM files f USING spaces s
         WHERE s.sid = f.sid AND s.id = $1 AND f.sha256 = $2
         RETURNING {COLUMNS}"
    ))
    .bind(space)
    .bind(sha256)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

#[async_trait::async_trait]
impl FileRows for super::PgStore {
    async fn file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        let mut c = self.pool.acquire().await?;
        file(&mut c, space.as_str(), sha256.as_str()).await
    }

    async fn add_file(
        &self,
        space: &SpaceId,
        f: &StoredFile,
        quota: u64,
    ) -> Result<Added, StoreError> {
        add(&self.pool, space.as_str(), f, quota).await
    }

    async fn remove_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        remove(&self.pool, space.as_str(), sha256.as_str()).await
    }

    async fn file_usage(&self, user: &UserId) -> Result<u64, StoreError> {
        let mut c = self.pool.acquire().await?;
        usage(&mut c, user.as_str()).await
    }

    async fn touch_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError> {
        let mut c = self.pool.acquire().await?;
        touch(&mut c, space.as_str(), sha256.as_str()).await
    }

    async fn collect_files(&self, now: u64, cutoff: u64) -> Result<Vec<StoredFile>, StoreError> {
        let sids: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT sid FROM files")
            .fetch_all(&self.pool)
            .await?;
        let mut swept = Vec::new();
        for sid in sids {
            match collect_space(&self.pool, sid, now, cutoff).await {
                Ok(gone) => swept.extend(gone),
                Err(e) => tracing::warn!(sid, error = %e, "collecting a space's files failed"),
            }
        }
        Ok(swept)
    }

    async fn file_objects(&self) -> Result<HashSet<String>, StoreError> {
        let objects: Vec<String> = sqlx::query_scalar("SELECT object FROM files")
            .fetch_all(&self.pool)
            .await?;
        Ok(objects.into_iter().collect())
    }
}
