//! Files attached to records (docs/files.md): a space's files, uploaded,
//! asked for by hash, downloaded (with ranges) and forgotten under the
//! space's access rules. The bytes are in [`objects::Objects`]; the rows
//! naming them in the store ([`crate::store::files`]).

pub mod collector;
pub mod objects;
mod range;
pub mod remote;
pub mod staging;
mod upload;
pub mod uploads;

use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferry_core::{FileRef, Sha256Hex, SpaceId};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::spaces::access;
use crate::state::AppState;
use crate::store::files::StoredFile;
use objects::{ObjectError, Objects};
use range::Wanted;

/// How files are kept and bounded.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Where the bytes are kept; `None`: this node keeps no files, and the
    /// file routes answer `503`.
    pub dir: Option<PathBuf>,
    /// The largest file, in bytes.
    pub max_file_bytes: u64,
    /// The most bytes of files one user's uploads may take, across spaces.
    pub quota_bytes: u64,
    /// The S3-compatible bucket the bytes are kept in (`files_url`), for
    /// several nodes; `None`: `dir`'s `objects/`. Uploads are staged in
    /// `dir` either way.
    pub remote: Option<remote::RemoteObjects>,
    /// The most uploads a node takes at once (more answer `503`).
    pub max_concurrent_uploads: usize,
    /// How long a file no record refers to is kept (docs/files.md §5).
    pub grace: std::time::Duration,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            dir: None,
            max_file_bytes: 100 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            remote: None,
            max_concurrent_uploads: 32,
            grace: collector::DEFAULT_GRACE,
        }
    }
}

/// The name header of an upload (percent-encoded UTF-8).
pub const NAME_HEADER: &str = "ferry-file-name";

/// How many bytes of a broken-off upload the node holds (`HEAD`).
pub const OFFSET_HEADER: &str = "ferry-upload-offset";

/// Whether `path` is a file's route (`/v1/spaces/{space}/files/{sha256}`).
pub fn is_upload(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("v1"),
            Some("spaces"),
            Some(_),
            Some("files"),
            Some(_),
            None
        )
    )
}

/// The file routes, under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/spaces/{space}/files/{sha256}",
        get(download).head(head).put(upload::upload).delete(forget),
    )
}

/// The node's file storage, if it keeps files.
pub fn storage(state: &AppState) -> Option<Objects> {
    let dir = state.settings.files.dir.as_ref()?;
    Some(
        Objects::new(dir, state.settings.node_id.as_str())
            .with_remote(state.settings.files.remote.clone()),
    )
}

pub(super) fn objects(state: &AppState) -> Result<Objects, ApiError> {
    storage(state).ok_or_else(|| ApiError::unavailable("this server keeps no files"))
}

/// Where a space's objects go: a digest of its id, never the id itself
/// (an id may be `..`).
pub(super) fn prefix(space: &SpaceId) -> String {
    crate::ids::digest_name(space.as_str(), 12)
}

pub(super) fn reference(f: &StoredFile) -> FileRef {
    FileRef {
        sha256: f.sha256.clone(),
        size: f.size,
        media_type: f.media_type.clone(),
        name: f.name.clone(),
    }
}

fn not_found(sha256: &Sha256Hex) -> ApiError {
    ApiError::not_found(format!("file {sha256} not found"))
}

pub(super) fn storage_failed(e: ObjectError) -> ApiError {
    match e {
        ObjectError::Body(why) => ApiError::invalid_request(why),
        ObjectError::Held(held) => ApiError::conflict(format!(
            "{held} bytes of this upload are held: send the rest from there"
        ))
        .with_details(json!({"offset": held})),
        ObjectError::TooLong(total) => {
            ApiError::invalid_request(format!("the upload held more than {total} bytes"))
        }
        ObjectError::TimedOut => {
            ApiError::request_timeout("the upload did not arrive within its time limit")
        }
        // The row was read, then the bytes deleted (by an owner, at once).
        ObjectError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ApiError::not_found("the file is gone")
        }
        ObjectError::Io(e) => ApiError::internal(format!("file storage: {e}")),
        ObjectError::Remote(e) => {
            tracing::warn!(error = %e, "object storage failed");
            ApiError::unavailable("file storage cannot be reached: try again")
        }
    }
}

/// The file `space` holds under `sha256`, for a member of it.
async fn held(
    state: &AppState,
    caller: &Caller,
    space: &SpaceId,
    sha256: &Sha256Hex,
) -> Result<StoredFile, ApiError> {
    access::data(state, &caller.0, space).await?;
    state
        .store
        .file(space, sha256)
        .await?
        .ok_or_else(|| not_found(sha256))
}

