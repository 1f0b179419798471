//! The files each space holds, as stored (docs/files.md §3): a row per
//! (space, SHA-256) naming the object that keeps the bytes. Bytes are
//! written to storage first and the row after, so a row always names bytes
//! that are there; an object no row names is left by a crash between the
//! two and is collected.

use async_trait::async_trait;
use ferry_core::{Sha256Hex, SpaceId, UserId};

use super::StoreError;
use super::stored::{corrupt, count};

/// A file's row as both backends read it: hash, size, media type, name,
/// object, uploader, time.
pub(crate) type Row = (String, i64, String, Option<String>, String, String, i64);

/// A row read back; what fails was written wrong.
pub(crate) fn from_row(
    (sha256, size, media_type, name, object, uploaded_by, created_at): Row,
) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        sha256: Sha256Hex::new(&sha256).map_err(|e| corrupt("file hash", e))?,
        size: count(size),
        media_type,
        name,
        object,
        uploaded_by: UserId::new(uploaded_by).map_err(|e| corrupt("file uploader", e))?,
        created_at: count(created_at),
    })
}

/// A file a space holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The SHA-256 of its bytes.
    pub sha256: Sha256Hex,
    /// Its byte count.
    pub size: u64,
    /// The media type it was uploaded with.
    pub media_type: String,
    /// The name it was uploaded with.
    pub name: Option<String>,
    /// The storage key of its bytes.
    pub object: String,
    /// Who uploaded it (its bytes count against their quota).
    pub uploaded_by: UserId,
    /// When, in ms since the epoch.
    pub created_at: u64,
}

/// The files of spaces, beside the rest of the [`super::Store`].
#[async_trait]
pub trait FileRows: Send + Sync {
    /// The file `space` holds under `sha256`, if it does.
    async fn file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError>;

    /// Records that `space` holds `file`, unless it holds that hash
    /// already: the file it holds, and whether this call added it. `quota`
    /// bounds the bytes of files the uploader holds across spaces: past
    /// it, nothing is added and the answer is [`Added::OverQuota`].
    async fn add_file(
        &self,
        space: &SpaceId,
        file: &StoredFile,
        quota: u64,
    ) -> Result<Added, StoreError>;

    /// Forgets the file `space` holds under `sha256`: the row, for the
    /// caller to delete its object.
    async fn remove_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError>;

    /// The bytes of the files `user` uploaded that spaces still hold.
    async fn file_usage(&self, user: &UserId) -> Result<u64, StoreError>;
}

/// What [`FileRows::add_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// The space did not hold the file; now it does.
    New(StoredFile),
    /// The space held it already (this one, uploaded before).
    Held(StoredFile),
    /// The uploader holds `used` bytes; the file would take them past the
    /// quota. Nothing was added.
    OverQuota {
        /// The bytes the uploader's files take now.
        used: u64,
    },
}
