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
use tokio::io::AsyncReadExt;

use super::objects::{ObjectError, Objects, entries, written_ms};
use crate::ids::{digest_name, hex};

/// How long a broken-off upload is kept to be resumed.
pub const PARTIAL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A user's partial uploads on a node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Others {
    /// How many.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
}

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

    /// The user's other partial uploads on this node, but those being
    /// written (keys in `writing`, counted as arriving): their bytes count
    /// against the quota as stored files do.
    pub async fn others(&self, writing: HashSet<String>) -> Result<Others, ObjectError> {
        let (mine, this) = (self.mine.clone(), self.path.clone());
        let others = tokio::task::spawn_blocking(move || -> Result<Others, std::io::Error> {
            let mut others = Others::default();
            for e in entries(&mine)? {
                let path = e.path();
                if path == this || writing.contains(path.to_string_lossy().as_ref()) {
                    continue;
                }
                // Gone since listed (finished, expired): not held.
                match e.metadata() {
                    Ok(m) if m.is_file() => {
                        others.count += 1;
                        others.bytes = others.bytes.saturating_add(m.len());
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(others)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(others)
    }

    /// Forgets what arrived, now (see [`super::uploads::Uploads::when_idle`]).
    pub fn discard_now(&self) {
        remove(&self.path);
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
    ///
    /// The bytes are written by a task of their own, which holds `hold`
    /// (the upload's slot) until its last write is on disk and gives it
    /// back: however this call ends, even dropped mid-way, no write of it
    /// lands after the slot is free, so a resume never races a write of
    /// the upload before it.
    pub async fn stage<H: Send + 'static>(
        &self,
        partial: &Partial,
        offset: u64,
        mut body: impl Stream<Item = Result<Bytes, axum::Error>> + Unpin,
        total: u64,
        hold: H,
    ) -> Result<(Staged, H), ObjectError> {
        if let Some(dir) = partial.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut hasher = Sha256::new();
        let file = if offset == 0 {
            tokio::fs::File::create(&partial.path).await?
        } else {
            // What arrived before is hashed again from the disk.
            let mut file = match tokio::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&partial.path)
                .await
            {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ObjectError::Held(0));
                }
                opened => opened?,
            };
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
                return Err(ObjectError::Held(read));
            }
            file
        };
        // One blocking thread hashes and writes while the connection's
        // task reads the next bytes: the two run on two cores.
        let mut file = file.into_std().await;
        let (chunks, mut writes) = tokio::sync::mpsc::channel::<Bytes>(16);
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut written = Ok(());
            while let Some(chunk) = writes.blocking_recv() {
                hasher.update(&chunk);
                written = file.write_all(&chunk);
                if written.is_err() {
                    break;
                }
            }
            // Flushed either way: what is held is what a resume hashes.
            let flushed = file.sync_all();
            (written.and(flushed), hasher, hold)
        });
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
                if chunks.send(chunk).await.is_err() {
                    // The writer stopped on an error, which it returns.
                    break;
                }
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let (written, hasher, hold) = writer
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        match (arrived, written) {
            (Ok(()), Ok(())) => {}
            // Not the bytes announced, or not written: nothing to resume.
            (Err(e @ ObjectError::TooLong(_)), _) => {
                partial.discard().await;
                return Err(e);
            }
            (_, Err(e)) => {
                partial.discard().await;
                return Err(e.into());
            }
            // Broken off: what arrived stays, to be resumed (an empty
            // partial is worth nothing).
            (Err(e), Ok(())) => {
                if size == 0 {
                    partial.discard().await;
                }
                return Err(e);
            }
        }
        Ok((
            Staged {
                sha256: hex(&hasher.finalize()),
                size,
                path: Some(partial.path.clone()),
            },
            hold,
        ))
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
    /// since the epoch), of every node sharing the directory (a node
    /// started again under another id leaves its own), but those being
    /// written here (`writing`); how many.
    pub async fn expire_partials(
        &self,
        cutoff: u64,
        writing: HashSet<String>,
    ) -> Result<usize, ObjectError> {
        let nodes = self.staging().parent().map(Path::to_owned);
        let gone = tokio::task::spawn_blocking(move || -> Result<usize, std::io::Error> {
            let mut gone = 0;
            let Some(nodes) = nodes else { return Ok(0) };
            for node in entries(&nodes)? {
                for user in entries(&node.path().join("partial"))? {
                    for p in entries(&user.path())? {
                        let path = p.path();
                        if writing.contains(path.to_string_lossy().as_ref()) {
                            continue;
                        }
                        let old = match written_ms(&p) {
                            Ok(at) => at <= cutoff,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        };
                        if old {
                            match std::fs::remove_file(&path) {
                                Ok(()) => gone += 1,
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(e),
                            }
                        }
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
