//! Storage tests of pushing, pulling and compacting records.

use std::sync::Arc;

use ferry_core::Collection;
use serde_json::json;

use super::*;
use crate::store::{Store, StoreError};

pub async fn push_assigns_seq_and_pull_returns_in_order(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let out = push(
        store.as_ref(),
        &s,
        "a",
        "b1",
        vec![
            upsert("t-1", "title", json!("one"), hlc(1, "a")),
            upsert("t-2", "title", json!("two"), hlc(1, "a")),
            upsert("t-1", "done", json!(true), hlc(2, "a")),
        ],
    )
    .await;
    assert_eq!(out.applied, 3);
    assert_eq!(out.head, 2, "two records changed, so two seqs");
    let page = store.pull(&s, all(0)).await.unwrap();
    let ids: Vec<_> = page
        .records
        .iter()
        .map(|r| (r.id.as_str(), r.seq))
        .collect();
    // t-2 was last written before t-1's second change.
    assert_eq!(ids, [("t-2", 1), ("t-1", 2)]);
    assert_eq!(page.cursor, 2);
    assert!(!page.has_more);
    let recs = records(store.as_ref(), &s).await;
    assert_eq!(recs["t-1"].fields.len(), 2);
}

pub async fn stale_writes_change_nothing_and_are_reported(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "b",
        "1",
        vec![upsert("t", "title", json!("eggs"), hlc(5, "b"))],
    )
    .await;
    let out = push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![upsert("t", "title", json!("milk"), hlc(4, "a"))],
    )
    .await;
    assert_eq!(out.applied, 0);
    assert_eq!(out.head, 1, "nothing changed, so no new seq");
    assert_eq!(out.conflicts.len(), 1);
    assert_eq!(out.conflicts[0].kind, ConflictKind::StaleWrite);
    assert_eq!(
        out.conflicts[0].winner.as_ref().unwrap().value,
        json!("eggs")
    );
    assert_eq!(
        records(store.as_ref(), &s).await["t"].fields["title"].value,
        json!("eggs")
    );
}

pub async fn a_retried_batch_applies_once_and_answers_the_same(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "b",
        "x",
        vec![upsert("t", "title", json!("new"), hlc(9, "b"))],
    )
    .await;
    let retry = batch(
        "a",
        "b1",
        vec![
            upsert("t", "title", json!("old"), hlc(1, "a")),
            upsert("u", "title", json!("u"), hlc(1, "a")),
        ],
    );
    let first = store.push(&s, retry.clone()).await.unwrap();
    let second = store.push(&s, retry.clone()).await.unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(
        (first.applied, &first.conflicts),
        (second.applied, &second.conflicts)
    );
    assert_eq!(second.head, first.head, "the retry took no seq");
    // The same batch id from another client, or for another space, is new.
    let other = push(store.as_ref(), &s, "c", "b1", vec![]).await;
    assert!(!other.replayed);
}

pub async fn deletes_win_and_keep_no_values(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![upsert("t", "title", json!("secret"), hlc(9, "a"))],
    )
    .await;
    push(store.as_ref(), &s, "b", "1", vec![delete("t", hlc(1, "b"))]).await;
    let out = push(
        store.as_ref(),
        &s,
        "a",
        "2",
        vec![upsert("t", "title", json!("back"), hlc(10, "a"))],
    )
    .await;
    assert_eq!(out.applied, 0);
    assert_eq!(out.conflicts[0].kind, ConflictKind::RecordDeleted);
    let rec = &records(store.as_ref(), &s).await["t"];
    assert!(rec.fields.is_empty());
    assert_eq!(rec.deleted, Some(hlc(1, "b")));
    let row = store
        .record(
            &s,
            &Collection::new("todos").unwrap(),
            &RecordId::new("t").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.fields.get(), "{}", "no field value survives in storage");
    let live = store
        .list_records(&s, &Collection::new("todos").unwrap(), None, 10)
        .await
        .unwrap();
    assert!(live.records.is_empty(), "tombstones are not listed");
}

