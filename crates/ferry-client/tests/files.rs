//! Files on the native client (docs/files.md §6) against a real server on
//! a socket: attach, the upload queue after the outbox, resuming, reading
//! on another device, `missing` until the author uploads, offline
//! attachments, refusals, the cache's bound and the wipe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ferry_client::{Error, FileStatus, Remote, Replica, ReplicaConfig, SignOut, Token, sync_space};
use ferry_core::{ClientId, Collection, FileRef, RecordId, Sha256Hex, SpaceId};
use ferry_server::testing::{self, Guard, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

struct Setup {
    server: Served,
    _files: tempfile::TempDir,
    dir: tempfile::TempDir,
    _guard: Guard,
}

async fn serve(store: Arc<dyn Store>, files: &std::path::Path, quota: u64) -> Served {
    let mut settings = Settings::new(ClientId::new("server").unwrap(), "http://ferry.test");
    settings.files.dir = Some(files.to_owned());
    settings.files.quota_bytes = quota;
    Served::start(AppState::new(store, settings).await.unwrap()).await
}

async fn setup_with(quota: u64) -> Setup {
    let (store, guard) = testing::fresh_store().await;
    let files = tempfile::tempdir().unwrap();
    Setup {
        server: serve(store, files.path(), quota).await,
        _files: files,
        dir: tempfile::tempdir().unwrap(),
        _guard: guard,
    }
}

async fn setup() -> Setup {
    setup_with(1 << 30).await
}

impl Setup {
    fn replica(&self, name: &str) -> Replica {
        self.replica_with(name, ReplicaConfig::default())
    }

    fn replica_with(&self, name: &str, config: ReplicaConfig) -> Replica {
        Replica::open(self.dir.path().join(name), config).unwrap()
    }

    fn remote(&self, user: &str) -> Remote {
        Remote::new(&self.server.base, Arc::new(Token(self.server.token(user)))).unwrap()
    }
}

fn personal() -> SpaceId {
    SpaceId::new("user:ada").unwrap()
}
fn notes() -> Collection {
    Collection::new("notes").unwrap()
}
fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}
fn with_image(file: &FileRef) -> Map<String, Value> {
    json!({"title": "A cat", "image": file.to_value()})
        .as_object()
        .unwrap()
        .clone()
}
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}
fn reference(bytes: &[u8]) -> FileRef {
    FileRef {
        sha256: Sha256Hex::from_digest(&Sha256::digest(bytes).into()),
        size: bytes.len() as u64,
        media_type: "image/png".into(),
        name: Some("cat.png".into()),
    }
}
/// The image field of a record, as the other device reads it.
fn image_of(r: &Replica, note: &str) -> FileRef {
    let rec = r.get(&personal(), &notes(), &id(note)).unwrap().unwrap();
    FileRef::from_value(&rec.fields["image"]).unwrap()
}

#[tokio::test]
async fn an_attached_file_syncs_after_its_record_and_another_device_reads_it() {
    let s = setup().await;
    let (laptop, phone) = (s.replica("laptop.db"), s.replica("phone.db"));
    let remote = s.remote("ada");
    let cat = bytes(200_000, 1);
    let mut events = laptop.file_events();
    let file = laptop
        .attach(&personal(), &cat, "image/png", Some("cat ü.png"))
        .unwrap();
    assert_eq!(
        file,
        FileRef {
            name: Some("cat ü.png".into()),
            ..reference(&cat)
        }
    );
    laptop
        .put(&personal(), &notes(), &id("n1"), with_image(&file))
        .unwrap();
    assert_eq!(
        laptop.file_status(&personal(), &file).unwrap(),
        FileStatus::Local
    );
    let report = sync_space(&laptop, &remote, &personal()).await.unwrap();
    assert_eq!((report.pushed, report.uploaded), (1, 1));
    // Attached, then its progress, then on the server.
    let mut heard = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert_eq!((&e.space, &e.sha256), (&personal(), &file.sha256));
        heard.push(e.status);
    }
    assert_eq!(heard.first(), Some(&FileStatus::Local), "{heard:?}");
    assert_eq!(heard.last(), Some(&FileStatus::Synced), "{heard:?}");
    let sent: Vec<u64> = heard
        .iter()
        .filter_map(|s| match s {
            FileStatus::Uploading { sent, total } if *total == 200_000 => Some(*sent),
            _ => None,
        })
        .collect();
    assert!(
        !sent.is_empty() && sent.windows(2).all(|w| w[0] < w[1]),
        "{heard:?}"
    );
    assert!(
        sent.len() <= 101,
        "one event per percent at most: {}",
        sent.len()
    );
    assert_eq!(
        laptop.file_status(&personal(), &file).unwrap(),
        FileStatus::Synced
    );

    sync_space(&phone, &remote, &personal()).await.unwrap();
    let seen = image_of(&phone, "n1");
    assert_eq!(
        phone.file_status(&personal(), &seen).unwrap(),
        FileStatus::Remote
    );
    let path = phone.file(&remote, &personal(), &seen).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), cat);
    assert_eq!(
        phone.file_status(&personal(), &seen).unwrap(),
        FileStatus::Synced
    );
    // Read again, it comes from the cache: the server is not asked.
    s.server.stop().await;
    assert_eq!(phone.file(&remote, &personal(), &seen).await.unwrap(), path);
}

