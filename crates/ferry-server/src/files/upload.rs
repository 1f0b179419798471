//! `PUT /v1/spaces/{space}/files/{sha256}` (docs/files.md §2): an upload,
//! whole or the rest of one that broke off (`Content-Range`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::file::{media_type_ok, name_ok};
use ferry_core::{Sha256Hex, SpaceId};
use serde_json::json;

use super::objects::ObjectError;
use super::{
    NAME_HEADER, delete_object, header_text, objects, over_quota, prefix, reference,
    storage_failed, uploads,
};
use crate::auth::Caller;
use crate::clock::wall_ms;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::spaces::access;
use crate::state::AppState;
use crate::store::files::{Added, StoredFile};

/// The most unfinished uploads a user keeps on a node.
pub(super) const MAX_PARTIALS: usize = 32;

/// Which bytes of the file a request's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Part {
    /// The first byte's offset in the file.
    pub from: u64,
    /// The file's size.
    pub total: u64,
}

/// The part a `PUT` carries: the whole file of `length` bytes, or, with
/// `Content-Range: bytes {from}-{total-1}/{total}`, the rest of it from
/// `from` (a body must reach the file's end).
pub(super) fn part(content_range: Option<&str>, length: u64) -> Result<Part, ApiError> {
    let Some(range) = content_range else {
        return Ok(Part {
            from: 0,
            total: length,
        });
    };
    let bad = || {
        ApiError::invalid_request(
            "Content-Range must be bytes {offset}-{size-1}/{size}: the rest of the file from the offset",
        )
    };
    let (span, total) = range
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(bad)?;
    let (from, last) = span.split_once('-').ok_or_else(bad)?;
    let digits = |t: &str| {
        (!t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    let (from, last, total) = (
        digits(from).ok_or_else(bad)?,
        digits(last).ok_or_else(bad)?,
        digits(total).ok_or_else(bad)?,
    );
    if total == 0 || last + 1 != total || from > last || last - from + 1 != length {
        return Err(bad());
    }
    Ok(Part { from, total })
}

pub(super) async fn upload(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiPath((space, sha256)): ApiPath<(SpaceId, Sha256Hex)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let objects = objects(&state)?;
    let limits = &state.settings.files;
    let role = access::data(&state, &user, &space).await?;
    access::require_write(role)?;
    let length = header_text(&headers, header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::length_required("an upload needs its Content-Length, the file's size")
        })?;
    let Part { from, total } = part(header_text(&headers, header::CONTENT_RANGE), length)?;
    if total > limits.max_file_bytes {
        return Err(ApiError::too_large(format!(
            "a file may hold at most {} bytes, this one {total}",
            limits.max_file_bytes
        ))
        .with_details(json!({"limit": limits.max_file_bytes})));
    }
    let media_type = match header_text(&headers, header::CONTENT_TYPE) {
        None => "application/octet-stream".to_owned(),
        Some(m) if media_type_ok(m) => m.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "Content-Type must be a media type, type/subtype, at most 255 characters",
            ));
        }
    };
    let name = match headers.get(NAME_HEADER) {
        None => None,
        Some(v) => {
            let decoded = v.to_str().ok().map(crate::http::percent::decode);
            match decoded.filter(|n| name_ok(n)) {
                Some(n) => Some(n),
                None => {
                    return Err(ApiError::invalid_request(format!(
                        "{NAME_HEADER} must be a percent-encoded name of 1 to 255 characters without control characters, / or \\"
                    )));
                }
            }
        }
    };
    let partial = objects.partial(&user.id, &prefix(&space), &sha256);
    if let Some(file) = state.store.touch_file(&space, &sha256).await? {
        // What arrived of an earlier try is worth nothing now.
        state
            .uploads
            .when_idle(&partial.key(), || partial.discard_now());
        return Ok((StatusCode::OK, axum::Json(reference(&file))).into_response());
    }
    // The user's other broken-off uploads hold disk as their files do.
    let others = partial
        .others(state.uploads.writing())
        .await
        .map_err(storage_failed)?;
    if others.count >= MAX_PARTIALS {
        return Err(ApiError::conflict(format!(
            "you have {MAX_PARTIALS} unfinished uploads on this server: finish one, or wait a day"
        )));
    }
    // The uploader's plan may set their quota (`[billing.file_quotas]`).
    let quota = crate::billing::file_quota(&state, &user.id, limits.quota_bytes).await?;
    let stored = state
        .store
        .file_usage(&user.id)
        .await?
        .saturating_add(others.bytes);
    let slot = match state
        .uploads
        .start(&user.id, total, stored, quota, partial.key())
    {
        Ok(slot) => slot,
        Err(uploads::Refused::Busy) => {
            return Err(ApiError::unavailable(
                "this server takes as many uploads as it can: try again",
            ));
        }
        Err(uploads::Refused::OverQuota { used }) => {
            return Err(over_quota(quota, used));
        }
        Err(uploads::Refused::InProgress) => {
            return Err(ApiError::conflict(
                "an upload of this file by you to this space is in progress",
            ));
        }
    };
    let held = partial.offset().await.unwrap_or(0);
    if from != 0 && from != held {
        return Err(ApiError::conflict(format!(
            "{held} bytes of this upload are held: send the rest from there"
        ))
        .with_details(json!({"offset": held})));
    }
    // The slot is held until the upload ends, whichever way, and past its
    // last write.
    let (staged, _slot) = objects
        .stage(&partial, from, body.into_data_stream(), total, slot)
        .await
        .map_err(|e| match e {
            ObjectError::TooLong(_) => {
                ApiError::invalid_request("the upload held more bytes than its Content-Length")
            }
            e => storage_failed(e),
        })?;
    if staged.size != total {
        let arrived = staged.size;
        staged.resumable();
        return Err(ApiError::invalid_request(format!(
            "the upload ended after {arrived} of {total} bytes: send the rest from there"
        ))
        .with_details(json!({"offset": arrived})));
    }
    if staged.sha256 != sha256.as_str() {
        let got = staged.sha256.clone();
        drop(staged);
        return Err(ApiError::hash_mismatch(format!(
            "the bytes' SHA-256 is {got}, not {sha256}: nothing was kept"
        )));
    }
    // What is on disk is what was hashed, to the byte count.
    if partial.offset().await != Some(total) {
        drop(staged);
        return Err(ApiError::conflict("the upload was not kept: send it again")
            .with_details(json!({"offset": 0})));
    }
    let object = objects
        .keep(staged, &prefix(&space))
        .await
        .map_err(storage_failed)?;
    let file = StoredFile {
        sha256,
        size: total,
        media_type,
        name,
        object: object.clone(),
        uploaded_by: user.id.clone(),
        created_at: wall_ms(),
        unreferenced_since: None,
    };
    let added = match state.store.add_file(&space, &file, quota).await {
        Ok(added) => added,
        // Not deleted: the row may have been written all the same (a
        // commit whose answer was lost). The collector deletes the object
        // if no row names it.
        Err(e) => return Err(e.into()),
    };
    match added {
        Added::New(file) => {
            tracing::info!(%space, sha256 = %file.sha256, size = file.size, "a file was uploaded");
            Ok((StatusCode::CREATED, axum::Json(reference(&file))).into_response())
        }
        Added::Held(file) => {
            delete_object(&objects, &object).await;
            Ok((StatusCode::OK, axum::Json(reference(&file))).into_response())
        }
        Added::OverQuota { used } => {
            delete_object(&objects, &object).await;
            Err(over_quota(quota, used))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_the_whole_file_or_the_rest_of_it() {
        assert_eq!(part(None, 10).unwrap(), Part { from: 0, total: 10 });
        assert_eq!(
            part(Some("bytes 4-9/10"), 6).unwrap(),
            Part { from: 4, total: 10 }
        );
        assert_eq!(
            part(Some("bytes 0-9/10"), 10).unwrap(),
            Part { from: 0, total: 10 }
        );
        for bad in [
            ("bytes 4-8/10", 5),  // not to the end
            ("bytes 4-9/10", 5),  // not the body's length
            ("bytes 9-4/10", 6),  // backwards
            ("bytes */10", 0),    // no span
            ("bytes 0-0/0", 1),   // an empty file
            ("items 0-9/10", 10), // not bytes
            ("bytes -1-9/10", 11),
            ("bytes +4-9/10", 6),
            ("bytes 0-99999999999999999999/100000000000000000000", 1),
        ] {
            assert!(part(Some(bad.0), bad.1).is_err(), "{bad:?}");
        }
    }
}