pub async fn pages_follow_the_cursor_without_gaps(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    for i in 0..25 {
        push(
            store.as_ref(),
            &s,
            "a",
            &format!("b{i}"),
            vec![upsert(&format!("r{i}"), "n", json!(i), hlc(i + 1, "a"))],
        )
        .await;
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = store
            .pull(
                &s,
                PullQuery {
                    cursor,
                    limit: 10,
                    collections: None,
                    conflicts: None,
                },
            )
            .await
            .unwrap();
        assert!(page.records.len() <= 10);
        seen.extend(page.records.iter().map(|r| r.seq));
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert_eq!(cursor, 25);
}

pub async fn collection_filters_still_move_the_cursor(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let note = Change::Upsert {
        collection: Collection::new("notes").unwrap(),
        id: RecordId::new("n").unwrap(),
        fields: [(
            FieldName::new("x").unwrap(),
            FieldValue {
                value: json!(1),
                hlc: hlc(1, "a"),
            },
        )]
        .into(),
        base: None,
    };
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![upsert("t", "x", json!(1), hlc(1, "a")), note],
    )
    .await;
    let page = store
        .pull(
            &s,
            PullQuery {
                cursor: 0,
                limit: 100,
                collections: Some(vec![Collection::new("todos").unwrap()]),
                conflicts: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].collection, "todos");
    assert_eq!(page.cursor, 2, "the cursor covers the notes too");
}