#[tokio::test]
async fn a_file_not_uploaded_yet_is_missing_then_arrives_with_a_later_sync() {
    let s = setup().await;
    let (laptop, phone) = (s.replica("laptop.db"), s.replica("phone.db"));
    let remote = s.remote("ada");
    let cat = bytes(5_000, 2);
    // The record reaches the server before its bytes (written by hand
    // here; a device whose upload has not run yet does the same).
    laptop
        .put(
            &personal(),
            &notes(),
            &id("n1"),
            with_image(&reference(&cat)),
        )
        .unwrap();
    sync_space(&laptop, &remote, &personal()).await.unwrap();
    sync_space(&phone, &remote, &personal()).await.unwrap();
    let seen = image_of(&phone, "n1");
    let mut events = phone.file_events();
    let e = phone.file(&remote, &personal(), &seen).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(
        phone.file_status(&personal(), &seen).unwrap(),
        FileStatus::Missing
    );
    // Its author uploads it; the phone's next sync fetches it.
    laptop
        .attach(&personal(), &cat, "image/png", Some("cat.png"))
        .unwrap();
    assert_eq!(
        sync_space(&laptop, &remote, &personal())
            .await
            .unwrap()
            .uploaded,
        1
    );
    sync_space(&phone, &remote, &personal()).await.unwrap();
    assert_eq!(
        phone.file_status(&personal(), &seen).unwrap(),
        FileStatus::Synced
    );
    // Missing once (asking again says nothing new), then arrived.
    let mut heard = Vec::new();
    while let Ok(e) = events.try_recv() {
        heard.push(e.status);
    }
    assert_eq!(heard, [FileStatus::Missing, FileStatus::Synced]);
    let path = phone.cached_file(&seen.sha256).unwrap().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), cat);
}

#[tokio::test]
async fn files_attached_offline_upload_once_the_server_is_back() {
    let s = setup().await;
    let laptop = s.replica("laptop.db");
    // Offline: an address nothing listens on.
    let nowhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", nowhere.local_addr().unwrap());
    drop(nowhere);
    let offline = Remote::new(&gone, Arc::new(Token(s.server.token("ada")))).unwrap();
    let cat = bytes(10_000, 3);
    let file = laptop.attach(&personal(), &cat, "image/png", None).unwrap();
    laptop
        .put(&personal(), &notes(), &id("n1"), with_image(&file))
        .unwrap();
    let e = sync_space(&laptop, &offline, &personal())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Offline(_)), "{e}");
    assert_eq!(
        laptop.file_status(&personal(), &file).unwrap(),
        FileStatus::Local
    );
    // Back online.
    let remote = s.remote("ada");
    assert_eq!(
        sync_space(&laptop, &remote, &personal())
            .await
            .unwrap()
            .uploaded,
        1
    );
    let phone = s.replica("phone.db");
    sync_space(&phone, &remote, &personal()).await.unwrap();
    let path = phone.file(&remote, &personal(), &file).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), cat);
}

