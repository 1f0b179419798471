//! Files over the wire (docs/files.md §6, protocol.md §12): the upload
//! queue's run after each sync of a space (ask by hash, send the bytes or
//! the rest of a broken-off upload, resume from what the server holds),
//! and downloads into the cache, checked against their hash.

use std::io::SeekFrom;

use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

use ferry_core::{FileRef, Sha256Hex, SpaceId};
use reqwest::{Method, StatusCode};
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::run::blocking;
use crate::FileStatus;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::replica::Replica;

/// A queued upload.
struct Queued {
    sha256: Sha256Hex,
    size: u64,
    media_type: String,
    name: Option<String>,
}

/// The name header's value: percent-encoded UTF-8.
fn encode_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path(remote: &Remote, space: &SpaceId, sha256: &Sha256Hex) -> String {
    format!("{}/v1/spaces/{space}/files/{sha256}", remote.base())
}

/// Whether a refusal will not change by trying again: the upload is
/// marked failed, with the server's reason, and not tried again. Anything
/// else (the network, a busy server, an upload of it still in flight) is
/// tried again at a later sync.
fn refused_for_good(e: &Error) -> bool {
    matches!(e.status(), Some(403 | 404 | 411 | 413 | 422))
        || e.code() == Some("quota_exceeded")
        || e.code() == Some("file_lost")
}

/// How long a transfer of `size` bytes may take: a request's time and a
/// second per 64 KiB (an average of 64 KiB/s), as the server allows.
fn transfer_timeout(size: u64) -> std::time::Duration {
    std::time::Duration::from_secs(30 + size / (64 * 1024))
}

