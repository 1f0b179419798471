//! Uploads being received (docs/files.md §2, "Resume"). Each upload of a
//! file by a user to a space streams into one staging file of this node,
//! its *partial upload*, while it is hashed and counted. Kept whole and
//! matching its hash, it becomes an object. Broken off (a lost connection,
//! a device asleep, a body deadline), what arrived stays, flushed, for
//! [`PARTIAL_LIFETIME`]: the client asks how much arrived (`HEAD`,
//! `Ferry-Upload-Offset`) and sends the rest. The hash covers the whole
//! file and is checked when the last byte arrives, so a resumed upload
//! corrupted anywhere is refused whole, never kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use ferry_core::{Sha256Hex, UserId};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::objects::{ObjectError, Objects, entries, written_ms};
use crate::ids::{digest_name, hex};

/// How long a broken-off upload is kept to be resumed.
pub const PARTIAL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The staging file of one user's upload of one file to one space.
#[derive(Debug, Clone)]
pub struct Partial {
    path: PathBuf,
    /// The user's partial uploads on this node, all spaces.
    mine: PathBuf,
}

/// An upload received whole: its hash and size, and where it is. Dropped
/// without [`Objects::keep`] or [`Staged::resumable`] (a hash mismatch, a
/// stopped node), its file goes.
#[derive(Debug)]
pub struct Staged {
    /// The SHA-256 of all its bytes, as hex.
    pub sha256: String,
    /// How many bytes it holds.
    pub size: u64,
    path: Option<PathBuf>,
}

impl Staged {
    /// Its file, which it no longer deletes when dropped.
    pub(super) fn take_path(&mut self) -> Option<PathBuf> {
        self.path.take()
    }

    /// Keeps what arrived as a partial upload, to be resumed.
    pub fn resumable(mut self) {
        self.path = None;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove(&path);
        }
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a staged upload");
    }
}

impl Partial {
    /// How many bytes of it arrived; `None` when none is held.
    pub async fn offset(&self) -> Option<u64> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// The bytes the user's other partial uploads hold on this node, but
    /// those being written (keys in `writing`, counted as arriving): they
    /// count against the quota as stored files do.
    pub async fn others_bytes(&self, writing: HashSet<String>) -> Result<u64, ObjectError> {
        let (mine, this) = (self.mine.clone(), self.path.clone());
        let total = tokio::task::spawn_blocking(move || -> Result<u64, std::io::Error> {
            let mut total = 0u64;
            for e in entries(&mine)? {
                let path = e.path();
                if path != this
                    && !writing.contains(path.to_string_lossy().as_ref())
                    && e.file_type()?.is_file()
                {
                    total = total.saturating_add(e.metadata()?.len());
                }
            }
            Ok(total)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(total)
    }

    /// Forgets what arrived.
    pub async fn discard(&self) {
        remove(&self.path);
    }

    /// A key naming this upload among those in flight on the node.
    pub fn key(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Objects {
    /// The partial upload of `sha256` by `user` to the space whose objects
    /// go under `space_prefix`.
    pub fn partial(&self, user: &UserId, space_prefix: &str, sha256: &Sha256Hex) -> Partial {
        let mine = self
            .staging()
            .join("partial")
            .join(digest_name(user.as_str(), 12));
        Partial {
            path: mine.join(format!("{space_prefix}-{sha256}")),
            mine,
        }
    }

    /// Streams `body` into `partial` from byte `offset` (what it holds
    /// must be exactly that long; `0` starts again), hashing the whole
    /// file and counting it; more than `total` bytes is an error (the rest
    /// is never read, what arrived is dropped). A body that breaks off
    /// leaves what arrived in `partial`, flushed.
    pub async fn stage(
        &self,
        partial: &Partial,
        offset: u64,
        mut body: impl Stream<Item = Result<Bytes, axum::Error>> + Unpin,
        total: u64,
    ) -> Result<Staged, ObjectError> {
        if let Some(dir) = partial.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut hasher = Sha256::new();
        let mut file = if offset == 0 {
            tokio::fs::File::create(&partial.path).await?
        } else {
            // What arrived before is hashed again from the disk.
            let mut file = tokio::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&partial.path)
                .await?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut read = 0u64;
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                read += n as u64;
            }
            if read != offset {
                return Err(ObjectError::Body(format!(
                    "{read} bytes of this upload are held, not {offset}"
                )));
            }
            file
        };
        let mut size = offset;
        let arrived = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    if crate::http::deadline::timed_out(&e) {
                        ObjectError::TimedOut
                    } else {
                        ObjectError::Body(e.to_string())
                    }
                })?;
                size += chunk.len() as u64;
                if size > total {
                    return Err(ObjectError::TooLong(total));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            Ok(())
        }
        .await;
        // Flushed either way: what is held is what a resume hashes.
        let flushed = file.sync_all().await;
        match arrived {
            Ok(()) => flushed?,
            // Not the bytes announced, or not written: nothing to resume.
            Err(e @ (ObjectError::TooLong(_) | ObjectError::Io(_))) => {
                partial.discard().await;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok(Staged {
            sha256: hex(&hasher.finalize()),
            size,
            path: Some(partial.path.clone()),
        })
    }

    /// Removes what a previous run of this node left in staging, at start,
    /// before any upload: everything but the partial uploads, which are
    /// kept to be resumed.
    pub async fn sweep_staging(&self) {
        let staging = self.staging().to_owned();
        let swept = tokio::task::spawn_blocking(move || -> Result<(), std::io::Error> {
            for e in entries(&staging)? {
                if e.file_name() == "partial" {
                    continue;
                }
                if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                } else {
                    std::fs::remove_file(e.path())?;
                }
            }
            Ok(())
        })
        .await;
        if !matches!(swept, Ok(Ok(()))) {
            tracing::warn!(dir = %self.staging().display(), "cannot clear the staging directory");
        }
    }

    /// Deletes the partial uploads last written at or before `cutoff` (ms
    /// since the epoch); how many.
    pub async fn expire_partials(&self, cutoff: u64) -> Result<usize, ObjectError> {
        let partials = self.staging().join("partial");
        let gone = tokio::task::spawn_blocking(move || -> Result<usize, std::io::Error> {
            let mut gone = 0;
            for user in entries(&partials)? {
                for p in entries(&user.path())? {
                    if p.file_type()?.is_file() && written_ms(&p)? <= cutoff {
                        std::fs::remove_file(p.path())?;
                        gone += 1;
                    }
                }
            }
            Ok(gone)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(gone)
    }
}
