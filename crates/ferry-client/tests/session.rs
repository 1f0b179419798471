//! Anonymous use, sign-in by magic link with the claim of anonymous data,
//! token refresh, and sign-out that keeps or wipes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ferry_client::{
    ANONYMOUS_SPACE, Error, Query, Replica, ReplicaConfig, SignOut, request_magic_link, sync_space,
};
use ferry_core::{ClientId, Collection, RecordId};
use ferry_server::auth::mail::MailerConfig;
use ferry_server::testing::{self, Served};
use ferry_server::{AppState, Settings, Store};
use serde_json::{Map, Value, json};

struct Setup {
    base: String,
    store: Arc<dyn Store>,
    mail: tempfile::TempDir,
    dir: tempfile::TempDir,
    _guard: testing::Guard,
    _server: Served,
}

async fn setup(access_ttl_secs: u64) -> Setup {
    let (store, guard) = testing::fresh_store().await;
    let mail = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = Settings::new(ClientId::new("server").unwrap(), base.clone());
    settings.mailer = MailerConfig::Dir(mail.path().to_owned());
    settings.access_ttl_secs = access_ttl_secs;
    let state = AppState::new(store.clone(), settings).await.unwrap();
    let server = Served::start_on(state, listener).await;
    Setup {
        base,
        store,
        mail,
        dir: tempfile::tempdir().unwrap(),
        _guard: guard,
        _server: server,
    }
}

