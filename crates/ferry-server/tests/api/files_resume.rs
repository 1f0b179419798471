//! Resuming uploads (docs/files.md §2, "Resume"): what arrived of a
//! broken-off upload is kept, `HEAD` says how much, the rest follows with
//! `Content-Range`, and the hash over the whole file decides.

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::files::{api, get, head, put, sha};
use crate::{Api, Reply};

const OFFSET: &str = "ferry-upload-offset";

/// Bytes of a file, `n` long, that differ with `seed`.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A `PUT` of the whole file whose body breaks off after `cut` bytes.
async fn broken(api: &Api, user: &str, space: &str, file: &[u8], cut: usize) -> Reply {
    let sent = Bytes::copy_from_slice(&file[..cut]);
    let body = futures_util::stream::iter([
        Ok::<_, std::io::Error>(sent),
        Err(std::io::Error::other("the connection was lost")),
    ]);
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/spaces/{space}/files/{}", sha(file)))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token(user)))
        .header(header::CONTENT_LENGTH, file.len())
        .body(Body::from_stream(body))
        .unwrap();
    api.send(req).await
}

/// The rest of `file` from `from`, as a resuming `PUT`.
async fn rest(api: &Api, user: &str, space: &str, hash: &str, file: &[u8], from: usize) -> Reply {
    let range = format!("bytes {from}-{}/{}", file.len() - 1, file.len());
    put(
        api,
        user,
        space,
        hash,
        &file[from..],
        &[("content-range", range.as_str())],
    )
    .await
}

