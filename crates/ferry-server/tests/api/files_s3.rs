//! Files in S3-compatible object storage (docs/files.md §3) on two nodes
//! sharing one database and one bucket of a real S3-compatible server
//! (moto): a file uploaded through one node is read, in ranges, through
//! the other; the same file uploaded through both at once is kept once; a
//! delete through either is seen by both; the collector lists and deletes
//! in the bucket.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::ClientId;
use ferry_server::clock::wall_ms;
use ferry_server::files::collector::collect_once;
use ferry_server::testing::{self, S3Server, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::json;

use super::files::sha;

/// A node of its own (id, local directory) on `store`, its files in `s3`.
async fn node(store: Arc<dyn Store>, id: &str, dir: &std::path::Path, s3: &S3Server) -> Served {
    let mut settings = Settings::new(ClientId::new(id).unwrap(), "http://ferry.test");
    settings.files.dir = Some(dir.to_owned());
    settings.files.remote = Some(s3.remote("ferry"));
    settings.files.max_file_bytes = 64 * 1024 * 1024;
    Served::start(AppState::new(store, settings).await.unwrap()).await
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(http: &reqwest::Client, node: &Served, space: &str, body: &[u8]) -> u16 {
    http.put(format!(
        "{}/v1/spaces/{space}/files/{}",
        node.base,
        sha(body)
    ))
    .bearer_auth(node.token("ada"))
    .header("content-type", "application/octet-stream")
    .body(body.to_vec())
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

#[tokio::test]
async fn files_in_object_storage_are_shared_by_every_node() {
    let s3 = S3Server::start("ferry-files").await;
    let (store, _guard) = testing::fresh_store().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(store.clone(), "node-a", dir_a.path(), &s3).await;
    let b = node(store.clone(), "node-b", dir_b.path(), &s3).await;
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{}/v1/spaces", a.base))
        .bearer_auth(a.token("ada"))
        .json(&json!({"id": "shared", "name": "Shared"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);

    // A small file (one request) and a large one (in parts) through A.
    let small = bytes(100_000, 1);
    let large = bytes(9 * 1024 * 1024 + 123, 2);
    assert_eq!(put(&http, &a, "shared", &small).await, 201);
    assert_eq!(put(&http, &a, "shared", &large).await, 201);
    assert_eq!(s3.keys().await.len(), 2);
    assert!(s3.keys().await.iter().all(|k| k.starts_with("ferry/")));
    // Nothing of them stays on A's disk.
    assert!(!dir_a.path().join("objects").exists());

    // Read through B: whole, in a range, and asked by hash.
    for (file, range) in [
        (&small, None),
        (&large, None),
        (&large, Some((8 * 1024 * 1024, 9 * 1024 * 1024 + 99))),
    ] {
        let mut req = http
            .get(format!("{}/v1/spaces/shared/files/{}", b.base, sha(file)))
            .bearer_auth(b.token("ada"));
        if let Some((from, to)) = range {
            req = req.header("range", format!("bytes={from}-{to}"));
        }
        let got = req.send().await.unwrap();
        let want = match range {
            Some((from, to)) => {
                assert_eq!(got.status(), 206);
                &file[from..=to]
            }
            None => {
                assert_eq!(got.status(), 200);
                &file[..]
            }
        };
        assert_eq!(got.bytes().await.unwrap().as_ref(), want);
    }
    let head = http
        .head(format!("{}/v1/spaces/shared/files/{}", b.base, sha(&large)))
        .bearer_auth(b.token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        large.len().to_string()
    );

    // The same new file through both nodes at once: kept once.
    let both = bytes(3 * 1024 * 1024, 3);
    let (x, y) = tokio::join!(
        put(&http, &a, "shared", &both),
        put(&http, &b, "shared", &both)
    );
    let mut answers = [x, y];
    answers.sort_unstable();
    assert!(
        answers == [200, 201] || answers == [201, 201],
        "{answers:?}"
    );
    assert_eq!(s3.keys().await.len(), 3);

    // Forgotten through B: gone through A, and from the bucket.
    let forgot = http
        .delete(format!("{}/v1/spaces/shared/files/{}", b.base, sha(&small)))
        .bearer_auth(b.token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 204);
    let gone = http
        .get(format!("{}/v1/spaces/shared/files/{}", a.base, sha(&small)))
        .bearer_auth(a.token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(s3.keys().await.len(), 2);

    // The collector: a stray object (no row names it) and the files no
    // record refers to go after the grace, from the bucket.
    let stray = dir_a.path().join("stray");
    std::fs::write(&stray, b"stray").unwrap();
    let stray_key = format!("{}/{}/{}", "0".repeat(24), "1".repeat(64), "2".repeat(32));
    s3.remote("ferry")
        .put_file(&stray_key, &stray, 5)
        .await
        .unwrap();
    // Something else in the bucket, under the same prefix: never Ferry's to delete.
    s3.remote("ferry")
        .put_file("backups/db.dump", &stray, 5)
        .await
        .unwrap();
    assert_eq!(s3.keys().await.len(), 4);
    let objects = ferry_server::files::storage(&a.state).unwrap();
    let grace = Duration::from_secs(3600);
    let later = wall_ms() + 2 * 3_600_000;
    let first = collect_once(store.as_ref(), &objects, &a.state.uploads, later, grace)
        .await
        .unwrap();
    assert_eq!(first.strays, 1);
    let second = collect_once(
        store.as_ref(),
        &objects,
        &a.state.uploads,
        later + 3_600_001,
        grace,
    )
    .await
    .unwrap();
    assert_eq!(second.files, 2);
    assert_eq!(s3.keys().await, ["ferry/backups/db.dump"]);

    // The store down: a clear 503, within seconds; nothing kept.
    let kept = bytes(1000, 4);
    assert_eq!(put(&http, &a, "shared", &kept).await, 201);
    drop(s3);
    let started = std::time::Instant::now();
    let down = http
        .get(format!("{}/v1/spaces/shared/files/{}", b.base, sha(&kept)))
        .bearer_auth(b.token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let refused = bytes(1000, 5);
    assert_eq!(put(&http, &a, "shared", &refused).await, 503);
    // What arrived and was checked stays on the node, to resume from its
    // last byte once the store is back.
    let held = http
        .head(format!(
            "{}/v1/spaces/shared/files/{}",
            a.base,
            sha(&refused)
        ))
        .bearer_auth(a.token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 404);
    assert_eq!(held.headers()["ferry-upload-offset"], "999");
    assert!(started.elapsed() < Duration::from_secs(30));
    a.stop().await;
    b.stop().await;
}
