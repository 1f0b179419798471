//! Deletes against a real server: a record deleted and compacted while a
//! replica was away, a pulled delete and the pending changes to its record,
//! and a batch sent from cursor 0 after a delete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Query, Replica, sync_space};
use ferry_core::SpaceId;
use ferry_server::clock::wall_ms;
use serde_json::json;

mod served;
use served::*;

/// The record ids live in `r`.
fn live(r: &Replica, s: &SpaceId) -> Vec<String> {
    r.list(s, &todos(), &Query::new())
        .unwrap()
        .into_iter()
        .map(|r| r.id.into_string())
        .collect()
}

/// Whether `r`'s inbox holds a `record_deleted` conflict for `record`.
fn told_deleted(r: &Replica, record: &str) -> bool {
    r.conflicts().unwrap().iter().any(|c| {
        c.conflict.kind == ferry_core::ConflictKind::RecordDeleted
            && c.conflict.id.as_str() == record
    })
}

#[tokio::test]
async fn a_change_to_a_record_deleted_and_compacted_while_away_does_not_bring_it_back() {
    let s = setup().await;
    let personal = space("user:ia");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "ia");
    a.put(&personal, &todos(), &id("x"), fields(json!({"title": "x"})))
        .unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    // a edits x while away; b deletes it; the tombstone is compacted.
    a.patch(&personal, &todos(), &id("x"), fields(json!({"done": true})))
        .unwrap();
    b.delete(&personal, &todos(), &id("x")).unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    s.store.compact(wall_ms() + 60_000).await.unwrap();

    let report = sync_space(&a, &remote, &personal).await.unwrap();
    assert!(report.resynced);
    assert_eq!(a.pending().unwrap(), 0);
    assert!(live(&a, &personal).is_empty(), "{:?}", live(&a, &personal));
    assert!(told_deleted(&a, "x"), "{:?}", a.conflicts().unwrap());
    let on_server = s.store.record(&personal, &todos(), &id("x")).await.unwrap();
    assert!(on_server.is_none(), "x came back on the server");
}

#[tokio::test]
async fn a_pulled_delete_drops_the_pending_changes_to_its_record() {
    let s = setup().await;
    let personal = space("user:ja");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "ja");
    a.put(&personal, &todos(), &id("x"), fields(json!({"title": "x"})))
        .unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    b.delete(&personal, &todos(), &id("x")).unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    // a edits x, then hears of the delete before its edit leaves (a pull
    // stored while the edit waits): the edit is dropped, never sent, so a
    // compaction of the tombstone cannot let it bring x back.
    a.patch(&personal, &todos(), &id("x"), fields(json!({"done": true})))
        .unwrap();
    let request = ferry_core::protocol::SyncRequest {
        client_id: a.client_id().clone(),
        batch_id: None,
        cursor: a.cursor(&personal).unwrap(),
        changes: vec![],
        limit: None,
        conflict_cursor: None,
    };
    let answer = remote.sync(&personal, &request).await.unwrap();
    let report = a.store_answer(&personal, None, answer).unwrap();
    assert_eq!(report.conflicts, 1);
    assert_eq!(a.pending().unwrap(), 0);
    assert!(told_deleted(&a, "x"));
    s.store.compact(wall_ms() + 60_000).await.unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    assert!(
        s.store
            .record(&personal, &todos(), &id("x"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(live(&a, &personal).is_empty());
}

#[tokio::test]
async fn an_unanswered_batch_sent_from_0_cannot_bring_back_what_was_deleted_since() {
    let s = setup().await;
    let personal = space("user:ka");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "ka");
    // A first sync with changes waiting pulls before it sends anything.
    a.put(&personal, &todos(), &id("w"), fields(json!({"title": "w"})))
        .unwrap();
    assert!(a.next_batch(&personal).unwrap().is_none());
    a.delete(&personal, &todos(), &id("w")).unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    assert_eq!(a.pending().unwrap(), 0);
    // In a fresh space, a's batch creating x reaches the server from
    // cursor 0, but its answer is lost.
    let fresh = space("fresh");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/spaces", s.server.base))
        .bearer_auth(s.server.token("ka"))
        .json(&json!({"id": "fresh", "name": "fresh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    sync_space(&a, &remote, &fresh).await.unwrap();
    assert_eq!(a.cursor(&fresh).unwrap(), 0);
    a.put(&fresh, &todos(), &id("x"), fields(json!({"title": "x"})))
        .unwrap();
    let sent = a.next_batch(&fresh).unwrap().unwrap();
    let request = ferry_core::protocol::SyncRequest {
        client_id: a.client_id().clone(),
        batch_id: Some(sent.batch_id.clone()),
        cursor: 0,
        changes: sent.changes.clone(),
        limit: None,
        conflict_cursor: None,
    };
    assert_eq!(remote.sync(&fresh, &request).await.unwrap().applied, 1);
    // b deletes x, the tombstone is compacted; a edits x meanwhile.
    sync_space(&b, &remote, &fresh).await.unwrap();
    b.delete(&fresh, &todos(), &id("x")).unwrap();
    sync_space(&b, &remote, &fresh).await.unwrap();
    s.store.compact(wall_ms() + 60_000).await.unwrap();
    a.patch(&fresh, &todos(), &id("x"), fields(json!({"done": true})))
        .unwrap();

    // a's batch goes again from cursor 0: refused with 410, so a pulls
    // first, sends the batch again (the server answers it from its
    // record), and learns x is gone: its edit is dropped, not sent.
    let report = sync_space(&a, &remote, &fresh).await.unwrap();
    assert!(report.resynced);
    assert_eq!(a.pending().unwrap(), 0);
    assert!(told_deleted(&a, "x"), "{:?}", a.conflicts().unwrap());
    assert!(live(&a, &fresh).is_empty(), "{:?}", live(&a, &fresh));
    assert!(
        s.store
            .record(&fresh, &todos(), &id("x"))
            .await
            .unwrap()
            .is_none(),
        "x came back on the server"
    );
}
