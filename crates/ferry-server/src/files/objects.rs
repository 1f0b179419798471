//! Where file bytes are kept (docs/files.md §3): on the embedded default, a
//! directory under the data directory. An upload streams into a staging
//! file while it is hashed and counted, is flushed to disk, and only then
//! moves to its object's path; a crash leaves at most a staging file or an
//! object no row names, never a row naming missing or partial bytes.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::ids::hex;

/// The bytes of files, kept in a directory.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
}

/// An upload kept in staging: its hash and size, and where it is.
#[derive(Debug)]
pub struct Staged {
    /// The SHA-256 of what arrived, as hex.
    pub sha256: String,
    /// How many bytes arrived.
    pub size: u64,
    path: PathBuf,
}

/// Why bytes could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The body broke off, timed out, or held more than announced.
    #[error("the upload did not arrive whole: {0}")]
    Body(String),
    /// The disk failed.
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
}

fn random_id() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex(&bytes))
}

impl Objects {
    /// Files kept under `root` (created as needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Objects { root: root.into() }
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
        let dir = self.root.join("staging");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(random_id()?);
        let result = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let (mut hasher, mut size) = (Sha256::new(), 0u64);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ObjectError::Body(e.to_string()))?;
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
        match result {
            Ok((sha256, size)) => Ok(Staged { sha256, size, path }),
            Err(e) => {
                discard(&path).await;
                Err(e)
            }
        }
    }

    /// Moves a staged upload to a new object of its own under `prefix`;
    /// the object's key.
    pub async fn keep(&self, staged: Staged, prefix: &str) -> Result<String, ObjectError> {
        let key = format!("{prefix}/{}/{}", staged.sha256, random_id()?);
        let path = self.path(&key);
        let moved = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&staged.path, &path).await?;
            // The rename is durable once its directory is.
            if let Some(dir) = path.parent() {
                tokio::fs::File::open(dir).await?.sync_all().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = moved {
            discard(&staged.path).await;
            return Err(e.into());
        }
        Ok(key)
    }

    /// Drops a staged upload.
    pub async fn discard(&self, staged: Staged) {
        discard(&staged.path).await;
    }

    /// `len` bytes of the object from `start`, as a body.
    pub async fn read(&self, key: &str, start: u64, len: u64) -> Result<Body, ObjectError> {
        let mut file = tokio::fs::File::open(self.path(key)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Body::from_stream(stream))
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

async fn discard(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a staged upload");
    }
}