#[tokio::test]
async fn an_upload_broken_off_is_resumed_from_what_the_server_holds() {
    let s = setup().await;
    let laptop = s.replica("laptop.db");
    let remote = s.remote("ada");
    let cat = bytes(300_000, 4);
    let file = laptop.attach(&personal(), &cat, "image/png", None).unwrap();
    // An earlier try sent 100,000 bytes, then the connection was lost.
    let addr = s.server.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/spaces/user:ada/files/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        file.sha256,
        s.server.token("ada"),
        cat.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&cat[..100_000]).await.unwrap();
    socket.flush().await.unwrap();
    drop(socket);
    // Until the server says it holds them.
    let url = format!("{}/v1/spaces/user:ada/files/{}", s.server.base, file.sha256);
    let mut held = None;
    for _ in 0..100 {
        let h = reqwest::Client::new()
            .head(&url)
            .bearer_auth(s.server.token("ada"))
            .send()
            .await
            .unwrap();
        held = h
            .headers()
            .get("ferry-upload-offset")
            .map(|v| v.to_str().unwrap().to_owned());
        if held.as_deref() == Some("100000") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held.as_deref(), Some("100000"));
    // Only the rest is sent: a copy here spoiled in the part the server
    // holds still uploads whole (sent from 0, it would be refused).
    let cached = laptop.cached_file(&file.sha256).unwrap().unwrap();
    let mut spoiled = cat.clone();
    spoiled[..100_000].fill(0);
    std::fs::write(&cached, &spoiled).unwrap();
    assert_eq!(
        sync_space(&laptop, &remote, &personal())
            .await
            .unwrap()
            .uploaded,
        1
    );
    std::fs::write(&cached, &cat).unwrap();
    let phone = s.replica("phone.db");
    let path = phone.file(&remote, &personal(), &file).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), cat);
}

