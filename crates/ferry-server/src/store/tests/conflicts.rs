//! Storage tests of conflict reports for replicas whose stored writes a
//! concurrent write replaced: stored with the commit, delivered with the
//! page that covers them to that replica and user only, bounded by bytes,
//! and compacted with the horizon.

use std::sync::Arc;

use ferry_core::{Change, ClientId, ConflictKind, Hlc, UserId};
use serde_json::{Value, json};

use super::*;
use crate::store::delivery::ConflictsFor;
use crate::store::{Batch, PullPage, PullQuery, StoreError};

/// An upsert of one field whose writer had seen `base` there.
fn seen(id: &str, field: &str, value: Value, h: Hlc, base: Option<Hlc>) -> Change {
    let mut change = upsert(id, field, value, h);
    if let Change::Upsert { base: b, .. } = &mut change {
        *b = Some([(FieldName::new(field).unwrap(), base)].into());
    }
    change
}

/// A pull of everything after `after` with the reports of `client` as
/// user `writer`.
async fn pull_as(store: &dyn Store, s: &SpaceId, client: &str, who: &str, after: u64) -> PullPage {
    store
        .pull(
            s,
            PullQuery {
                cursor: after,
                limit: 10_000,
                collections: None,
                conflicts: Some(ConflictsFor {
                    client_id: ClientId::new(client).unwrap(),
                    user: UserId::new(who).unwrap(),
                    after,
                }),
            },
        )
        .await
        .unwrap()
}

/// `x = {"title": "orig"}`, then A's write "A" (seq 2) and B's "B" (seq
/// 3), neither having seen the other's.
async fn crossed(store: &dyn Store) -> SpaceId {
    let s = orig(store).await;
    let a = seen("x", "title", json!("A"), hlc(5, "a"), Some(hlc(1, "o")));
    push(store, &s, "a", "1", vec![a]).await;
    let b = seen("x", "title", json!("B"), hlc(6, "b"), Some(hlc(1, "o")));
    push(store, &s, "b", "1", vec![b]).await;
    s
}

/// `x` holds `{"title": "orig"}`, written by replica `o`.
async fn orig(store: &dyn Store) -> SpaceId {
    let s = team(store).await;
    push(
        store,
        &s,
        "o",
        "1",
        vec![upsert("x", "title", json!("orig"), hlc(1, "o"))],
    )
    .await;
    s
}

pub async fn a_write_replaced_unseen_is_reported_to_its_author_once(store: Arc<dyn Store>) {
    let s = orig(store.as_ref()).await;
    let a = seen(
        "x",
        "title",
        json!("A older"),
        hlc(5, "a"),
        Some(hlc(1, "o")),
    );
    push(store.as_ref(), &s, "a", "1", vec![a]).await;
    let after_a = 2;
    // B had not seen A's write: A lost, and is told at its next pull.
    let b = seen(
        "x",
        "title",
        json!("B newer"),
        hlc(6, "b"),
        Some(hlc(1, "o")),
    );
    let outcome = push(store.as_ref(), &s, "b", "1", vec![b]).await;
    assert!(outcome.conflicts.is_empty(), "the winner is told nothing");
    let page = pull_as(store.as_ref(), &s, "a", "writer", after_a).await;
    assert_eq!(page.conflicts.len(), 1);
    let c = &page.conflicts[0];
    assert_eq!(c.kind, ConflictKind::StaleWrite);
    assert_eq!(c.yours.as_ref().unwrap().value, json!("A older"));
    assert_eq!(c.winner.as_ref().unwrap().value, json!("B newer"));
    // Once past it, never again; never to the winner, the first writer,
    // or another user under A's client id.
    assert!(
        pull_as(store.as_ref(), &s, "a", "writer", page.cursor)
            .await
            .conflicts
            .is_empty()
    );
    for (client, who) in [("b", "writer"), ("o", "writer"), ("a", "someone-else")] {
        let page = pull_as(store.as_ref(), &s, client, who, after_a).await;
        assert!(page.conflicts.is_empty(), "{client} as {who}");
    }
    // A pull from 0 with the reports taken up to the head gets none again.
    let mut q = all(0);
    q.conflicts = Some(ConflictsFor {
        client_id: ClientId::new("a").unwrap(),
        user: user("writer"),
        after: page.cursor,
    });
    assert!(store.pull(&s, q).await.unwrap().conflicts.is_empty());
}