/// Waits up to 30 s for `f` to give something (a cut upload's bytes are
/// flushed before they count, and a busy disk can hold a flush for
/// seconds).
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn offset(r: &Reply) -> Option<u64> {
    r.headers
        .get(OFFSET)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn an_upload_broken_off_anywhere_is_resumed_from_what_arrived() {
    let api = Api::configured(|s| s.files.quota_bytes = 10_000).await;
    api.space("alice", "notes").await;
    api.add("alice", "notes", "vera", "viewer").await;
    for (i, cut) in [0, 1, 333, 899].into_iter().enumerate() {
        let file = bytes(900, i as u8);
        let hash = sha(&file);
        let r = broken(&api, "alice", "notes", &file, cut).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        // Not held yet; the uploader is told how much arrived, a viewer
        // nothing.
        let h = head(&api, "alice", "notes", &hash).await;
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        // Nothing is kept of an upload that sent nothing.
        let kept = (cut > 0).then_some(cut as u64);
        assert_eq!(offset(&h), kept, "cut {cut}");
        assert_eq!(offset(&head(&api, "vera", "notes", &hash).await), None);
        let r = rest(&api, "alice", "notes", &hash, &file, cut).await;
        assert_eq!(r.status, StatusCode::CREATED, "cut {cut}: {:?}", r.body);
        assert_eq!(r.body["size"], 900);
        let g = get(&api, "alice", "notes", &hash, None).await;
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(g.headers[header::CONTENT_LENGTH], "900");
        assert_eq!(g.body, json!(String::from_utf8_lossy(&file)));
        assert_eq!(offset(&head(&api, "alice", "notes", &hash).await), None);
    }
}

#[tokio::test]
async fn a_resume_that_does_not_fit_what_arrived_is_refused_and_a_corrupt_one_keeps_nothing() {
    let (api, _dir) = api().await;
    api.space("alice", "notes").await;
    let file = bytes(800, 7);
    let hash = sha(&file);
    // Nothing arrived yet: a resume from 100 is told to start at 0.
    let r = rest(&api, "alice", "notes", &hash, &file, 100).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["offset"], 0);
    broken(&api, "alice", "notes", &file, 300).await;
    let r = rest(&api, "alice", "notes", &hash, &file, 200).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"]["details"]["offset"], 300);
    // A bad Content-Range is a 400 that changes nothing.
    for bad in [
        "bytes 300-798/800",
        "bytes 300-799/900",
        "bytes=300-799/800",
    ] {
        let r = put(
            &api,
            "alice",
            "notes",
            &hash,
            &file[300..],
            &[("content-range", bad)],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        offset(&head(&api, "alice", "notes", &hash).await),
        Some(300)
    );
    // The rest with one byte wrong: the hash over the whole file refuses
    // it, and what arrived is dropped.
    let mut wrong = file.clone();
    wrong[500] ^= 1;
    let r = rest(&api, "alice", "notes", &hash, &wrong, 300).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "hash_mismatch");
    let h = head(&api, "alice", "notes", &hash).await;
    assert_eq!((h.status, offset(&h)), (StatusCode::NOT_FOUND, None));
    // A whole upload from 0 always starts again.
    broken(&api, "alice", "notes", &file, 600).await;
    let r = put(&api, "alice", "notes", &hash, &file, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn what_arrived_counts_against_the_quota_and_one_upload_of_a_file_runs_at_once() {
    // Quota 1,500 bytes.
    let (api, _dir) = api().await;
    api.space("alice", "notes").await;
    let first = bytes(900, 1);
    broken(&api, "alice", "notes", &first, 800).await;
    // 800 bytes held for the first: a second file of 800 does not fit.
    let second = bytes(800, 2);
    let r = put(&api, "alice", "notes", &sha(&second), &second, &[]).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["used"], 800);

    // An upload in flight holds its file: the same upload again is 409.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let hash = sha(&first);
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/spaces/notes/files/{hash}"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .header(header::CONTENT_LENGTH, first.len())
        .body(Body::from_stream(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
        .unwrap();
    let app = api.app.clone();
    let in_flight = tokio::spawn(async move {
        use tower::ServiceExt;
        app.oneshot(req).await.unwrap().status()
    });
    tx.send(Ok(Bytes::copy_from_slice(&first[..10])))
        .await
        .unwrap();
    until("the first bytes", || async {
        (offset(&head(&api, "alice", "notes", &hash).await) == Some(10)).then_some(())
    })
    .await;
    let r = rest(&api, "alice", "notes", &hash, &first, 10).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    // The first goes on to the end.
    tx.send(Ok(Bytes::copy_from_slice(&first[10..])))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(in_flight.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_connection_cut_at_random_points_resumes_over_http_without_corruption() {
    let (api, _dir) = api().await;
    api.space("alice", "notes").await;
    let served = api.serve().await;
    let addr = served.base.trim_start_matches("http://").to_owned();
    let file = bytes(1_000, 9);
    let hash = sha(&file);
    let token = api.token("alice");
    let mut seed = 0x2545_f491_u64;
    let mut held = 0usize;
    // Five connections each cut after a random share of what is left.
    for _ in 0..5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let left = file.len() - held;
        let cut = held + (seed >> 33) as usize % left;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "PUT /v1/spaces/notes/files/{hash} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {left}\r\nContent-Range: bytes {held}-{}/{}\r\n\r\n",
            file.len() - 1,
            file.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        s.write_all(&file[held..cut]).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
        held = until("the cut upload", || async {
            let h = head(&api, "alice", "notes", &hash).await;
            offset(&h).filter(|n| *n as usize == cut)
        })
        .await as usize;
    }
    let r = rest(&api, "alice", "notes", &hash, &file, held).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let ask = format!(
        "GET /v1/spaces/notes/files/{hash} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(ask.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.ends_with(&file),
        "the file read back is not the file sent"
    );
}

#[tokio::test]
async fn what_arrived_outlives_a_restart_and_goes_after_a_day() {
    use ferry_server::files::collector::collect_once;
    let (api, _dir) = api().await;
    api.space("alice", "notes").await;
    let file = bytes(700, 3);
    broken(&api, "alice", "notes", &file, 250).await;
    let storage = ferry_server::files::storage(&api.state).unwrap();
    // A node starting again clears its staging but keeps partial uploads.
    storage.sweep_staging().await;
    assert_eq!(
        offset(&head(&api, "alice", "notes", &sha(&file)).await),
        Some(250)
    );
    let now = ferry_server::clock::wall_ms();
    let grace = std::time::Duration::from_secs(3600);
    let store = api.state.store.clone();
    assert_eq!(
        collect_once(store.as_ref(), &storage, &api.state.uploads, now, grace)
            .await
            .unwrap()
            .partials,
        0
    );
    let day = 24 * 3600 * 1000;
    let done = collect_once(
        store.as_ref(),
        &storage,
        &api.state.uploads,
        now + day + 1_000,
        grace,
    )
    .await
    .unwrap();
    assert_eq!(done.partials, 1);
    assert_eq!(
        offset(&head(&api, "alice", "notes", &sha(&file)).await),
        None
    );
}

#[tokio::test]
async fn a_file_held_after_all_ends_its_partial_and_unfinished_uploads_are_bounded() {
    let api = Api::configured(|s| s.files.quota_bytes = 1 << 30).await;
    api.space("alice", "notes").await;
    api.add("alice", "notes", "ed", "editor").await;
    let file = bytes(900, 4);
    let hash = sha(&file);
    broken(&api, "alice", "notes", &file, 400).await;
    // Another member uploads the same file whole: Alice's HEAD finds it
    // held, and what arrived of hers is dropped (it no longer counts
    // against her quota).
    let r = put(&api, "ed", "notes", &hash, &file, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        head(&api, "alice", "notes", &hash).await.status,
        StatusCode::OK
    );
    let storage = api.files_dir.path().join("staging");
    let held = crate::files::walk(&storage);
    assert_eq!(held, 0, "the partial of a held file was kept");

    // At most so many unfinished uploads per user and node.
    for n in 0..32u8 {
        let f = bytes(50, 100 + n);
        let r = broken(&api, "alice", "notes", &f, 10).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    let f = bytes(50, 200);
    let r = put(&api, "alice", "notes", &sha(&f), &f, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    // Finishing one makes room.
    let first = bytes(50, 100);
    let r = rest(&api, "alice", "notes", &sha(&first), &first, 10).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = put(&api, "alice", "notes", &sha(&f), &f, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}
