//! Where file bytes are kept (docs/files.md §3): on the embedded default, a
//! directory under the data directory. An upload streams into a staging
//! file while it is hashed and counted, is flushed to disk, and only then
//! moves to its object's path; a crash leaves at most a staging file or an
//! object no row names, never a row naming missing or partial bytes.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::ids::{digest_name, hex};

/// The bytes of files, kept in a directory.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
    /// This node's staging directory: nodes sharing the directory never
    /// touch each other's uploads in flight.
    staging: PathBuf,
}

/// An upload kept in staging: its hash and size, and where it is. Dropped
/// without [`Objects::keep`] (an error, a stopped node), its file goes.
#[derive(Debug)]
pub struct Staged {
    /// The SHA-256 of what arrived, as hex.
    pub sha256: String,
    /// How many bytes arrived.
    pub size: u64,
    path: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a staged upload");
        }
    }
}

/// Why bytes could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The body broke off or held more than announced.
    #[error("the upload did not arrive whole: {0}")]
    Body(String),
    /// The body did not arrive within its deadline.
    #[error("the upload did not arrive in time")]
    TimedOut,
    /// The disk failed.
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The keys three levels under `objects` whose files were last written at
/// or before `cutoff`.
fn old_keys(objects: &std::path::Path, cutoff: u64) -> Result<Vec<String>, std::io::Error> {
    fn entries(dir: &std::path::Path) -> Result<Vec<std::fs::DirEntry>, std::io::Error> {
        match std::fs::read_dir(dir) {
            Ok(list) => list.collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    let name = |e: &std::fs::DirEntry| e.file_name().to_str().map(str::to_owned);
    let mut keys = Vec::new();
    for prefix in entries(objects)? {
        let Some(p) = name(&prefix) else { continue };
        for hash in entries(&prefix.path())? {
            let Some(h) = name(&hash) else { continue };
            for object in entries(&hash.path())? {
                let Some(o) = name(&object) else { continue };
                let written = object
                    .metadata()?
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                if object.file_type()?.is_file() && written <= cutoff {
                    keys.push(format!("{p}/{h}/{o}"));
                }
            }
        }
    }
    Ok(keys)
}

fn random_id() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex(&bytes))
}

impl Objects {
    /// Files kept under `root` (created as needed), staged by `node`.
    pub fn new(root: impl Into<PathBuf>, node: &str) -> Self {
        let root = root.into();
        // A node id is a client id: letters, digits, `-`, `_`, `.`, `:`;
        // as a digest it is a plain file name whatever it holds.
        let staging = root.join("staging").join(digest_name(node, 8));
        Objects { root, staging }
    }

    /// Removes what a previous run of this node left in staging (uploads
    /// cut by a stop or a crash), at start, before any upload.
    pub async fn sweep_staging(&self) {
        match tokio::fs::remove_dir_all(&self.staging).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.staging.display(), error = %e, "cannot clear the staging directory");
            }
            _ => {}
        }
    }

    /// The path of an object's key. Keys are made here, of hex digits and
    /// `/`, never of anything a client sent.
    fn path(&self, key: &str) -> PathBuf {
        self.root.join("objects").join(key)
    }

    /// Streams `body` into a staging file, hashing and counting it; more
    /// than `most` bytes is an error (the rest is never read).
    pub async fn stage(
        &self,
        mut body: impl Stream<Item = Result<Bytes, axum::Error>> + Unpin,
        most: u64,
    ) -> Result<Staged, ObjectError> {
        tokio::fs::create_dir_all(&self.staging).await?;
        let path = self.staging.join(random_id()?);
        // From here, however this ends (an error, the task dropped by a
        // stopping node), the staging file goes unless it is kept.
        let mut staged = Staged {
            sha256: String::new(),
            size: 0,
            path: Some(path.clone()),
        };
        let result = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let (mut hasher, mut size) = (Sha256::new(), 0u64);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    if crate::http::deadline::timed_out(&e) {
                        ObjectError::TimedOut
                    } else {
                        ObjectError::Body(e.to_string())
                    }
                })?;
                size += chunk.len() as u64;
                if size > most {
                    return Err(ObjectError::Body(format!(
                        "more than the {most} bytes announced"
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            Ok((hex(&hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = result?;
        staged.sha256 = sha256;
        staged.size = size;
        Ok(staged)
    }

    /// Moves a staged upload to a new object of its own under `prefix`;
    /// the object's key.
    pub async fn keep(&self, mut staged: Staged, prefix: &str) -> Result<String, ObjectError> {
        let key = format!("{prefix}/{}/{}", staged.sha256, random_id()?);
        let path = self.path(&key);
        let Some(from) = staged.path.clone() else {
            return Err(ObjectError::Body("the upload was already kept".into()));
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&from, &path).await?;
        staged.path = None;
        // The rename is durable once its directory is, and the directories
        // made for it once theirs are: up to `objects/`.
        let objects = self.root.join("objects");
        let mut dir = path.parent();
        while let Some(d) = dir {
            tokio::fs::File::open(d).await?.sync_all().await?;
            if d == objects {
                break;
            }
            dir = d.parent();
        }
        Ok(key)
    }

    /// `len` bytes of the object from `start`, as a body.
    pub async fn read(&self, key: &str, start: u64, len: u64) -> Result<Body, ObjectError> {
        let mut file = tokio::fs::File::open(self.path(key)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Body::from_stream(stream))
    }

    /// The keys of the objects last written at or before `cutoff` (ms
    /// since the epoch): `{prefix}/{sha256}/{id}` under `objects/`.
    pub async fn written_before(&self, cutoff: u64) -> Result<Vec<String>, ObjectError> {
        let objects = self.root.join("objects");
        let found = tokio::task::spawn_blocking(move || old_keys(&objects, cutoff))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(found)
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
