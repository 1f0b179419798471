//! Files attached to records, on this device (docs/files.md §6).
//!
//! [`Replica::attach`] hashes the bytes, keeps them in the replica's file
//! cache (the directory `{replica}.files/`, one file per hash) pinned until
//! they are uploaded, and queues the upload beside the outbox; the app
//! writes the [`FileRef`] it returns into a record like any value, and the
//! record syncs at once. Each sync of a space then uploads its queued
//! files (`sync::files`), after the outbox, so other devices get the
//! record first (they show the file `missing`, then the file).
//! [`Replica::file`] reads a file from the cache, or downloads it, checks
//! its hash and keeps it, evicting the least recently used files past
//! [`crate::ReplicaConfig::max_file_cache_bytes`] (never those waiting to
//! be uploaded).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ferry_core::file::{media_type_ok, name_ok};
use ferry_core::{FileRef, Sha256Hex, SpaceId};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::replica::Replica;

/// Where a file stands on this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Attached here; its upload is queued.
    Local,
    /// Being uploaded: `sent` of `total` bytes are on the server.
    Uploading {
        /// Bytes the server holds.
        sent: u64,
        /// The file's size.
        total: u64,
    },
    /// Its upload was refused for good (a quota, the size limit, a
    /// viewer's write): the server's code and message. Attach it again
    /// once the cause is gone.
    Failed {
        /// The server's error code (`quota_exceeded`, `too_large`, ...).
        code: String,
        /// Its message.
        message: String,
    },
    /// The server holds it (uploaded from here, or downloaded).
    Synced,
    /// The server did not hold it when last asked (its author has not
    /// uploaded it yet, or an owner deleted it). Each sync of the space
    /// asks again, and keeps it once it arrives.
    Missing,
    /// Not on this device, not asked for yet.
    Remote,
}

/// A file's status changed on this replica ([`Replica::file_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// The space it belongs to.
    pub space: SpaceId,
    /// The file.
    pub sha256: Sha256Hex,
    /// Where it stands now.
    pub status: FileStatus,
}

/// Uploads in progress in this process: (space, hash) → (sent, total),
/// and the file events this process hears.
#[derive(Debug)]
pub(crate) struct Progress {
    uploads: Mutex<HashMap<(SpaceId, Sha256Hex), (u64, u64)>>,
    events: broadcast::Sender<FileEvent>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            uploads: Mutex::default(),
            events: broadcast::channel(1024).0,
        }
    }
}

impl Progress {
    /// An upload begins, from `sent` of `total` bytes.
    pub(crate) fn begin(&self, space: &SpaceId, sha256: &Sha256Hex, sent: u64, total: u64) {
        let mut map = self.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert((space.clone(), sha256.clone()), (sent, total));
        drop(map);
        self.emit(space, sha256, FileStatus::Uploading { sent, total });
    }

    /// Sets an upload's progress (`None`: it ended); each whole percent
    /// sent is told as an event. Progress of an upload that ended (its
    /// body still being read after the server answered) is dropped.
    pub(crate) fn set(&self, space: &SpaceId, sha256: &Sha256Hex, at: Option<(u64, u64)>) {
        let mut map = self.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (space.clone(), sha256.clone());
        let Some((sent, total)) = at else {
            map.remove(&key);
            return;
        };
        let percent = |n: u64| n.saturating_mul(100) / total.max(1);
        let Some(held) = map.get_mut(&key) else {
            return;
        };
        let before = std::mem::replace(held, (sent, total));
        if percent(before.0) != percent(sent) {
            drop(map);
            self.emit(space, sha256, FileStatus::Uploading { sent, total });
        }
    }

    /// Tells the listeners of [`Replica::file_events`].
    pub(crate) fn emit(&self, space: &SpaceId, sha256: &Sha256Hex, status: FileStatus) {
        // No listener is not an error.
        let _ = self.events.send(FileEvent {
            space: space.clone(),
            sha256: sha256.clone(),
            status,
        });
    }

    fn get(&self, space: &SpaceId, sha256: &Sha256Hex) -> Option<(u64, u64)> {
        let map = self.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(space.clone(), sha256.clone())).copied()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// Refuses a media type or name the server would refuse.
fn check_names(media_type: &str, name: Option<&str>) -> Result<()> {
    if !media_type_ok(media_type) {
        return Err(Error::Invalid(format!(
            "{media_type:?} is not a media type (type/subtype)"
        )));
    }
    if let Some(n) = name.filter(|n| !name_ok(n)) {
        return Err(Error::Invalid(format!(
            "{n:?} is not a file name: 1 to 255 characters, no control characters, / or \\"
        )));
    }
    Ok(())
}

impl Replica {
    /// Files' status changes from now on, in this process: attached
    /// (`Local`), upload progress (`Uploading`, each whole percent),
    /// uploaded or arrived after being missing (`Synced`), refused
    /// (`Failed`), not on the server (`Missing`), and back to `Local` when
    /// an upload must wait for a later sync. A download an app's own
    /// [`Replica::file`] call makes is not told (it has the answer). A
    /// receiver more than 1,024 events behind is told it lagged.
    pub fn file_events(&self) -> broadcast::Receiver<FileEvent> {
        self.inner_progress().events.subscribe()
    }

