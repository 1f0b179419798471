//! The client against a real server on a socket (127.0.0.1, port 0), on the
//! backend `FERRY_TEST_BACKEND` names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ferry_client::{Error, Op, Order, Query, Remote, Resolution, Token, sync_space};
use ferry_core::UserId;
use ferry_server::clock::wall_ms;
use serde_json::{Value, json};

mod served;
use served::*;

#[tokio::test]
async fn two_replicas_converge_after_concurrent_offline_edits() {
    let s = setup().await;
    let personal = space("user:ada");
    let (laptop, phone) = (s.replica("laptop.db"), s.replica("phone.db"));
    let remote = remote_for(&s.server, "ada");

    laptop
        .put(
            &personal,
            &todos(),
            &id("milk"),
            fields(json!({"title": "Milk", "done": false})),
        )
        .unwrap();
    sync_space(&laptop, &remote, &personal).await.unwrap();
    sync_space(&phone, &remote, &personal).await.unwrap();
    assert_eq!(
        phone
            .get(&personal, &todos(), &id("milk"))
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"title": "Milk", "done": false}))
    );

    // Offline, both edit: the same field (the later write wins) and
    // different fields (both kept), and each adds a record.
    laptop
        .patch(
            &personal,
            &todos(),
            &id("milk"),
            fields(json!({"title": "Oat milk"})),
        )
        .unwrap();
    phone
        .patch(
            &personal,
            &todos(),
            &id("milk"),
            fields(json!({"done": true})),
        )
        .unwrap();
    phone
        .patch(
            &personal,
            &todos(),
            &id("milk"),
            fields(json!({"title": "Soy milk"})),
        )
        .unwrap();
    laptop
        .put(
            &personal,
            &todos(),
            &id("bread"),
            fields(json!({"title": "Bread"})),
        )
        .unwrap();
    phone
        .put(
            &personal,
            &todos(),
            &id("eggs"),
            fields(json!({"title": "Eggs"})),
        )
        .unwrap();
    assert_eq!(laptop.pending().unwrap(), 2);

    let report = sync_space(&laptop, &remote, &personal).await.unwrap();
    assert_eq!(report.pushed, 2);
    sync_space(&phone, &remote, &personal).await.unwrap();
    sync_space(&laptop, &remote, &personal).await.unwrap();
    for replica in [&laptop, &phone] {
        assert_eq!(replica.pending().unwrap(), 0);
        let all = replica.list(&personal, &todos(), &Query::new()).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["bread", "eggs", "milk"]);
        assert_eq!(
            all[2].fields,
            fields(json!({"title": "Soy milk", "done": true}))
        );
    }
    assert_eq!(
        laptop.cursor(&personal).unwrap(),
        phone.cursor(&personal).unwrap()
    );
}

#[tokio::test]
async fn a_write_made_while_the_server_is_down_syncs_when_it_is_back() {
    let s = setup().await;
    let personal = space("user:bo");
    let replica = s.replica("r.db");
    let base = s.server.base.clone();
    let token = s.server.token("bo");
    s.server.stop().await;

    replica
        .put(
            &personal,
            &todos(),
            &id("t1"),
            fields(json!({"title": "offline"})),
        )
        .unwrap();
    let remote = Remote::new(&base, Arc::new(Token(token))).unwrap();
    let down = sync_space(&replica, &remote, &personal).await.unwrap_err();
    assert!(matches!(down, Error::Offline(_)), "{down:?}");
    assert!(down.is_transient());
    assert_eq!(replica.pending().unwrap(), 1);
    // Still fully usable offline.
    assert!(
        replica
            .get(&personal, &todos(), &id("t1"))
            .unwrap()
            .is_some()
    );

    let server = start(s.store.clone()).await;
    let report = sync_space(&replica, &remote_for(&server, "bo"), &personal)
        .await
        .unwrap();
    assert_eq!(report.pushed, 1);
    assert_eq!(replica.pending().unwrap(), 0);
    let stored = s
        .store
        .record(&personal, &todos(), &id("t1"))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.fields.get().contains("offline"));
}