pub async fn a_plain_edit_and_a_write_without_bases_report_nothing(store: Arc<dyn Store>) {
    let s = orig(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![seen(
            "x",
            "title",
            json!("A"),
            hlc(5, "a"),
            Some(hlc(1, "o")),
        )],
    )
    .await;
    // B saw A's value: a plain edit.
    push(
        store.as_ref(),
        &s,
        "b",
        "1",
        vec![seen(
            "x",
            "title",
            json!("B"),
            hlc(6, "b"),
            Some(hlc(5, "a")),
        )],
    )
    .await;
    // C says nothing of what it saw (an older client): as before.
    push(
        store.as_ref(),
        &s,
        "c",
        "1",
        vec![upsert("x", "title", json!("C"), hlc(7, "c"))],
    )
    .await;
    for client in ["a", "b", "c", "o"] {
        assert!(
            pull_as(store.as_ref(), &s, client, "writer", 0)
                .await
                .conflicts
                .is_empty()
        );
    }
    // A value written over REST (no batch, the server's node) has no
    // replica to tell.
    let rest = Batch {
        user: user("writer"),
        client_id: ClientId::new("srv").unwrap(),
        batch_id: None,
        cursor: None,
        changes: vec![upsert("y", "title", json!("rest"), hlc(8, "srv"))],
        schema: None,
        actor: None,
    };
    store.push(&s, rest).await.unwrap();
    push(
        store.as_ref(),
        &s,
        "d",
        "1",
        vec![seen("y", "title", json!("D"), hlc(9, "d"), None)],
    )
    .await;
    assert!(
        pull_as(store.as_ref(), &s, "srv", "writer", 0)
            .await
            .conflicts
            .is_empty()
    );
}

pub async fn a_delete_reports_the_values_its_author_had_not_seen(store: Arc<dyn Store>) {
    let s = orig(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![seen("x", "note", json!("LOSTWRITE-123"), hlc(5, "a"), None)],
    )
    .await;
    let mut del = delete("x", hlc(6, "b"));
    if let Change::Delete { base, .. } = &mut del {
        *base = Some([(FieldName::new("title").unwrap(), Some(hlc(1, "o")))].into());
    }
    push(store.as_ref(), &s, "b", "1", vec![del]).await;
    let page = pull_as(store.as_ref(), &s, "a", "writer", 2).await;
    assert_eq!(page.conflicts.len(), 1);
    let c = &page.conflicts[0];
    assert_eq!(c.kind, ConflictKind::RecordDeleted);
    assert_eq!(
        Value::Object(ferry_core::conflict::restorable(c)),
        json!({"note": "LOSTWRITE-123"})
    );
    assert_eq!(c.winner.as_ref().unwrap().hlc, hlc(6, "b"));
    // The title the deleting replica had seen tells its author nothing.
    assert!(
        pull_as(store.as_ref(), &s, "o", "writer", 0)
            .await
            .conflicts
            .is_empty()
    );
}