pub async fn cursors_outside_the_space_are_expired(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let err = store.pull(&s, all(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::CursorExpired {
                cursor: 5,
                head: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // A batch sent with such a cursor is not applied either.
    let mut b = batch("a", "1", vec![upsert("t", "x", json!(1), hlc(1, "a"))]);
    b.cursor = Some(5);
    assert!(matches!(
        store.push(&s, b).await,
        Err(StoreError::CursorExpired { .. })
    ));
    assert!(records(store.as_ref(), &s).await.is_empty());
}

pub async fn unknown_spaces_are_not_found(store: Arc<dyn Store>) {
    let s = space("nowhere");
    assert!(matches!(
        store.pull(&s, all(0)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .push(&s, batch("a", "1", vec![delete("t", hlc(1, "a"))]))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.role(&s, &user("x")).await.unwrap(), None);
}

pub async fn concurrent_pushes_get_distinct_gapless_seqs(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let id = format!("w{w}-{i}");
                let changes = vec![upsert(&id, "n", json!(i), hlc(1, "a"))];
                push(
                    store.as_ref(),
                    &s,
                    &format!("c{w}"),
                    &format!("b{i}"),
                    changes,
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = store.pull(&s, all(0)).await.unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=160).collect::<Vec<_>>());
}

pub async fn compaction_drops_old_tombstones_and_expires_older_cursors(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "1",
        vec![
            upsert("gone", "x", json!(1), hlc(1, "a")),
            upsert("kept", "x", json!(1), hlc(1, "a")),
        ],
    )
    .await;
    // Batches are aged by the server's clock in milliseconds: "2" comes
    // later than "1", so it alone is client a's newest.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    push(
        store.as_ref(),
        &s,
        "a",
        "2",
        vec![delete("gone", hlc(2, "a"))],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    push(
        store.as_ref(),
        &s,
        "b",
        "1",
        vec![upsert("other", "x", json!(1), hlc(3, "b"))],
    )
    .await;
    // A cutoff in the past removes nothing.
    let none = store.compact(0).await.unwrap();
    assert_eq!(none, crate::store::CompactReport::default());

    let report = store.compact(u64::MAX / 2).await.unwrap();
    assert_eq!(report.spaces.len(), 1);
    assert_eq!(report.spaces[0].space, s);
    assert_eq!(report.spaces[0].tombstones, 1);
    assert_eq!(report.spaces[0].horizon, 3);
    // Each client's newest batch stays: a's "2" and b's "1".
    assert_eq!(report.batches, 1);
    let mut again = batch("a", "2", vec![delete("gone", hlc(2, "a"))]);
    again.cursor = Some(4);
    let replay = store.push(&s, again).await.unwrap();
    assert!(replay.replayed, "client a's newest batch was forgotten");

    // Below the horizon: expired. At it, or starting over from 0: served.
    assert!(matches!(
        store.pull(&s, all(1)).await,
        Err(StoreError::CursorExpired {
            cursor: 1,
            horizon: 3,
            ..
        })
    ));
    let mut b = batch("a", "3", vec![upsert("kept", "x", json!(2), hlc(3, "a"))]);
    b.cursor = Some(2);
    assert!(matches!(
        store.push(&s, b).await,
        Err(StoreError::CursorExpired { .. })
    ));
    let fresh = store.pull(&s, all(0)).await.unwrap();
    let ids: Vec<_> = fresh.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["kept", "other"]);
    assert_eq!(fresh.cursor, 4);
    assert!(store.pull(&s, all(4)).await.unwrap().records.is_empty());

    // Live records and recent tombstones stay; compacting again is a no-op.
    push(
        store.as_ref(),
        &s,
        "a",
        "4",
        vec![delete("kept", hlc(4, "a"))],
    )
    .await;
    let again = store.compact(0).await.unwrap();
    assert!(again.spaces.is_empty());
    assert_eq!(records(store.as_ref(), &s).await.len(), 2);
}

pub async fn a_batch_id_is_its_users_alone(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let as_user = |u: &str, batch_id: &str, id: &str, at: u64| Batch {
        user: user(u),
        ..batch(
            "victim-laptop",
            batch_id,
            vec![upsert(id, "f", json!(u), hlc(at, "victim-laptop"))],
        )
    };
    // The victim's replica pushes (only then can others read its client
    // id, in the HLCs of its writes).
    store
        .push(&s, as_user("victim", "b-6", "w", 1))
        .await
        .unwrap();
    // Another member pushes the victim's next batch id under its client
    // id: refused, the client id is the victim's.
    let squatted = store.push(&s, as_user("squatter", "b-7", "x", 2)).await;
    assert!(
        matches!(squatted, Err(StoreError::ReplicaOfAnother(_))),
        "{squatted:?}"
    );
    // The victim's real batch is applied, not answered as a replay.
    let real = store
        .push(&s, as_user("victim", "b-7", "y", 3))
        .await
        .unwrap();
    assert_eq!((real.applied, real.replayed), (1, false));
    let stored = records(store.as_ref(), &s).await;
    assert!(
        stored.contains_key("y"),
        "the victim's write is stored: {stored:?}"
    );
    assert!(
        !stored.contains_key("x"),
        "nothing of the squatter's: {stored:?}"
    );
    // Its retry is a replay of its own.
    let again = store
        .push(&s, as_user("victim", "b-7", "y", 3))
        .await
        .unwrap();
    assert_eq!((again.applied, again.replayed), (1, true));
}

pub async fn pages_stop_at_their_byte_budget(store: Arc<dyn Store>) {
    use crate::store::MAX_PAGE_BYTES;
    let s = team(store.as_ref()).await;
    // Ten records of a bit over a third of the budget each: three fit in a
    // page (the third reaches the budget), whatever the count limit.
    let big = "x".repeat(MAX_PAGE_BYTES / 3 + 1);
    for i in 0..10 {
        push(
            store.as_ref(),
            &s,
            "c",
            &format!("b{i}"),
            vec![upsert(
                &format!("r{i}"),
                "blob",
                json!(big),
                hlc(i + 1, "c"),
            )],
        )
        .await;
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.pull(&s, all(cursor)).await.unwrap();
        assert!(page.records.len() <= 3, "{} records", page.records.len());
        let bytes: usize = page.records.iter().map(|r| r.fields.get().len()).sum();
        assert!(bytes < MAX_PAGE_BYTES + big.len() + 64, "{bytes} bytes");
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
        assert!(
            !page.records.is_empty(),
            "a page with more to come moves on"
        );
    }
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(seen, expected, "every record once, in order");
    assert_eq!(cursor, 10);

    // One record over the whole budget still comes, alone.
    let huge = "y".repeat(MAX_PAGE_BYTES + 10);
    push(
        store.as_ref(),
        &s,
        "c",
        "huge",
        vec![
            upsert("h1", "a", json!(huge[..MAX_PAGE_BYTES / 2]), hlc(20, "c")),
            upsert("h1", "b", json!(huge[MAX_PAGE_BYTES / 2..]), hlc(20, "c")),
            upsert("h2", "a", json!("small"), hlc(21, "c")),
        ],
    )
    .await;
    let page = store.pull(&s, all(10)).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert!(page.has_more);
    let page = store.pull(&s, all(page.cursor)).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].id, "h2");
    assert!(!page.has_more);

    // The REST listing pages by bytes as well.
    let todos = Collection::new("todos").unwrap();
    let mut after: Option<RecordId> = None;
    let mut listed = 0;
    loop {
        let page = store
            .list_records(&s, &todos, after.as_ref(), 1000)
            .await
            .unwrap();
        // Every record but the last started below the budget.
        let before_last: usize = page.records[..page.records.len() - 1]
            .iter()
            .map(|r| r.fields.get().len())
            .sum();
        assert!(before_last < MAX_PAGE_BYTES, "{before_last} bytes");
        assert!(page.records.len() <= 4, "{}", page.records.len());
        listed += page.records.len();
        if !page.more {
            break;
        }
        after = page
            .records
            .last()
            .map(|r| RecordId::new(r.id.clone()).unwrap());
    }
    assert_eq!(listed, 12);
}

