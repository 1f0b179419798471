//! Live queries fed by pulls from a real server: what a pull brings, and
//! the status of a space's first sync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Op, Order, Query, QueryStatus, sync_space};
use serde_json::json;

mod served;
use served::*;

#[tokio::test]
async fn a_watch_follows_what_a_pull_brings() {
    let s = setup().await;
    let personal = space("user:wa");
    let remote = remote_for(&s.server, "wa");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    let open = Query::new()
        .filter("done", Op::Eq, false)
        .order_by("title", Order::Asc);
    let mut watch = b.watch(&personal, &todos(), &open).unwrap();
    for i in 0..20 {
        a.put(
            &personal,
            &todos(),
            &id(&format!("t{i:02}")),
            fields(json!({"title": format!("T{i:02}"), "done": i % 2 == 1})),
        )
        .unwrap();
    }
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    let now = watch.changed().await;
    assert_eq!(now.rows.len(), 10);
    assert_eq!(now.rows[0].fields["title"], "T00");
    a.patch(
        &personal,
        &todos(),
        &id("t00"),
        fields(json!({"done": true})),
    )
    .unwrap();
    sync_space(&a, &remote, &personal).await.unwrap();
    sync_space(&b, &remote, &personal).await.unwrap();
    let now = watch.changed().await;
    assert_eq!(now.rows.len(), 9);
    assert_eq!(now.rows[0].fields["title"], "T02");
}

#[tokio::test]
async fn a_watch_is_loading_until_its_space_first_synced_then_complete() {
    let s = setup().await;
    let personal = space("user:ws");
    let remote = remote_for(&s.server, "ws");
    let (a, b) = (s.replica("a.db"), s.replica("b.db"));
    // A space of this device alone is complete at once.
    let local = b
        .watch(&space("local:anonymous"), &todos(), &Query::new())
        .unwrap();
    assert_eq!(local.current().status, QueryStatus::Complete);
    // A space the server has nothing of: loading, then one result saying
    // complete, with no rows.
    let mut empty = b.watch(&personal, &todos(), &Query::new()).unwrap();
    assert_eq!(empty.current().status, QueryStatus::Loading);
    sync_space(&b, &remote, &personal).await.unwrap();
    let now = empty.changed().await;
    assert_eq!((now.status, now.rows.len()), (QueryStatus::Complete, 0));
    assert_eq!(now.error, None);
    // A replica whose first sync brings records: one result holds them
    // and says complete.
    for i in 0..3 {
        a.put(
            &personal,
            &todos(),
            &id(&format!("t{i}")),
            fields(json!({"title": format!("T{i}")})),
        )
        .unwrap();
    }
    sync_space(&a, &remote, &personal).await.unwrap();
    let c = s.replica("c.db");
    let mut watch = c.watch(&personal, &todos(), &Query::new()).unwrap();
    assert_eq!(watch.current().status, QueryStatus::Loading);
    sync_space(&c, &remote, &personal).await.unwrap();
    let now = watch.changed().await;
    assert_eq!((now.status, now.rows.len()), (QueryStatus::Complete, 3));
    assert!(
        !watch.receiver().has_changed().unwrap(),
        "one result, not two"
    );
    // It stays complete: after a local write, and for a new watch on the
    // replica opened again.
    c.delete(&personal, &todos(), &id("t0")).unwrap();
    let now = watch.changed().await;
    assert_eq!((now.status, now.rows.len()), (QueryStatus::Complete, 2));
    drop((watch, c));
    let again = s.replica("c.db");
    let watch = again.watch(&personal, &todos(), &Query::new()).unwrap();
    assert_eq!(watch.current().status, QueryStatus::Complete);
}
