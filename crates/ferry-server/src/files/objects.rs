//! Where file bytes are kept (docs/files.md §3): on the embedded default, a
//! directory under the data directory; for several nodes, an S3-compatible
//! bucket ([`super::remote`]), with uploads still staged on the node. An upload streams into a staging
//! file while it is hashed and counted, is flushed to disk, and only then
//! moves to its object's path; a crash leaves at most a staging file or an
//! object no row names, never a row naming missing or partial bytes.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::remote::RemoteObjects;
use super::staging::Staged;
use crate::ids::{digest_name, hex};

/// The bytes of files, kept in a directory.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
    /// This node's staging directory: nodes sharing the directory never
    /// touch each other's uploads in flight.
    staging: PathBuf,
    /// The bucket objects are kept in, instead of `root/objects`.
    remote: Option<RemoteObjects>,
}

/// Why bytes could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The body broke off or held more than announced.
    #[error("the upload did not arrive whole: {0}")]
    Body(String),
    /// A resume did not start where the partial upload ends (it holds
    /// these bytes).
    #[error("{0} bytes of this upload are held: send the rest from there")]
    Held(u64),
    /// The body held more than the file's size.
    #[error("more than the {0} bytes announced")]
    TooLong(u64),
    /// The body did not arrive within its deadline.
    #[error("the upload did not arrive in time")]
    TimedOut,
    /// The disk failed.
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// The object store failed or could not be reached.
    #[error("object storage failed: {0}")]
    Remote(String),
}

/// The keys three levels under `objects` whose files were last written at
/// or before `cutoff`.
fn old_keys(objects: &std::path::Path, cutoff: u64) -> Result<Vec<String>, std::io::Error> {
    let name = |e: &std::fs::DirEntry| e.file_name().to_str().map(str::to_owned);
    let mut keys = Vec::new();
    for prefix in entries(objects)? {
        let Some(p) = name(&prefix) else { continue };
        for hash in entries(&prefix.path())? {
            let Some(h) = name(&hash) else { continue };
            for object in entries(&hash.path())? {
                let Some(o) = name(&object) else { continue };
                // Gone since listed (deleted by an owner, another node):
                // nothing to collect.
                match written_ms(&object) {
                    Ok(at) if at <= cutoff && object.file_type()?.is_file() => {
                        keys.push(format!("{p}/{h}/{o}"));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(keys)
}

/// The entries of `dir`; none when it does not exist.
pub(super) fn entries(dir: &std::path::Path) -> Result<Vec<std::fs::DirEntry>, std::io::Error> {
    match std::fs::read_dir(dir) {
        Ok(list) => list.collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// When an entry's file was last written, in ms since the epoch.
pub(super) fn written_ms(entry: &std::fs::DirEntry) -> Result<u64, std::io::Error> {
    Ok(entry
        .metadata()?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
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
        Objects {
            root,
            staging,
            remote: None,
        }
    }

    /// The same, its objects kept in `remote` when set.
    pub fn with_remote(mut self, remote: Option<RemoteObjects>) -> Self {
        self.remote = remote;
        self
    }

    /// This node's staging directory.
    pub(super) fn staging(&self) -> &std::path::Path {
        &self.staging
    }

    /// The path of an object's key. Keys are made here, of hex digits and
    /// `/`, never of anything a client sent.
    fn path(&self, key: &str) -> PathBuf {
        self.root.join("objects").join(key)
    }

    /// Moves a staged upload to a new object of its own under `prefix`;
    /// the object's key.
    pub async fn keep(&self, mut staged: Staged, prefix: &str) -> Result<String, ObjectError> {
        let key = format!("{prefix}/{}/{}", staged.sha256, random_id()?);
        let path = self.path(&key);
        let Some(from) = staged.take_path() else {
            return Err(ObjectError::Body("the upload was already kept".into()));
        };
        if let Some(remote) = self.remote.clone() {
            // On a task of its own: a request cancelled meanwhile (the
            // client gone, the node stopping) still finishes or aborts the
            // store's upload.
            let (size, object) = (staged.size, key.clone());
            let sent = tokio::spawn(async move {
                let sent = remote.put_file(&object, &from, size).await;
                match &sent {
                    // Checked bytes stay for a resume that sends the last
                    // byte again, not all of them (the store was down).
                    Err(ObjectError::Remote(_)) if size > 0 => {
                        let kept = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&from)
                            .and_then(|f| f.set_len(size - 1));
                        if kept.is_err() {
                            let _ = tokio::fs::remove_file(&from).await;
                        }
                    }
                    _ => {
                        let _ = tokio::fs::remove_file(&from).await;
                    }
                }
                sent
            })
            .await
            .map_err(|e| ObjectError::Remote(e.to_string()))?;
            return sent.map(|()| key);
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        if let Err(e) = tokio::fs::rename(&from, &path).await {
            let _ = tokio::fs::remove_file(&from).await;
            return Err(e.into());
        }
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
        if let Some(remote) = &self.remote {
            return remote.read(key, start, len).await;
        }
        let mut file = tokio::fs::File::open(self.path(key)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Body::from_stream(stream))
    }

    /// The keys of the objects last written at or before `cutoff` (ms
    /// since the epoch): `{prefix}/{sha256}/{id}` under `objects/`.
    pub async fn written_before(&self, cutoff: u64) -> Result<Vec<String>, ObjectError> {
        if let Some(remote) = &self.remote {
            return remote.written_before(cutoff).await;
        }
        let objects = self.root.join("objects");
        let found = tokio::task::spawn_blocking(move || old_keys(&objects, cutoff))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(found)
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        if let Some(remote) = &self.remote {
            return remote.delete(key).await;
        }
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