    /// The directory of the file cache.
    pub fn files_dir(&self) -> PathBuf {
        let mut dir = self.path().as_os_str().to_owned();
        dir.push(".files");
        PathBuf::from(dir)
    }

    /// Where the bytes of `sha256` are kept when cached.
    pub(crate) fn cached_path(&self, sha256: &Sha256Hex) -> PathBuf {
        self.files_dir().join(sha256.as_str())
    }

    /// Attaches `bytes` to `space`: keeps them here, queues their upload,
    /// and returns the reference to write into a record's field. Nothing
    /// is sent now; each sync of the space uploads what is queued (asking
    /// first: bytes the space holds already are not sent again).
    pub fn attach(
        &self,
        space: &SpaceId,
        bytes: &[u8],
        media_type: &str,
        name: Option<&str>,
    ) -> Result<FileRef> {
        check_names(media_type, name)?;
        let sha256 = Sha256Hex::from_digest(&Sha256::digest(bytes).into());
        let tmp = self.staging_path()?;
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("cannot keep the file's bytes", e));
        }
        self.pin(space, &tmp, sha256, bytes.len() as u64, media_type, name)
    }

    /// Attaches the file at `path`, as [`Replica::attach`] does its bytes,
    /// copying it into the cache while hashing it (a piece at a time: a
    /// large file is never held in memory). `name` defaults to the path's
    /// file name, when that is a valid one.
    pub fn attach_path(
        &self,
        space: &SpaceId,
        path: &Path,
        media_type: &str,
        name: Option<&str>,
    ) -> Result<FileRef> {
        let own = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| name_ok(n));
        let name = name.or(own);
        check_names(media_type, name)?;
        let tmp = self.staging_path()?;
        let copied = (|| {
            use std::io::{Read, Write};
            let mut from = std::fs::File::open(path)?;
            let mut to = std::fs::File::create(&tmp)?;
            let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 256 * 1024]);
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
                size += n as u64;
            }
            to.sync_all()?;
            Ok::<_, std::io::Error>((Sha256Hex::from_digest(&hasher.finalize().into()), size))
        })();
        match copied {
            Ok((sha256, size)) => self.pin(space, &tmp, sha256, size, media_type, name),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io(&format!("cannot attach {}", path.display()), e))
            }
        }
    }

    /// Removes what an attach or a download stopped midway left in the
    /// cache's directory (a killed process, a dropped download), an hour
    /// old or more (younger ones may be another process's, still at work).
    pub(crate) fn sweep_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(self.files_dir()) else {
            return;
        };
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let temporary = name.starts_with("attach-") || name.contains(".download-");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t <= hour_ago);
            if temporary && old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// A fresh temporary path in the cache's directory (evictions never
    /// touch it: they unlink files named by a hash).
    fn staging_path(&self) -> Result<PathBuf> {
        let dir = self.files_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot make the file cache", e))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| Error::Invalid(format!("random: {e}")))?;
        Ok(dir.join(format!("attach-{}", hex::encode(random))))
    }

    /// Moves the flushed bytes at `tmp` under their hash and queues their
    /// upload, holding the write lock, so that no eviction (of this process
    /// or another on the file) unlinks them between their move and their
    /// pin. Moved even when a file of that name is there (a cached
    /// download cut short by a power cut may hold other bytes).
    fn pin(
        &self,
        space: &SpaceId,
        tmp: &Path,
        sha256: Sha256Hex,
        size: u64,
        media_type: &str,
        name: Option<&str>,
    ) -> Result<FileRef> {
        let pinned = (|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            std::fs::rename(tmp, self.cached_path(&sha256))
                .and_then(|()| std::fs::File::open(self.files_dir())?.sync_all())
                .map_err(|e| io("cannot keep the file's bytes", e))?;
            tx.execute(
                "INSERT INTO files (sha256, size, pinned, used_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET pinned = 1, used_at = ?3",
                params![sha256.as_str(), size as i64, now_ms()],
            )?;
            tx.execute(
                "INSERT INTO uploads (space, sha256, size, media_type, name) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (space, sha256) DO UPDATE SET failed = NULL",
                params![space.as_str(), sha256.as_str(), size as i64, media_type, name],
            )?;
            tx.execute(
                "DELETE FROM missing WHERE space = ?1 AND sha256 = ?2",
                params![space.as_str(), sha256.as_str()],
            )?;
            tx.commit()?;
            Ok::<_, Error>(())
        })();
        if let Err(e) = pinned {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        self.inner_progress()
            .emit(space, &sha256, FileStatus::Local);
        Ok(FileRef {
            sha256,
            size,
            media_type: media_type.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    /// Where `file` of `space` stands on this device.
    pub fn file_status(&self, space: &SpaceId, file: &FileRef) -> Result<FileStatus> {
        let conn = self.conn();
        let queued: Option<Option<String>> = conn
            .query_row(
                "SELECT failed FROM uploads WHERE space = ?1 AND sha256 = ?2",
                params![space.as_str(), file.sha256.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        match queued {
            // Progress counts only while the upload is queued.
            Some(None) => {
                return Ok(match self.inner_progress().get(space, &file.sha256) {
                    Some((sent, total)) => FileStatus::Uploading { sent, total },
                    None => FileStatus::Local,
                });
            }
            Some(Some(failed)) => {
                let (code, message) = failed.split_once(' ').unwrap_or((&failed, ""));
                return Ok(FileStatus::Failed {
                    code: code.to_owned(),
                    message: message.to_owned(),
                });
            }
            None => {}
        }
        let missing: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM missing WHERE space = ?1 AND sha256 = ?2)",
            params![space.as_str(), file.sha256.as_str()],
            |r| r.get(0),
        )?;
        if missing {
            return Ok(FileStatus::Missing);
        }
        let cached: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM files WHERE sha256 = ?1)",
            [file.sha256.as_str()],
            |r| r.get(0),
        )?;
        Ok(if cached {
            FileStatus::Synced
        } else {
            FileStatus::Remote
        })
    }

    /// The cached bytes of `sha256`, if this device holds them (and marks
    /// them used now).
    pub fn cached_file(&self, sha256: &Sha256Hex) -> Result<Option<PathBuf>> {
        let size: Option<i64> = self
            .conn()
            .query_row(
                "UPDATE files SET used_at = ?2 WHERE sha256 = ?1 RETURNING size",
                params![sha256.as_str(), now_ms()],
                |r| r.get(0),
            )
            .optional()?;
        let path = self.cached_path(sha256);
        // Cut short (a power cut before a download was flushed): fetched
        // again.
        let whole = size.is_some_and(|size| {
            std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && i64::try_from(m.len()) == Ok(size))
        });
        Ok(whole.then_some(path))
    }

    /// Records bytes downloaded into the cache, then evicts the least
    /// recently used unpinned files past the cache's size.
    /// Keeps downloaded bytes in the cache's books; the spaces where the
    /// file was missing until now.
    pub(crate) fn cached(&self, sha256: &Sha256Hex, size: u64) -> Result<Vec<String>> {
        let most = self.max_file_cache_bytes();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO files (sha256, size, pinned, used_at) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT (sha256) DO UPDATE SET used_at = ?3",
            params![sha256.as_str(), size as i64, now_ms()],
        )?;
        let arrived: Vec<String> = tx
            .prepare("DELETE FROM missing WHERE sha256 = ?1 RETURNING space")?
            .query_map([sha256.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        // The bound is on downloads: files waiting to be uploaded neither
        // count nor go.
        let mut total: i64 = tx.query_row(
            "SELECT coalesce(sum(size), 0) FROM files WHERE pinned = 0",
            [],
            |r| r.get(0),
        )?;
        if u64::try_from(total).unwrap_or(0) > most {
            let lru: Vec<(String, i64)> = tx
                .prepare(
                    "SELECT sha256, size FROM files WHERE pinned = 0 AND sha256 != ?1
                     ORDER BY used_at, sha256",
                )?
                .query_map([sha256.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (hash, size) in lru {
                if u64::try_from(total).unwrap_or(0) <= most {
                    break;
                }
                // Unlinked under the write lock, before the row goes: an
                // attach of the same bytes waits for it and writes them
                // again.
                match std::fs::remove_file(self.files_dir().join(&hash)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(file = hash, error = %e, "cannot evict a cached file");
                        continue;
                    }
                    _ => {}
                }
                tx.execute("DELETE FROM files WHERE sha256 = ?1", [&hash])?;
                total -= size;
            }
        }
        tx.commit()?;
        Ok(arrived)
    }

    /// Removes the file cache (a sign-out that wipes).
    pub(crate) fn wipe_files(&self) -> Result<()> {
        match std::fs::remove_dir_all(self.files_dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("cannot remove the file cache", e))
            }
            _ => Ok(()),
        }
    }
}
