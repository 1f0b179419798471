//! The files each space holds, as stored (docs/files.md §3): a row per
//! (space, SHA-256) naming the object that keeps the bytes. Bytes are
//! written to storage first and the row after, so a row always names bytes
//! that are there; an object no row names is left by a crash between the
//! two and is collected.

use std::collections::HashSet;

use async_trait::async_trait;
use ferry_core::{Sha256Hex, SpaceId, UserId};

use super::StoreError;
use super::stored::{corrupt, count};

/// The columns of a file's row, in [`Row`]'s order, for a `files f`.
pub(crate) const COLUMNS: &str = "f.sha256, f.size, f.media_type, f.name, f.object, \
     f.uploaded_by, f.created_at, f.unreferenced_since";

/// A file's row as both backends read it ([`COLUMNS`]).
pub(crate) type Row = (
    String,
    i64,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
);

/// A row read back; what fails was written wrong.
pub(crate) fn from_row(
    (sha256, size, media_type, name, object, uploaded_by, created_at, unreferenced_since): Row,
) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        sha256: Sha256Hex::new(&sha256).map_err(|e| corrupt("file hash", e))?,
        size: count(size),
        media_type,
        name,
        object,
        uploaded_by: UserId::new(uploaded_by).map_err(|e| corrupt("file uploader", e))?,
        created_at: count(created_at),
        unreferenced_since: unreferenced_since.map(count),
    })
}

/// The files the live records whose stored fields are `fields` may refer
/// to ([`ferry_core::file::referenced`]), each record read as the object
/// of its fields' values (so that a record whose own fields are a
/// reference, `{sha256, size, media_type}`, counts too). Fields that
/// cannot be read are an error: the collector deletes nothing it is
/// unsure of.
pub(crate) fn referenced<'a>(
    fields: impl IntoIterator<Item = &'a str>,
) -> Result<HashSet<Sha256Hex>, StoreError> {
    let mut found = HashSet::new();
    for text in fields {
        let stored: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| corrupt("record fields", e))?;
        let values: serde_json::Map<String, serde_json::Value> = stored
            .into_iter()
            .map(|(name, mut field)| (name, field["value"].take()))
            .collect();
        ferry_core::file::referenced(&serde_json::Value::Object(values), &mut found);
    }
    Ok(found)
}

/// What one collector pass decides for a file of a space
/// (docs/files.md §5), `now` and `cutoff` (now less the grace period) in
/// ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Referenced again: no longer marked.
    Unmark,
    /// Unreferenced since this pass.
    Mark,
    /// Unreferenced for the whole grace period, and older than it.
    Sweep,
    /// Nothing changes.
    Keep,
}

/// The [`Verdict`] for a file uploaded at `created_at`, marked since
/// `marked`, referenced or not.
pub(crate) fn verdict(
    referenced: bool,
    marked: Option<u64>,
    created_at: u64,
    cutoff: u64,
) -> Verdict {
    match (referenced, marked) {
        (true, Some(_)) => Verdict::Unmark,
        (true, None) => Verdict::Keep,
        (false, None) => Verdict::Mark,
        (false, Some(since)) if since <= cutoff && created_at <= cutoff => Verdict::Sweep,
        (false, Some(_)) => Verdict::Keep,
    }
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
    /// Since when no live record of the space has referred to it, as the
    /// collector last saw (ms since the epoch); `None` while one does, or
    /// since an upload asked for it again.
    pub unreferenced_since: Option<u64>,
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

    /// The file `space` holds under `sha256`, now no longer marked
    /// unreferenced: an upload that finds the file held relies on it, so
    /// the collector must give it a whole grace period again.
    async fn touch_file(
        &self,
        space: &SpaceId,
        sha256: &Sha256Hex,
    ) -> Result<Option<StoredFile>, StoreError>;

    /// One collector pass over every space holding files, each space in
    /// one transaction under the lock a push takes (docs/files.md §5):
    /// files a live record refers to are unmarked, others marked at the
    /// time the space's transaction holds the lock (`now` at the earliest),
    /// and those marked and uploaded at or before `cutoff` are forgotten.
    /// The rows forgotten, for the caller to delete their objects. A space
    /// whose pass fails is logged and left for the next pass; the others
    /// go on.
    async fn collect_files(&self, now: u64, cutoff: u64) -> Result<Vec<StoredFile>, StoreError>;

    /// The storage keys every file row names (the collector deletes old
    /// objects that none names).
    async fn file_objects(&self) -> Result<HashSet<String>, StoreError>;
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