/// Uploads the queued files of `space`; how many the server now holds.
pub(crate) async fn upload_queued(
    replica: &Replica,
    remote: &Remote,
    space: &SpaceId,
) -> Result<u64> {
    let queued: Vec<Queued> = blocking(replica, {
        let space = space.clone();
        move |r| {
            let conn = r.conn();
            let mut stmt = conn.prepare(
                "SELECT sha256, size, media_type, name FROM uploads
                 WHERE space = ?1 AND failed IS NULL ORDER BY sha256",
            )?;
            let rows = stmt.query_map([space.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })?;
            let mut queued = Vec::new();
            for row in rows {
                let (sha256, size, media_type, name) = row?;
                queued.push(Queued {
                    sha256: Sha256Hex::new(&sha256)
                        .map_err(|e| Error::Corrupt(format!("a queued upload: {e}")))?,
                    size: u64::try_from(size).unwrap_or(0),
                    media_type,
                    name,
                });
            }
            Ok(queued)
        }
    })
    .await?;
    let mut uploaded = 0;
    for file in queued {
        let result = upload(replica, remote, space, &file).await;
        let progress = replica.inner_progress();
        progress.set(space, &file.sha256, None);
        let failed = match result {
            Ok(()) => None,
            Err(e) if refused_for_good(&e) => {
                tracing::warn!(%space, sha256 = %file.sha256, error = %e, "the server refused a file");
                let message = match &e {
                    Error::Server { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                let code = e.code().unwrap_or("refused").to_owned();
                let why = format!("{code} {message}");
                progress.emit(space, &file.sha256, FileStatus::Failed { code, message });
                Some(why)
            }
            // Tried again at a later sync; the records synced all the same,
            // and the rest of the queue goes on (unless the server cannot
            // be reached at all).
            Err(e) => {
                tracing::info!(%space, sha256 = %file.sha256, error = %e, "a file's upload waits for a later sync");
                progress.emit(space, &file.sha256, FileStatus::Local);
                if matches!(e, Error::Offline(_)) {
                    break;
                }
                continue;
            }
        };
        let uploaded_now = failed.is_none();
        uploaded += u64::from(uploaded_now);
        let space_now = space.clone();
        let (space, sha256) = (space.clone(), file.sha256.clone());
        blocking(replica, move |r| {
            let mut conn = r.conn();
            let tx = conn.transaction()?;
            match failed {
                Some(why) => {
                    tx.execute(
                        "UPDATE uploads SET failed = ?3 WHERE space = ?1 AND sha256 = ?2",
                        params![space.as_str(), sha256.as_str(), why],
                    )?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM uploads WHERE space = ?1 AND sha256 = ?2",
                        params![space.as_str(), sha256.as_str()],
                    )?;
                    // Still pinned while another space's upload needs it.
                    tx.execute(
                        "UPDATE files SET pinned = EXISTS (SELECT 1 FROM uploads WHERE sha256 = ?1)
                         WHERE sha256 = ?1",
                        [sha256.as_str()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        if uploaded_now {
            progress.emit(&space_now, &file.sha256, FileStatus::Synced);
        }
    }
    Ok(uploaded)
}

/// Asks the server by hash, then sends what it does not hold.
async fn upload(replica: &Replica, remote: &Remote, space: &SpaceId, file: &Queued) -> Result<()> {
    // The bytes must still be here, whole (a cache directory cleaned by
    // hand): else nothing can send them, and the file is failed.
    let source = replica.cached_path(&file.sha256);
    let whole = tokio::fs::metadata(&source)
        .await
        .is_ok_and(|m| m.is_file() && m.len() == file.size);
    if !whole {
        return Err(Error::Server {
            status: 410,
            code: "file_lost".into(),
            message: format!(
                "the bytes of {} are no longer on this device: attach it again",
                file.sha256
            ),
            retry_after: None,
            change: None,
        });
    }
    let url = path(remote, space, &file.sha256);
    let asked = remote.send_raw(|| remote.http().head(&url)).await?;
    if asked.status().is_success() {
        return Ok(());
    }
    if asked.status() != StatusCode::NOT_FOUND {
        return Err(crate::remote::failure(asked).await);
    }
    let mut offset = asked
        .headers()
        .get("ferry-upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|o| *o < file.size)
        .unwrap_or(0);
    // Once more from the offset the server names, if it held another.
    for _ in 0..2 {
        match send_from(replica, remote, space, file, offset).await? {
            Sent::Done => return Ok(()),
            Sent::HeldFrom(held) => offset = held,
        }
    }
    match send_from(replica, remote, space, file, 0).await? {
        Sent::Done => Ok(()),
        Sent::HeldFrom(_) => Err(Error::Offline(
            "the server's partial upload keeps moving".into(),
        )),
    }
}

/// What a `PUT` did.
enum Sent {
    /// The server holds the file.
    Done,
    /// The server holds another part of it (`409` with its offset).
    HeldFrom(u64),
}

/// `PUT`s the file's bytes from `offset` (the rest of a broken-off
/// upload, or all of them), streamed from the cache.
async fn send_from(
    replica: &Replica,
    remote: &Remote,
    space: &SpaceId,
    file: &Queued,
    offset: u64,
) -> Result<Sent> {
    let url = path(remote, space, &file.sha256);
    let source = replica.cached_path(&file.sha256);
    let progress = (replica.clone(), space.clone(), file.sha256.clone());
    let total = file.size;
    let answer = remote
        .send_raw(|| {
            let mut req = remote
                .http()
                .request(Method::PUT, &url)
                .timeout(transfer_timeout(total - offset))
                .header(reqwest::header::CONTENT_TYPE, &file.media_type)
                .header(reqwest::header::CONTENT_LENGTH, total - offset);
            if offset > 0 {
                req = req.header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes {offset}-{}/{total}", total - 1),
                );
            }
            if let Some(name) = &file.name {
                req = req.header("ferry-file-name", encode_name(name));
            }
            req.body(body(source.clone(), offset, total, progress.clone()))
        })
        .await?;
    if answer.status().is_success() {
        return Ok(Sent::Done);
    }
    if answer.status() == StatusCode::CONFLICT {
        let status = answer.status();
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| Error::Offline(e.to_string()))?;
        // With an offset: another part is held. Without: an upload of it
        // runs already, so later.
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        // (An offset at the size: send it whole again.)
        if let Some(held) = body["error"]["details"]["offset"].as_u64() {
            return Ok(Sent::HeldFrom(if held < file.size { held } else { 0 }));
        }
        return Err(crate::remote::error_from(status, None, &bytes));
    }
    if answer.status() == StatusCode::BAD_REQUEST {
        // Cut short on the way: what arrived is held, sent from there at
        // a later try.
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| Error::Offline(e.to_string()))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if body["error"]["details"]["offset"].is_u64() {
            return Err(Error::Offline("the upload was cut short".into()));
        }
        return Err(crate::remote::error_from(
            StatusCode::BAD_REQUEST,
            None,
            &bytes,
        ));
    }
    Err(crate::remote::failure(answer).await)
}

/// The bytes of `source` from `offset`, read as they are sent, counting
/// what went for the file's status.
fn body(
    source: PathBuf,
    offset: u64,
    total: u64,
    (replica, space, sha256): (Replica, SpaceId, Sha256Hex),
) -> reqwest::Body {
    use futures_util::StreamExt;
    replica
        .inner_progress()
        .begin(&space, &sha256, offset, total);
    let opened = async move {
        let mut f = tokio::fs::File::open(&source).await?;
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(offset)).await?;
        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
            tokio::io::AsyncReadExt::take(f, total - offset),
            64 * 1024,
        ))
    };
    let mut sent = offset;
    let stream = futures_util::stream::once(opened)
        .map(|opened| match opened {
            Ok(stream) => stream.left_stream(),
            Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten()
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                sent += chunk.len() as u64;
                replica
                    .inner_progress()
                    .set(&space, &sha256, Some((sent, total)));
            }
        });
    reqwest::Body::wrap_stream(stream)
}

impl Replica {
    /// The bytes of `file` in `space`: from the cache, or downloaded (its
    /// hash checked) and kept. A file the server does not hold yet is
    /// [`crate::FileStatus::Missing`] until a later sync of the space finds it;
    /// this answers the server's `404`.
    pub async fn file(&self, remote: &Remote, space: &SpaceId, file: &FileRef) -> Result<PathBuf> {
        let hash = file.sha256.clone();
        if let Some(path) = blocking(self, move |r| r.cached_file(&hash)).await? {
            return Ok(path);
        }
        download(self, remote, space, &file.sha256, Some(file.size)).await
    }
}

/// Downloads `sha256` into the cache: streamed to a temporary file while
/// hashed, kept only if it is the file named (and no longer than `size`,
/// when known).
async fn download(
    replica: &Replica,
    remote: &Remote,
    space: &SpaceId,
    sha256: &Sha256Hex,
    size: Option<u64>,
) -> Result<PathBuf> {
    let url = path(remote, space, sha256);
    let timeout = size.map_or(std::time::Duration::from_secs(3600), transfer_timeout);
    let mut answer = remote
        .send_raw(|| remote.http().get(&url).timeout(timeout))
        .await?;
    if answer.status() == StatusCode::NOT_FOUND {
        let (space_now, hash) = (space.clone(), sha256.clone());
        let news = blocking(replica, move |r| {
            Ok(r.conn().execute(
                "INSERT OR IGNORE INTO missing (space, sha256) VALUES (?1, ?2)",
                params![space_now.as_str(), hash.as_str()],
            )? > 0)
        })
        .await?;
        if news {
            replica
                .inner_progress()
                .emit(space, sha256, FileStatus::Missing);
        }
    }
    if !answer.status().is_success() {
        return Err(crate::remote::failure(answer).await);
    }
    let dir = replica.files_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Invalid(format!("cannot make the file cache: {e}")))?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| Error::Invalid(format!("random: {e}")))?;
    let tmp = dir.join(format!("{sha256}.download-{}", hex::encode(random)));
    let power_loss = replica.survives_power_loss();
    let most = size.unwrap_or(u64::MAX);
    let kept = async {
        let mut out = tokio::fs::File::create(&tmp).await?;
        let (mut hasher, mut got) = (Sha256::new(), 0u64);
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            got += chunk.len() as u64;
            if got > most {
                return Err(std::io::Error::other("more bytes than the file holds"));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        // A download can be fetched again: flushed only when the
        // replica's writes must survive a power cut (a cached file whose
        // size is not its row's is read as not cached).
        if power_loss {
            out.sync_all().await?;
        }
        Ok::<_, std::io::Error>((hex::encode(hasher.finalize()), got))
    }
    .await;
    let (got, size) = match kept {
        Ok(kept) => kept,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Error::Offline(format!("the download broke off: {e}")));
        }
    };
    if got != sha256.as_str() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(Error::Corrupt(format!(
            "the server sent bytes whose SHA-256 is {got}, not {sha256}"
        )));
    }
    let path = replica.cached_path(sha256);
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| Error::Invalid(format!("cannot keep a download: {e}")))?;
    let hash = sha256.clone();
    let arrived = blocking(replica, move |r| r.cached(&hash, size)).await?;
    // It was missing there: whoever showed it missing hears it is here.
    for space in arrived.iter().filter_map(|s| SpaceId::new(s.as_str()).ok()) {
        replica
            .inner_progress()
            .emit(&space, sha256, FileStatus::Synced);
    }
    Ok(path)
}

/// Asks again for the files of `space` the server did not hold; how many
/// arrived.
pub(crate) async fn fetch_missing(
    replica: &Replica,
    remote: &Remote,
    space: &SpaceId,
) -> Result<u64> {
    let missing: Vec<String> = blocking(replica, {
        let space = space.clone();
        move |r| {
            let conn = r.conn();
            let mut stmt = conn.prepare("SELECT sha256 FROM missing WHERE space = ?1")?;
            let rows = stmt.query_map([space.as_str()], |row| row.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        }
    })
    .await?;
    let mut arrived = 0;
    for hash in missing {
        let Ok(sha256) = Sha256Hex::new(&hash) else {
            continue;
        };
        match download(replica, remote, space, &sha256, None).await {
            Ok(_) => arrived += 1,
            Err(Error::Offline(_)) => break,
            // Not there yet, or not served whole: asked again later.
            Err(e) => {
                tracing::debug!(%space, %sha256, error = %e, "a missing file is still missing")
            }
        }
    }
    Ok(arrived)
}