pub async fn reports_fill_a_page_by_bytes(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let big = "x".repeat(900 * 1024);
    // Two records of A's, 4.5 MB each, then both replaced unseen by B.
    for (i, id) in ["p", "q"].iter().enumerate() {
        let changes = (0..5)
            .map(|f| upsert(id, &format!("f{f}"), json!(big), hlc(10 + i as u64, "a")))
            .collect();
        push(store.as_ref(), &s, "a", &format!("a{i}"), changes).await;
    }
    for (i, id) in ["p", "q"].iter().enumerate() {
        let changes = (0..5)
            .map(|f| {
                seen(
                    id,
                    &format!("f{f}"),
                    json!(1),
                    hlc(20 + i as u64, "b"),
                    None,
                )
            })
            .collect();
        push(store.as_ref(), &s, "b", &format!("b{i}"), changes).await;
    }
    let first = pull_as(store.as_ref(), &s, "a", "writer", 2).await;
    assert_eq!(first.conflicts.len(), 5, "the reports of one record");
    assert!(first.has_more);
    assert_eq!(first.cursor, 3);
    assert!(first.records.iter().all(|r| r.seq <= 3));
    let second = pull_as(store.as_ref(), &s, "a", "writer", first.cursor).await;
    assert_eq!(second.conflicts.len(), 5);
    assert!(!second.has_more);
}

pub async fn reports_are_compacted_with_the_horizon(store: Arc<dyn Store>) {
    let s = crossed(store.as_ref()).await;
    let report = store.compact(u64::MAX / 2).await.unwrap();
    assert_eq!(report.conflicts, 1);
    // The report was at seq 3: a cursor that had not passed it expires.
    match store.pull(&s, all(2)).await {
        Err(StoreError::CursorExpired { horizon, .. }) => assert_eq!(horizon, 3),
        other => panic!("expected cursor_expired, got {other:?}"),
    }
    assert!(
        pull_as(store.as_ref(), &s, "a", "writer", 3)
            .await
            .conflicts
            .is_empty()
    );
}

pub async fn reports_kept_longer_than_tombstones_reach_a_resync(store: Arc<dyn Store>) {
    let s = orig(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![seen(
            "x",
            "title",
            json!("A"),
            hlc(5, "a"),
            Some(hlc(1, "o")),
        )],
    )
    .await;
    push(store.as_ref(), &s, "b", "1", vec![delete("y", hlc(6, "b"))]).await;
    push(
        store.as_ref(),
        &s,
        "b",
        "2",
        vec![seen(
            "x",
            "title",
            json!("B"),
            hlc(7, "b"),
            Some(hlc(1, "o")),
        )],
    )
    .await;
    // The tombstone goes, the report stays: A's cursor (2) expires, and
    // its pull from 0 still brings the report.
    let report = store.compact_with(u64::MAX / 2, 0).await.unwrap();
    assert_eq!(report.conflicts, 0);
    assert!(matches!(
        store.pull(&s, all(2)).await,
        Err(StoreError::CursorExpired { .. })
    ));
    let mut q = all(0);
    q.conflicts = Some(ConflictsFor {
        client_id: ClientId::new("a").unwrap(),
        user: user("writer"),
        after: 2,
    });
    let page = store.pull(&s, q).await.unwrap();
    assert_eq!(page.conflicts.len(), 1);
    assert_eq!(page.conflicts[0].winner.as_ref().unwrap().value, json!("B"));
}

pub async fn a_push_past_its_reports_lets_them_go(store: Arc<dyn Store>) {
    let s = crossed(store.as_ref()).await;
    let page = pull_as(store.as_ref(), &s, "a", "writer", 2).await;
    assert_eq!(page.conflicts.len(), 1);
    // A pushes from a cursor below the report: it stays.
    let mut early = batch("a", "2", vec![upsert("z", "n", json!(1), hlc(7, "a"))]);
    early.cursor = Some(2);
    store.push(&s, early).await.unwrap();
    assert_eq!(
        pull_as(store.as_ref(), &s, "a", "writer", 2)
            .await
            .conflicts
            .len(),
        1
    );
    // From past it (the page that carried it is stored): it is gone.
    let mut past = batch("a", "3", vec![upsert("z", "n", json!(2), hlc(8, "a"))]);
    past.cursor = Some(page.cursor);
    store.push(&s, past).await.unwrap();
    assert!(
        pull_as(store.as_ref(), &s, "a", "writer", 0)
            .await
            .conflicts
            .is_empty()
    );
}