#[tokio::test]
async fn a_refused_upload_is_failed_with_the_reason_and_the_rest_go_on() {
    // A quota of 50,000 bytes.
    let s = setup_with(50_000).await;
    let laptop = s.replica("laptop.db");
    let remote = s.remote("ada");
    let mut events = laptop.file_events();
    let big = laptop
        .attach(&personal(), &bytes(60_000, 5), "image/png", None)
        .unwrap();
    let small = laptop
        .attach(&personal(), &bytes(1_000, 6), "image/png", None)
        .unwrap();
    let report = sync_space(&laptop, &remote, &personal()).await.unwrap();
    assert_eq!(report.uploaded, 1);
    assert!(matches!(
        laptop.file_status(&personal(), &big).unwrap(),
        FileStatus::Failed { code, .. } if code == "quota_exceeded"
    ));
    let mut refused = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FileStatus::Failed { code, message } = e.status {
            refused.push((e.sha256, code, message.contains("50000")));
        }
    }
    assert_eq!(
        refused,
        [(big.sha256.clone(), "quota_exceeded".into(), true)]
    );
    assert_eq!(
        laptop.file_status(&personal(), &small).unwrap(),
        FileStatus::Synced
    );
    // Not tried again by later syncs.
    assert_eq!(
        sync_space(&laptop, &remote, &personal())
            .await
            .unwrap()
            .uploaded,
        0
    );
    // Bad input is refused at the call and queues nothing.
    assert!(matches!(
        laptop.attach(&personal(), b"x", "not a type", None),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        laptop.attach(&personal(), b"x", "text/plain", Some("a/b")),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn the_cache_keeps_its_bound_but_never_drops_a_pending_upload_and_a_wipe_empties_it() {
    let s = setup().await;
    let laptop = s.replica("laptop.db");
    let remote = s.remote("ada");
    let files: Vec<FileRef> = (0..3)
        .map(|i| {
            laptop
                .attach(&personal(), &bytes(4_000, 10 + i), "image/png", None)
                .unwrap()
        })
        .collect();
    sync_space(&laptop, &remote, &personal()).await.unwrap();
    let phone = s.replica_with(
        "phone.db",
        ReplicaConfig {
            max_file_cache_bytes: 9_000,
            ..ReplicaConfig::default()
        },
    );
    // Pending here, bigger than the whole cache: kept.
    let own = phone
        .attach(&personal(), &bytes(20_000, 20), "image/png", None)
        .unwrap();
    for f in &files {
        phone.file(&remote, &personal(), f).await.unwrap();
    }
    // The oldest download went; the two newest and the pending one stay
    // (a pending upload does not count against the bound).
    assert_eq!(phone.cached_file(&files[0].sha256).unwrap(), None);
    assert!(phone.cached_file(&files[1].sha256).unwrap().is_some());
    assert!(phone.cached_file(&files[2].sha256).unwrap().is_some());
    assert!(phone.cached_file(&own.sha256).unwrap().is_some());
    assert_eq!(
        phone.file_status(&personal(), &own).unwrap(),
        FileStatus::Local
    );

    phone.sign_out(&remote, SignOut::Wipe).await.unwrap();
    assert!(!phone.files_dir().exists());
    assert_eq!(phone.cached_file(&files[2].sha256).unwrap(), None);
    assert_eq!(
        phone.file_status(&personal(), &own).unwrap(),
        FileStatus::Remote
    );
}

#[tokio::test]
async fn files_attached_before_signing_in_upload_to_the_user_s_space() {
    let s = setup().await;
    let laptop = s.replica("laptop.db");
    let anonymous = laptop.personal_space().unwrap();
    let cat = bytes(3_000, 30);
    let file = laptop.attach(&anonymous, &cat, "image/png", None).unwrap();
    laptop
        .put(&anonymous, &notes(), &id("n1"), with_image(&file))
        .unwrap();
    laptop
        .sign_in_with_token(&s.server.base, &s.server.token("ada"))
        .await
        .unwrap();
    assert_eq!(
        laptop.file_status(&personal(), &file).unwrap(),
        FileStatus::Local
    );
    let remote = s.remote("ada");
    let report = sync_space(&laptop, &remote, &personal()).await.unwrap();
    assert_eq!((report.pushed, report.uploaded), (1, 1));
    let phone = s.replica("phone.db");
    sync_space(&phone, &remote, &personal()).await.unwrap();
    let path = phone
        .file(&remote, &personal(), &image_of(&phone, "n1"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), cat);
}

#[tokio::test]
async fn a_viewer_s_attachment_is_refused_for_good_while_the_space_syncs() {
    let s = setup().await;
    let http = reqwest::Client::new();
    let owner = s.server.token("ada");
    http.get(format!("{}/v1/me", s.server.base))
        .bearer_auth(s.server.token("vera"))
        .send()
        .await
        .unwrap();
    let r = http
        .post(format!("{}/v1/spaces", s.server.base))
        .bearer_auth(&owner)
        .json(&json!({"id": "team", "name": "Team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .put(format!("{}/v1/spaces/team/members/vera", s.server.base))
        .bearer_auth(&owner)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let team = SpaceId::new("team").unwrap();
    let viewer = s.replica("vera.db");
    let file = viewer
        .attach(&team, &bytes(1_000, 40), "image/png", None)
        .unwrap();
    // The records of the space sync; the file is failed, with why.
    let report = sync_space(&viewer, &s.remote("vera"), &team).await.unwrap();
    assert_eq!(report.uploaded, 0);
    assert!(matches!(
        viewer.file_status(&team, &file).unwrap(),
        FileStatus::Failed { code, .. } if code == "forbidden"
    ));
}

#[tokio::test]
async fn a_file_attached_from_a_path_is_copied_hashed_and_uploaded() {
    let s = setup().await;
    let (laptop, phone) = (s.replica("laptop.db"), s.replica("phone.db"));
    let remote = s.remote("ada");
    let song = bytes(700_000, 7);
    let source = s.dir.path().join("song.ogg");
    std::fs::write(&source, &song).unwrap();
    let file = laptop
        .attach_path(&personal(), &source, "audio/ogg", None)
        .unwrap();
    assert_eq!(
        file,
        FileRef {
            name: Some("song.ogg".into()),
            media_type: "audio/ogg".into(),
            ..reference(&song)
        }
    );
    // A copy: the original may go.
    std::fs::remove_file(&source).unwrap();
    assert_eq!(
        std::fs::read(laptop.cached_file(&file.sha256).unwrap().unwrap()).unwrap(),
        song
    );
    laptop
        .put(&personal(), &notes(), &id("n1"), with_image(&file))
        .unwrap();
    let report = sync_space(&laptop, &remote, &personal()).await.unwrap();
    assert_eq!(report.uploaded, 1);
    sync_space(&phone, &remote, &personal()).await.unwrap();
    let path = phone
        .file(&remote, &personal(), &image_of(&phone, "n1"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), song);

    // A path that is not there, or a name the server would refuse, is an
    // error that keeps nothing.
    let before = std::fs::read_dir(laptop.files_dir()).unwrap().count();
    assert!(matches!(
        laptop.attach_path(&personal(), &s.dir.path().join("gone"), "audio/ogg", None),
        Err(Error::Invalid(_))
    ));
    std::fs::write(&source, b"x").unwrap();
    assert!(matches!(
        laptop.attach_path(&personal(), &source, "audio/ogg", Some("a/b")),
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        std::fs::read_dir(laptop.files_dir()).unwrap().count(),
        before
    );

    // What a killed attach or a dropped download left goes at the next
    // open, once an hour old; a younger one may be another process's.
    let dir = laptop.files_dir();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for name in ["attach-0011", "abc.download-0022", "attach-young"] {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        if name != "attach-young" {
            f.set_modified(two_hours_ago).unwrap();
        }
    }
    drop(laptop);
    let _again = s.replica("laptop.db");
    assert!(!dir.join("attach-0011").exists());
    assert!(!dir.join("abc.download-0022").exists());
    assert!(dir.join("attach-young").exists());
    assert!(dir.join(file.sha256.as_str()).exists());
}