async fn head(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((space, sha256)): ApiPath<(SpaceId, Sha256Hex)>,
) -> Result<Response, ApiError> {
    let objects = objects(&state)?;
    let role = access::data(&state, &caller.0, &space).await?;
    let Some(mut file) = state.store.file(&space, &sha256).await? else {
        // Not held: how much of the caller's own upload of it arrived.
        let mut answer = not_found(&sha256).into_response();
        let partial = objects.partial(&caller.0.id, &prefix(&space), &sha256);
        if role.can_write()
            && let Some(offset) = partial.offset().await
        {
            answer.headers_mut().insert(
                header::HeaderName::from_static(OFFSET_HEADER),
                HeaderValue::from(offset),
            );
        }
        return Ok(answer);
    };
    // A writer asking before an upload relies on the answer: a file the
    // collector has marked gets a whole grace period again (or, collected
    // meanwhile, is not found and is uploaded anew).
    if file.unreferenced_since.is_some() && role.can_write() {
        file = state
            .store
            .touch_file(&space, &sha256)
            .await?
            .ok_or_else(|| not_found(&sha256))?;
    }
    if role.can_write() {
        // Held: what arrived of the caller's own upload of it is worth
        // nothing now, and would count against their quota for a day.
        let partial = objects.partial(&caller.0.id, &prefix(&space), &sha256);
        state
            .uploads
            .when_idle(&partial.key(), || partial.discard_now());
    }
    Ok((
        [
            (header::CONTENT_LENGTH, file.size.to_string()),
            (header::ETAG, format!("\"{}\"", file.sha256)),
        ],
        StatusCode::OK,
    )
        .into_response())
}

pub(super) fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn over_quota(quota: u64, used: u64) -> ApiError {
    ApiError::quota_exceeded(format!(
        "your files may take {quota} bytes and take {used}: this one does not fit"
    ))
    .with_details(json!({"limit": quota, "used": used}))
}

pub(super) async fn delete_object(objects: &Objects, key: &str) {
    if let Err(e) = objects.delete(key).await {
        tracing::warn!(object = key, error = %e, "cannot delete a file's object; the collector will");
    }
}

/// How a file's bytes may be shown: inline only for media that cannot run
/// as a page (images other than SVG, audio, video).
fn disposition(media_type: &str) -> &'static str {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let inline = (essence.starts_with("image/") && !essence.starts_with("image/svg"))
        || essence.starts_with("audio/")
        || essence.starts_with("video/");
    if inline { "inline" } else { "attachment" }
}

async fn download(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((space, sha256)): ApiPath<(SpaceId, Sha256Hex)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let objects = objects(&state)?;
    let file = held(&state, &caller, &space, &sha256).await?;
    let (status, start, len) = match range::wanted(header_text(&headers, header::RANGE), file.size)
    {
        Wanted::Whole => (StatusCode::OK, 0, file.size),
        Wanted::Part { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        Wanted::Unsatisfiable => {
            let mut e =
                ApiError::range_not_satisfiable(format!("the file holds {} bytes", file.size))
                    .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                e.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(e);
        }
    };
    let body = objects
        .read(&file.object, start, len)
        .await
        .map_err(storage_failed)?;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, file.media_type.clone());
    set(header::CONTENT_LENGTH, len.to_string());
    set(header::ETAG, format!("\"{}\"", file.sha256));
    set(header::ACCEPT_RANGES, "bytes".into());
    set(
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable".into(),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    set(
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'".into(),
    );
    set(
        header::CONTENT_DISPOSITION,
        disposition(&file.media_type).into(),
    );
    // Never compressed: the bytes are what the hash names, and ranges
    // count them.
    set(header::CONTENT_ENCODING, "identity".into());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, file.size),
        );
    }
    Ok(response)
}

async fn forget(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, sha256)): ApiPath<(SpaceId, Sha256Hex)>,
) -> Result<StatusCode, ApiError> {
    let objects = objects(&state)?;
    let role = access::data(&state, &user, &space).await?;
    if role != ferry_core::Role::Owner {
        return Err(ApiError::forbidden(
            "only an owner of this space can delete its files",
        ));
    }
    let file = state
        .store
        .remove_file(&space, &sha256)
        .await?
        .ok_or_else(|| not_found(&sha256))?;
    tracing::info!(%space, %sha256, "a file was deleted by an owner");
    delete_object(&objects, &file.object).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_that_cannot_run_are_shown_inline() {
        for inline in [
            "image/png",
            "IMAGE/JPEG",
            "audio/ogg",
            "video/mp4; codecs=avc1",
        ] {
            assert_eq!(disposition(inline), "inline", "{inline}");
        }
        for attached in [
            "image/svg+xml",
            "text/html",
            "application/pdf",
            "application/javascript",
            "text/plain",
        ] {
            assert_eq!(disposition(attached), "attachment", "{attached}");
        }
        assert_ne!(prefix(&SpaceId::new("..").unwrap()), "..");
        assert!(is_upload("/v1/spaces/team/files/abc"));
        for other in [
            "/v1/spaces/team/sync",
            "/v1/spaces/team/files",
            "/v1/spaces/team/files/abc/more",
            "/v1/auth/magic-link",
            "/files/abc",
        ] {
            assert!(!is_upload(other), "{other}");
        }
    }
}