#[tokio::test]
async fn a_batch_sent_but_never_acknowledged_is_sent_again_under_its_id() {
    let s = setup().await;
    let personal = space("user:cy");
    let replica = s.replica("r.db");
    let remote = remote_for(&s.server, "cy");
    // A first sync pulls before it sends anything.
    sync_space(&replica, &remote, &personal).await.unwrap();
    replica
        .put(&personal, &todos(), &id("t1"), fields(json!({"n": 1})))
        .unwrap();
    // The batch goes out, and the answer is lost (a crash, a timeout).
    let sent = replica.next_batch(&personal).unwrap().unwrap();
    let request = ferry_core::protocol::SyncRequest {
        client_id: replica.client_id().clone(),
        batch_id: Some(sent.batch_id.clone()),
        cursor: 0,
        changes: sent.changes.clone(),
        limit: None,
        conflict_cursor: None,
    };
    let first = remote.sync(&personal, &request).await.unwrap();
    assert_eq!(first.applied, 1);
    // A write made meanwhile joins a later batch, never the one in flight.
    replica
        .patch(&personal, &todos(), &id("t1"), fields(json!({"m": 2})))
        .unwrap();
    let again = replica.next_batch(&personal).unwrap().unwrap();
    assert_eq!(again.batch_id, sent.batch_id);
    assert_eq!(again.changes, sent.changes);

    let report = sync_space(&replica, &remote, &personal).await.unwrap();
    assert_eq!(report.pushed, 2);
    let metrics = s.server.state.metrics.encode().unwrap();
    assert!(
        metrics.contains("ferry_batches_replayed_total 1"),
        "{metrics}"
    );
    assert_eq!(
        replica
            .get(&personal, &todos(), &id("t1"))
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"n": 1, "m": 2}))
    );
}