impl Setup {
    /// Requests a link for `email` and returns the token in the new mail.
    async fn link_token(&self, email: &str) -> String {
        let mails = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(self.mail.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        };
        let before = mails();
        request_magic_link(&self.base, email).await.unwrap();
        for _ in 0..100 {
            let new = mails().into_iter().find(|p| !before.contains(p));
            if let Some(text) = new.and_then(|p| std::fs::read_to_string(p).ok())
                && text.contains(email)
                && let Some(at) = text.find("token=")
            {
                return text[at + "token=".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no mail for {email}");
    }

    fn replica(&self) -> Replica {
        Replica::open(self.dir.path().join("r.db"), ReplicaConfig::default()).unwrap()
    }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}
fn notes() -> Collection {
    Collection::new("notes").unwrap()
}
fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

#[tokio::test]
async fn anonymous_data_is_claimed_at_first_sign_in() {
    let s = setup(900).await;
    let r = s.replica();
    assert_eq!(r.user().unwrap(), None);
    let anon = r.personal_space().unwrap();
    assert_eq!(anon.as_str(), ANONYMOUS_SPACE);
    r.put(
        &anon,
        &notes(),
        &id("n1"),
        fields(json!({"text": "before signing up"})),
    )
    .unwrap();
    r.put(&anon, &notes(), &id("n2"), fields(json!({"text": "gone"})))
        .unwrap();
    r.delete(&anon, &notes(), &id("n2")).unwrap();
    // Nothing of it leaves the device before sign-in.
    let nobody = r.remote(&s.base).unwrap();
    assert_eq!(sync_space(&r, &nobody, &anon).await.unwrap().pushed, 0);

    let token = s.link_token("ada@example.com").await;
    let user = r.sign_in_with_link(&s.base, &token).await.unwrap();
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));
    assert_eq!(r.user().unwrap(), Some(user.clone()));
    let personal = r.personal_space().unwrap();
    assert_eq!(personal.as_str(), format!("user:{}", user.id));
    assert!(r.list(&anon, &notes(), &Query::new()).unwrap().is_empty());
    assert_eq!(r.list(&personal, &notes(), &Query::new()).unwrap().len(), 1);
    assert_eq!(r.pending().unwrap(), 3);

    let remote = r.remote(&s.base).unwrap();
    let report = sync_space(&r, &remote, &personal).await.unwrap();
    assert_eq!(report.pushed, 3);
    let n1 = s
        .store
        .record(&personal, &notes(), &id("n1"))
        .await
        .unwrap()
        .unwrap();
    assert!(n1.fields.get().contains("before signing up"));
    let n2 = s
        .store
        .record(&personal, &notes(), &id("n2"))
        .await
        .unwrap()
        .unwrap();
    assert!(n2.deleted.is_some());

    // Another user cannot sign in over this one.
    let other = s.link_token("bo@example.com").await;
    let refused = r.sign_in_with_link(&s.base, &other).await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_rotated() {
    let s = setup(1).await;
    let r = s.replica();
    let token = s.link_token("cy@example.com").await;
    r.sign_in_with_link(&s.base, &token).await.unwrap();
    let personal = r.personal_space().unwrap();
    let remote = r.remote(&s.base).unwrap();
    r.put(&personal, &notes(), &id("n"), fields(json!({"a": 1})))
        .unwrap();
    sync_space(&r, &remote, &personal).await.unwrap();
    let first = remote.credentials().token().unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    r.patch(&personal, &notes(), &id("n"), fields(json!({"a": 2})))
        .unwrap();
    // A second handle (another process, say) shares the session.
    let other = s.replica();
    let other_remote = other.remote(&s.base).unwrap();
    sync_space(&r, &remote, &personal).await.unwrap();
    let second = remote.credentials().token().unwrap();
    assert_ne!(first, second);
    assert_eq!(other_remote.credentials().token().unwrap(), second);
    sync_space(&other, &other_remote, &personal).await.unwrap();
    assert_eq!(r.pending().unwrap(), 0);
}

/// Every byte of the replica's files.
fn on_disk(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn signing_out_wipes_everything_of_the_user_or_keeps_it() {
    let s = setup(900).await;
    let r = s.replica();
    let token = s.link_token("di@example.com").await;
    r.sign_in_with_link(&s.base, &token).await.unwrap();
    let personal = r.personal_space().unwrap();
    let remote = r.remote(&s.base).unwrap();
    for i in 0..50 {
        r.put(
            &personal,
            &notes(),
            &id(&format!("n{i}")),
            fields(json!({"text": format!("secret-diary-{i}")})),
        )
        .unwrap();
    }
    sync_space(&r, &remote, &personal).await.unwrap();
    r.put(
        &personal,
        &notes(),
        &id("late"),
        fields(json!({"text": "secret-unsynced"})),
    )
    .unwrap();
    assert!(contains(&on_disk(s.dir.path()), "secret-diary-7"));
    let before = (r.client_id(), r.hlc().unwrap());

    let discarded = r.sign_out(&remote, SignOut::Wipe).await.unwrap();
    assert_eq!(discarded, 1);
    assert_eq!(r.user().unwrap(), None);
    // A wiped replica is a new device: a new client id (the server gives
    // each to one person), its clock moved to it, never back.
    let after = (r.client_id(), r.hlc().unwrap());
    assert_ne!(after.0, before.0);
    assert_eq!(after.1.node(), &after.0);
    assert_eq!(
        (after.1.physical(), after.1.logical()),
        (before.1.physical(), before.1.logical())
    );
    let reopened = Replica::open(s.dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    assert_eq!(reopened.client_id(), after.0);
    drop(reopened);
    assert!(
        r.list(&personal, &notes(), &Query::new())
            .unwrap()
            .is_empty()
    );
    let disk = on_disk(s.dir.path());
    for marker in ["secret-diary-7", "secret-unsynced", "di@example.com"] {
        assert!(!contains(&disk, marker), "{marker} is still on disk");
    }
    // No session is left in the replica.
    let again = r.remote(&s.base).unwrap();
    assert_eq!(again.credentials().token(), None);

    // Keeping: the data stays for the next sign-in.
    let token = s.link_token("di@example.com").await;
    r.sign_in_with_link(&s.base, &token).await.unwrap();
    let remote = r.remote(&s.base).unwrap();
    sync_space(&r, &remote, &personal).await.unwrap();
    assert_eq!(
        r.list(&personal, &notes(), &Query::new()).unwrap().len(),
        50
    );
    r.sign_out(&remote, SignOut::Keep).await.unwrap();
    assert_eq!(r.user().unwrap(), None);
    assert_eq!(
        r.list(&personal, &notes(), &Query::new()).unwrap().len(),
        50
    );

    // Another person on the wiped-then-kept device: wiped again, the
    // replica syncs for them under a new id (the old one stays di's).
    let token = s.link_token("di@example.com").await;
    r.sign_in_with_link(&s.base, &token).await.unwrap();
    let remote = r.remote(&s.base).unwrap();
    r.sign_out(&remote, SignOut::Wipe).await.unwrap();
    let token = s.link_token("eve@example.com").await;
    r.sign_in_with_link(&s.base, &token).await.unwrap();
    let eves = r.personal_space().unwrap();
    r.put(&eves, &notes(), &id("e"), fields(json!({"text": "eve's"})))
        .unwrap();
    let remote = r.remote(&s.base).unwrap();
    let report = sync_space(&r, &remote, &eves).await.unwrap();
    assert_eq!((report.pushed, report.rejected), (1, 0));
}
