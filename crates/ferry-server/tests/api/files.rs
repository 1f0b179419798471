//! Files (docs/files.md): upload, ask by hash, download with ranges,
//! forget; the hash, the limits and the space's access rules.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Api, Reply};

pub(crate) fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An API whose files are kept in a fresh directory, with small limits.
pub(crate) async fn api() -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let api = Api::configured(move |s| {
        s.files.dir = Some(path);
        s.files.max_file_bytes = 1_000;
        s.files.quota_bytes = 1_500;
    })
    .await;
    (api, dir)
}

pub(crate) async fn put(
    api: &Api,
    user: &str,
    space: &str,
    hash: &str,
    bytes: &[u8],
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/spaces/{space}/files/{hash}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token(user)))
        .header(header::CONTENT_LENGTH, bytes.len());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    api.send(req.body(Body::from(bytes.to_vec())).unwrap())
        .await
}

pub(crate) async fn get(
    api: &Api,
    user: &str,
    space: &str,
    hash: &str,
    range: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .uri(format!("/v1/spaces/{space}/files/{hash}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token(user)))
        .header(header::ACCEPT_ENCODING, "gzip, br");
    if let Some(r) = range {
        req = req.header(header::RANGE, r);
    }
    api.send(req.body(Body::empty()).unwrap()).await
}

pub(crate) async fn head(api: &Api, user: &str, space: &str, hash: &str) -> Reply {
    api.call(
        Method::HEAD,
        &format!("/v1/spaces/{space}/files/{hash}"),
        Some(user),
        None,
    )
    .await
}

fn objects(dir: &tempfile::TempDir) -> usize {
    walk(&dir.path().join("objects"))
}

pub(crate) fn walk(p: &std::path::Path) -> usize {
    match std::fs::read_dir(p) {
        Err(_) => 0,
        Ok(entries) => entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum(),
    }
}

#[tokio::test]
async fn a_file_is_uploaded_once_asked_for_by_hash_and_read_in_ranges() {
    let (api, dir) = api().await;
    api.space("alice", "notes").await;
    let bytes = b"<html><script>alert(1)</script></html>";
    let hash = sha(bytes);

    assert_eq!(
        head(&api, "alice", "notes", &hash).await.status,
        StatusCode::NOT_FOUND
    );
    let r = put(
        &api,
        "alice",
        "notes",
        &hash,
        bytes,
        &[
            ("content-type", "text/html"),
            ("ferry-file-name", "page%20one.html"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"sha256": hash, "size": bytes.len(), "media_type": "text/html", "name": "page one.html"})
    );
    // The reference the answer gives is one a `file` field takes.
    assert!(ferry_core::FileRef::from_value(&r.body).is_ok());
    let h = head(&api, "alice", "notes", &hash).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(
        h.headers[header::CONTENT_LENGTH],
        bytes.len().to_string().as_str()
    );
    // Again: nothing new is kept.
    let again = put(&api, "alice", "notes", &hash, bytes, &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["name"], "page one.html");
    assert_eq!(objects(&dir), 1);

    let whole = get(&api, "alice", "notes", &hash, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(
        whole.body,
        Value::String(String::from_utf8_lossy(bytes).into())
    );
    let h = &whole.headers;
    assert_eq!(h[header::ETAG], format!("\"{hash}\"").as_str());
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(
        h[header::CONTENT_SECURITY_POLICY],
        "sandbox; default-src 'none'"
    );
    assert!(
        h.get(header::CONTENT_ENCODING)
            .is_none_or(|e| e == "identity"),
        "{h:?}"
    );

    let part = get(&api, "alice", "notes", &hash, Some("bytes=6-13")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, "<script>");
    assert_eq!(
        part.headers[header::CONTENT_RANGE],
        format!("bytes 6-13/{}", bytes.len()).as_str()
    );
    let tail = get(&api, "alice", "notes", &hash, Some("bytes=-7")).await;
    assert_eq!(tail.body, "</html>");
    let past = get(&api, "alice", "notes", &hash, Some("bytes=500-")).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.code(), "range_not_satisfiable");
    assert_eq!(
        past.headers[header::CONTENT_RANGE],
        format!("bytes */{}", bytes.len()).as_str()
    );
}

#[tokio::test]
async fn bytes_that_are_not_the_hash_named_are_never_kept() {
    let (api, dir) = api().await;
    api.space("alice", "notes").await;
    let r = put(
        &api,
        "alice",
        "notes",
        &sha(b"the real bytes"),
        b"other bytes",
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "hash_mismatch");
    assert_eq!(
        head(&api, "alice", "notes", &sha(b"the real bytes"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(objects(&dir), 0);
    assert_eq!(
        walk(&dir.path().join("staging")),
        0,
        "a staged upload was left"
    );
}

#[tokio::test]
async fn sizes_quotas_and_headers_are_checked_before_anything_is_kept() {
    let (api, dir) = api().await;
    api.space("alice", "notes").await;
    let big = vec![7u8; 1_001];
    let r = put(&api, "alice", "notes", &sha(&big), &big, &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    assert_eq!(r.body["error"]["details"]["limit"], 1_000);

    let a = vec![1u8; 900];
    assert_eq!(
        put(&api, "alice", "notes", &sha(&a), &a, &[]).await.status,
        StatusCode::CREATED
    );
    let b = vec![2u8; 900];
    let r = put(&api, "alice", "notes", &sha(&b), &b, &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "quota_exceeded")
    );
    assert_eq!(
        r.body["error"]["details"],
        json!({"limit": 1_500, "used": 900})
    );

    let c = b"small";
    for (k, v) in [
        ("content-type", "not a type"),
        ("ferry-file-name", "a%2Fb"),
        ("ferry-file-name", ""),
    ] {
        let r = put(&api, "alice", "notes", &sha(c), c, &[(k, v)]).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{k}: {v:?}"
        );
    }
    let no_length = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/spaces/notes/files/{}", sha(c)))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .body(Body::from_stream(futures_util::stream::iter([Ok::<
            _,
            std::io::Error,
        >(
            axum::body::Bytes::from_static(b"small"),
        )])))
        .unwrap();
    let r = api.send(no_length).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::LENGTH_REQUIRED, "length_required")
    );
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/notes/files/not-a-hash",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(objects(&dir), 1);
}

