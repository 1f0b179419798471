//! The files each space holds, in PostgreSQL (docs/files.md §3).

use ferry_core::{Sha256Hex, SpaceId, UserId};
use sqlx::{PgConnection, PgPool};

use crate::store::StoreError;
use crate::store::files::{Added, FileRows, Row, StoredFile, from_row};
use crate::store::stored::{count, int};

const SELECT: &str =
    "SELECT f.sha256, f.size, f.media_type, f.name, f.object, f.uploaded_by, f.created_at
     FROM files f JOIN spaces s ON s.sid = f.sid WHERE s.id = $1 AND f.sha256 = $2";

async fn file(
    c: &mut PgConnection,
    space: &str,
    sha256: &str,
) -> Result<Option<StoredFile>, StoreError> {
    sqlx::query_as::<_, Row>(SELECT)
        .bind(space)
        .bind(sha256)
        .fetch_optional(c)
        .await?
        .map(from_row)
        .transpose()
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
    if let Some(held) = file(&mut tx, space, f.sha256.as_str()).await? {
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
        match file(&mut tx, space, f.sha256.as_str()).await? {
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
    let row: Option<Row> = sqlx::query_as(
        "DELETE FROM files f USING spaces s
         WHERE s.sid = f.sid AND s.id = $1 AND f.sha256 = $2
         RETURNING f.sha256, f.size, f.media_type, f.name, f.object, f.uploaded_by, f.created_at",
    )
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
}