#[tokio::test]
async fn conflicts_reach_the_inbox_and_resolve() {
    let s = setup().await;
    let personal = space("user:di");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "di");
    // b writes first by clock but syncs last: its write loses.
    b.put(
        &personal,
        &todos(),
        &id("t"),
        fields(json!({"title": "from b"})),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.put(
        &personal,
        &todos(),
        &id("t"),
        fields(json!({"title": "from a"})),
    )
    .unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    let report = sync_space(&b, &remote, &personal).await.unwrap();
    assert_eq!(report.conflicts, 1);
    let inbox = b.conflicts().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].conflict.yours.as_ref().unwrap().value,
        json!("from b")
    );
    assert_eq!(
        inbox[0].conflict.winner.as_ref().unwrap().value,
        json!("from a")
    );
    // b holds the winner now.
    assert_eq!(
        b.get(&personal, &todos(), &id("t"))
            .unwrap()
            .unwrap()
            .fields["title"],
        json!("from a")
    );

    // Keep mine: written again, it wins everywhere.
    b.resolve(inbox[0].n, Resolution::KeepMine).unwrap();
    assert!(b.conflicts().unwrap().is_empty());
    sync_space(&b, &remote, &personal).await.unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    assert_eq!(
        a.get(&personal, &todos(), &id("t"))
            .unwrap()
            .unwrap()
            .fields["title"],
        json!("from b")
    );
    assert!(matches!(
        b.resolve(999, Resolution::TakeTheirs),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn deletes_sync_and_stay_deleted() {
    let s = setup().await;
    let personal = space("user:ed");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "ed");
    a.put(&personal, &todos(), &id("t"), fields(json!({"title": "x"})))
        .unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    b.delete(&personal, &todos(), &id("t")).unwrap();
    // a edits after b's delete, offline.
    a.patch(&personal, &todos(), &id("t"), fields(json!({"title": "y"})))
        .unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    let report = sync_space(&a, &remote, &personal).await.unwrap();
    assert_eq!(report.conflicts, 1);
    for r in [&a, &b] {
        sync_space(r, &remote, &personal).await.unwrap();
        assert_eq!(r.get(&personal, &todos(), &id("t")).unwrap(), None);
    }
    assert!(matches!(
        a.put(&personal, &todos(), &id("t"), fields(json!({"title": "z"}))),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn a_space_that_is_not_yours_is_refused_and_the_outbox_kept() {
    let s = setup().await;
    let theirs = space("user:someone-else");
    let replica = s.replica("r.db");
    replica
        .put(&theirs, &todos(), &id("t"), fields(json!({"x": 1})))
        .unwrap();
    let err = sync_space(&replica, &remote_for(&s.server, "fi"), &theirs)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.code(), Some("not_found"));
    assert!(!err.is_transient());
    assert_eq!(replica.pending().unwrap(), 1);
}

#[tokio::test]
async fn local_queries_filter_and_order() {
    let s = setup().await;
    let personal = space("user:gu");
    let r = s.replica("r.db");
    for (i, (title, done)) in [("b", false), ("a", true), ("c", false)].iter().enumerate() {
        r.put(
            &personal,
            &todos(),
            &id(&format!("t{i}")),
            fields(json!({"title": title, "done": done, "rank": i})),
        )
        .unwrap();
    }
    let open = r
        .list(
            &personal,
            &todos(),
            &Query::new()
                .filter("done", Op::Eq, false)
                .order_by("title", Order::Desc),
        )
        .unwrap();
    let titles: Vec<&Value> = open.iter().map(|x| &x.fields["title"]).collect();
    assert_eq!(titles, [&json!("c"), &json!("b")]);
    let ranked = r
        .list(
            &personal,
            &todos(),
            &Query::new().filter("rank", Op::Ge, 1).limit(1),
        )
        .unwrap();
    assert_eq!(ranked.len(), 1);
    assert_eq!(ranked[0].id.as_str(), "t1");
    assert!(matches!(
        r.list(
            &personal,
            &todos(),
            &Query::new().filter("bad-name", Op::Eq, 1)
        ),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn an_expired_cursor_resyncs_and_drops_what_the_server_forgot() {
    let s = setup().await;
    let personal = space("user:ha");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let remote = remote_for(&s.server, "ha");
    for name in ["x", "y"] {
        a.put(
            &personal,
            &todos(),
            &id(name),
            fields(json!({"title": name})),
        )
        .unwrap();
    }
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    // b deletes x; the tombstone is compacted before a hears of it.
    b.delete(&personal, &todos(), &id("x")).unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    let report = s.store.compact(wall_ms() + 60_000).await.unwrap();
    assert_eq!(report.spaces.len(), 1);

    // a wrote meanwhile; its batch is refused with 410, then sent again
    // with the resync, and kept.
    a.put(&personal, &todos(), &id("z"), fields(json!({"title": "z"})))
        .unwrap();
    let mut changes = a.subscribe();
    let report = sync_space(&a, &remote, &personal).await.unwrap();
    assert!(report.resynced);
    assert_eq!(report.pushed, 1);
    let ids: Vec<String> = a
        .list(&personal, &todos(), &Query::new())
        .unwrap()
        .into_iter()
        .map(|r| r.id.into_string())
        .collect();
    assert_eq!(ids, ["y", "z"]);
    // Apps hear that x is gone.
    let mut heard = Vec::new();
    while let Ok(c) = changes.try_recv() {
        heard.push(c.id.into_string());
    }
    assert!(heard.contains(&"x".to_owned()), "{heard:?}");
    sync_space(&b, &remote, &personal).await.unwrap();
    assert!(b.get(&personal, &todos(), &id("z")).unwrap().is_some());
}

#[tokio::test]
async fn changes_refused_for_good_are_set_aside_and_the_server_s_copy_restored() {
    let s = setup().await;
    let team = space("team");
    let (alice_id, bob_id) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    s.store.ensure_user(&alice_id).await.unwrap();
    s.store.ensure_user(&bob_id).await.unwrap();
    s.store
        .create_space(&team, "Team", &alice_id)
        .await
        .unwrap();
    s.store
        .set_member(&team, &bob_id, ferry_core::Role::Viewer)
        .await
        .unwrap();
    let (alice, bob) = (s.replica("alice.db"), s.replica("bob.db"));
    alice
        .put(
            &team,
            &todos(),
            &id("t"),
            fields(json!({"title": "from alice"})),
        )
        .unwrap();
    sync_space(&alice, &remote_for(&s.server, "alice"), &team)
        .await
        .unwrap();
    let bob_remote = remote_for(&s.server, "bob");
    sync_space(&bob, &bob_remote, &team).await.unwrap();

    // Bob may only read: his edits are refused. A watch sees the server's
    // copy come back (the rejection updates it after its transaction).
    let watch = bob.watch(&team, &todos(), &Query::new()).unwrap();
    bob.patch(
        &team,
        &todos(),
        &id("t"),
        fields(json!({"title": "from bob"})),
    )
    .unwrap();
    bob.put(&team, &todos(), &id("u"), fields(json!({"title": "new"})))
        .unwrap();
    let report = sync_space(&bob, &bob_remote, &team).await.unwrap();
    assert_eq!(report.rejected, 2);
    assert_eq!(bob.pending().unwrap(), 0);
    let rejected = bob.rejected().unwrap();
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected
            .iter()
            .all(|r| r.code == "forbidden" && r.space == team)
    );
    // The server's copy is back; what it never had is gone.
    assert_eq!(
        bob.get(&team, &todos(), &id("t")).unwrap().unwrap().fields["title"],
        json!("from alice")
    );
    assert_eq!(bob.get(&team, &todos(), &id("u")).unwrap(), None);
    let shown = watch.current();
    assert_eq!(shown.rows.len(), 1);
    assert_eq!(shown.rows[0].fields["title"], json!("from alice"));
    assert_eq!(
        sync_space(&bob, &bob_remote, &team).await.unwrap().rejected,
        0
    );
    bob.dismiss_rejected(rejected[0].n).unwrap();
    assert_eq!(bob.rejected().unwrap().len(), 1);
}