#[tokio::test]
async fn members_read_writers_upload_owners_forget_and_others_see_nothing() {
    let (api, dir) = api().await;
    api.space("alice", "notes").await;
    api.add("alice", "notes", "ed", "editor").await;
    api.add("alice", "notes", "vi", "viewer").await;
    let bytes = b"a picture";
    let hash = sha(bytes);
    let r = put(
        &api,
        "ed",
        "notes",
        &hash,
        bytes,
        &[("content-type", "image/png")],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let read = get(&api, "vi", "notes", &hash, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.headers[header::CONTENT_DISPOSITION], "inline");

    let other = b"another";
    let r = put(&api, "vi", "notes", &sha(other), other, &[]).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));

    // A stranger: the space's 404, for every route, the file's hash known.
    for r in [
        get(&api, "eve", "notes", &hash, None).await,
        head(&api, "eve", "notes", &hash).await,
        put(&api, "eve", "notes", &hash, bytes, &[]).await,
        api.call(
            Method::DELETE,
            &format!("/v1/spaces/notes/files/{hash}"),
            Some("eve"),
            None,
        )
        .await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    }
    // Eve's own space does not hold Alice's file, whatever its hash.
    api.space("eve", "mine").await;
    assert_eq!(
        get(&api, "eve", "mine", &hash, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = api
        .call(
            Method::GET,
            &format!("/v1/spaces/notes/files/{hash}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let path = format!("/v1/spaces/notes/files/{hash}");
    assert_eq!(
        api.call(Method::DELETE, &path, Some("ed"), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(Method::DELETE, &path, Some("alice"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(&api, "vi", "notes", &hash, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::DELETE, &path, Some("alice"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(objects(&dir), 0);
}

#[tokio::test]
async fn a_server_that_keeps_no_files_says_so() {
    let api = Api::configured(|s| s.files.dir = None).await;
    api.space("alice", "notes").await;
    let path = format!("/v1/spaces/notes/files/{}", sha(b"x"));
    let r = api.call(Method::GET, &path, Some("alice"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
}

/// A `PUT` of `size` announced bytes whose body is fed through the sender.
fn streaming_put(
    api: &Api,
    user: &str,
    hash: &str,
    size: usize,
) -> (
    Request<Body>,
    tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = Body::from_stream(tokio_stream_of(rx));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/spaces/notes/files/{hash}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token(user)))
        .header(header::CONTENT_LENGTH, size)
        .body(body)
        .unwrap();
    (req, tx)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn staged(api: &Api) -> usize {
    walk(&api.files_dir.path().join("staging"))
}

#[tokio::test]
async fn uploads_in_flight_hold_a_slot_and_their_bytes_of_the_quota() {
    use tower::ServiceExt as _;
    let api = Api::configured(|s| {
        s.files.max_concurrent_uploads = 2;
        s.files.quota_bytes = 1_000;
    })
    .await;
    api.space("alice", "notes").await;
    api.add("alice", "notes", "ed", "editor").await;
    let bytes = vec![5u8; 600];
    let (req, tx) = streaming_put(&api, "alice", &sha(&bytes), bytes.len());
    let first = tokio::spawn(api.app.clone().oneshot(req));
    tx.send(Ok(axum::body::Bytes::copy_from_slice(&bytes[..100])))
        .await
        .unwrap();
    for _ in 0..100 {
        if staged(&api) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(staged(&api), 1, "the first upload is not arriving");
    // Alice's 600 bytes on the way count: 600 more would pass 1,000.
    let more = vec![6u8; 600];
    let r = put(&api, "alice", "notes", &sha(&more), &more, &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "quota_exceeded")
    );
    assert_eq!(r.body["error"]["details"]["used"], 600);
    // A second upload takes the last slot; a third finds none.
    let (req2, tx2) = streaming_put(&api, "ed", &sha(b"x"), 1);
    let second = tokio::spawn(api.app.clone().oneshot(req2));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = put(&api, "ed", "notes", &sha(b"y"), b"y", &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // The second ends; the first is cut off: what arrived of it stays to
    // be resumed, and the rest of its bytes of the quota come back.
    tx2.send(Ok(axum::body::Bytes::from_static(b"x")))
        .await
        .unwrap();
    drop(tx2);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::CREATED);
    first.abort();
    let _ = first.await;
    drop(tx);
    // Its slot and bytes come back once its last write is on disk.
    let mut r = put(&api, "alice", "notes", &sha(&more), &more, &[]).await;
    for _ in 0..100 {
        if r.status != StatusCode::PAYMENT_REQUIRED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        r = put(&api, "alice", "notes", &sha(&more), &more, &[]).await;
    }
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(staged(&api), 1, "a cut upload left nothing to resume");
}

/// The files the space holds, as a member sees them (200 or 404).
async fn status(api: &Api, hash: &str) -> StatusCode {
    get(api, "alice", "notes", hash, None).await.status
}

#[tokio::test]
async fn files_no_record_refers_to_are_collected_after_their_grace_and_strays_with_them() {
    use ferry_server::files::collector::{Collected, collect_once};
    let (api, dir) = api().await;
    api.space("alice", "notes").await;
    let storage = ferry_server::files::storage(&api.state).unwrap();
    let collect = |now| {
        let (store, storage) = (api.state.store.clone(), storage.clone());
        let uploads = api.state.uploads.clone();
        async move {
            collect_once(
                store.as_ref(),
                &storage,
                &uploads,
                now,
                std::time::Duration::from_millis(GRACE),
            )
            .await
            .unwrap()
        }
    };
    let (kept, dropped) = (b"a cover".as_slice(), b"a draft".as_slice());
    for bytes in [kept, dropped] {
        let r = put(&api, "alice", "notes", &sha(bytes), bytes, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/notes/collections/notes/records/n1",
            Some("alice"),
            Some(json!({"fields": {"cover": {"sha256": sha(kept), "size": kept.len(), "media_type": "application/octet-stream"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // An object no row names (a crash between keeping bytes and recording
    // them), written long ago.
    let stray = dir.path().join("objects/0a0a/0b0b/0c0c");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&stray).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(objects(&dir), 3);

    let now = ferry_server::clock::wall_ms();
    // The first pass marks the draft and deletes the stray; within the
    // grace period, nothing else goes.
    assert_eq!(
        collect(now).await,
        Collected {
            files: 0,
            bytes: 0,
            strays: 1,
            partials: 0,
        }
    );
    assert_eq!(collect(now + GRACE - 1).await, Collected::default());
    assert_eq!(status(&api, &sha(dropped)).await, StatusCode::OK);
    // A writer asking for the draft before uploading it relies on the
    // answer: it is kept a grace period from the next pass again.
    assert_eq!(
        head(&api, "alice", "notes", &sha(dropped)).await.status,
        StatusCode::OK
    );
    assert_eq!(collect(now + GRACE).await, Collected::default());
    let done = collect(now + 2 * GRACE).await;
    assert_eq!(
        done,
        Collected {
            files: 1,
            bytes: dropped.len() as u64,
            strays: 0,
            partials: 0,
        }
    );
    assert_eq!(status(&api, &sha(dropped)).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&api, &sha(kept)).await, StatusCode::OK);
    assert_eq!(objects(&dir), 1);
    // Uploaded again, the draft is a new file.
    let r = put(&api, "alice", "notes", &sha(dropped), dropped, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);

    // The record deleted, its cover goes a grace period after the pass
    // that saw it released.
    let r = api
        .call(
            Method::DELETE,
            "/v1/spaces/notes/collections/notes/records/n1",
            Some("alice"),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let later = now + 3 * GRACE;
    collect(later).await;
    assert_eq!(status(&api, &sha(kept)).await, StatusCode::OK);
    assert_eq!(collect(later + GRACE).await.files, 2);
    assert_eq!(status(&api, &sha(kept)).await, StatusCode::NOT_FOUND);
    assert_eq!(objects(&dir), 0);
}

const GRACE: u64 = 3_600_000;