pub async fn a_record_cannot_grow_past_its_limit(store: Arc<dyn Store>) {
    use ferry_core::protocol::MAX_RECORD_BYTES;
    let s = team(store.as_ref()).await;
    // Fields of a bit under 1 MiB each, one more per batch: the ninth
    // would take the record past 8 MiB.
    let value = "z".repeat(1024 * 1024 - 100);
    let mut refused = None;
    for i in 0..12u64 {
        let b = batch(
            "c",
            &format!("grow-{i}"),
            vec![upsert(
                "big",
                &format!("f{i}"),
                json!(value),
                hlc(i + 1, "c"),
            )],
        );
        match store.push(&s, b).await {
            Ok(_) => {}
            Err(StoreError::RecordTooLarge { bytes, .. }) => {
                refused = Some((i, bytes));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (at, bytes) = refused.expect("the record grew without end");
    assert!(bytes > MAX_RECORD_BYTES, "{bytes}");
    assert_eq!(at, 8, "refused at the batch that crossed the limit");
    // The refused batch applied nothing; the record still holds eight fields.
    let stored = records(store.as_ref(), &s).await;
    assert_eq!(stored["big"].fields.len(), 8);
    // It may still shrink, and be deleted.
    push(
        store.as_ref(),
        &s,
        "c",
        "del",
        vec![delete("big", hlc(100, "c"))],
    )
    .await;
    assert!(records(store.as_ref(), &s).await["big"].deleted.is_some());
}

/// Pushes that arrive together (on SQLite, sharing one commit) stay apart:
/// the refused ones apply nothing and answer their own error, the others
/// commit with gapless seqs.
pub async fn concurrent_pushes_with_bad_ones_among_them_commit_apart(store: Arc<dyn Store>) {
    use ferry_core::{Change, FieldName, FieldValue, RecordId};
    let s = team(store.as_ref()).await;
    // The replica `taken` is the first pusher's.
    push(
        store.as_ref(),
        &s,
        "taken",
        "0",
        vec![upsert("first", "n", json!(0), hlc(1, "taken"))],
    )
    .await;
    let big = "z".repeat(1024 * 1024 - 100);
    let too_large = Change::Upsert {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new("huge").unwrap(),
        fields: (0..9)
            .map(|i| {
                let value = FieldValue {
                    value: json!(big),
                    hlc: hlc(1, "b"),
                };
                (FieldName::new(format!("f{i}")).unwrap(), value)
            })
            .collect(),
        base: None,
    };
    let start = Arc::new(tokio::sync::Barrier::new(34));
    let mut tasks = Vec::new();
    for i in 0..34 {
        let (store, s, start) = (store.clone(), s.clone(), start.clone());
        let b = match i {
            // Another user's replica, and a record past its size limit.
            10 => crate::store::Batch {
                user: user("squatter"),
                ..batch(
                    "taken",
                    "1",
                    vec![upsert("squatted", "n", json!(1), hlc(2, "taken"))],
                )
            },
            20 => batch(
                "big",
                "1",
                vec![
                    upsert("beside", "n", json!(1), hlc(1, "b")),
                    too_large.clone(),
                ],
            ),
            _ => batch(
                &format!("c{i}"),
                "1",
                vec![upsert(&format!("t-{i}"), "n", json!(i), hlc(1, "c"))],
            ),
        };
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (i, store.push(&s, b).await)
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            (10, out) => assert!(
                matches!(out, Err(StoreError::ReplicaOfAnother(_))),
                "{out:?}"
            ),
            (20, out) => assert!(
                matches!(out, Err(StoreError::RecordTooLarge { .. })),
                "{out:?}"
            ),
            (i, out) => assert_eq!(out.unwrap().applied, 1, "push {i}"),
        }
    }
    let page = store.pull(&s, all(0)).await.unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=33).collect::<Vec<_>>(),
        "gapless: nothing of the refused ones took a seq"
    );
    let stored = records(store.as_ref(), &s).await;
    for gone in ["squatted", "beside", "huge"] {
        assert!(
            !stored.contains_key(gone),
            "{gone} of a refused batch was stored"
        );
    }
}
