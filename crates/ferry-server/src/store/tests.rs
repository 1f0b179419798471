//! The storage test suite. Each test is a function over `Arc<dyn Store>`;
//! [`store_suite!`] instantiates all of them for one backend, so every
//! backend is held to exactly the same behaviour.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::protocol::BatchId;
use ferry_core::{
    Change, ClientId, Collection, ConflictKind, FieldName, FieldValue, Hlc, Record, RecordId, Role,
    SpaceId, UserId,
};
use serde_json::{Value, json};

use super::{Batch, PullQuery, Store, StoreError};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn space(id: &str) -> SpaceId {
    SpaceId::new(id).unwrap()
}

fn hlc(p: u64, node: &str) -> Hlc {
    Hlc::new(p, 0, ClientId::new(node).unwrap()).unwrap()
}

fn upsert(id: &str, field: &str, value: Value, h: Hlc) -> Change {
    Change::Upsert {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new(id).unwrap(),
        fields: [(FieldName::new(field).unwrap(), FieldValue { value, hlc: h })].into(),
    }
}

fn delete(id: &str, h: Hlc) -> Change {
    Change::Delete {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new(id).unwrap(),
        hlc: h,
    }
}

fn batch(client: &str, batch_id: &str, changes: Vec<Change>) -> Batch {
    Batch {
        client_id: ClientId::new(client).unwrap(),
        batch_id: Some(BatchId::new(batch_id).unwrap()),
        cursor: None,
        changes,
    }
}

/// Pushes `changes` as batch `batch_id` of `client`, which must succeed.
async fn push(
    store: &dyn Store,
    s: &SpaceId,
    client: &str,
    batch_id: &str,
    changes: Vec<Change>,
) -> super::PushOutcome {
    store
        .push(s, batch(client, batch_id, changes))
        .await
        .unwrap()
}

fn all(cursor: u64) -> PullQuery {
    PullQuery {
        cursor,
        limit: 10_000,
        collections: None,
    }
}

/// A space `team` owned by `owner`.
async fn team(store: &dyn Store) -> SpaceId {
    store.ensure_user(&user("owner")).await.unwrap();
    let s = space("team");
    store
        .create_space(&s, "Team", &user("owner"))
        .await
        .unwrap();
    s
}

/// Every record of the space, decoded.
async fn records(store: &dyn Store, s: &SpaceId) -> HashMap<String, Record> {
    let page = store.pull(s, all(0)).await.unwrap();
    page.records
        .into_iter()
        .map(|r| {
            let rec: Record = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
            (rec.id.to_string(), rec)
        })
        .collect()
}

pub async fn users_get_a_personal_space_once(store: Arc<dyn Store>) {
    let u = user("u1");
    store.ensure_user(&u).await.unwrap();
    store.ensure_user(&u).await.unwrap();
    let spaces = store.spaces_of(&u).await.unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0].id.as_str(), "user:u1");
    assert_eq!(spaces[0].role, Role::Owner);
}

pub async fn users_by_email_are_found_again(store: Arc<dyn Store>) {
    let first = store
        .user_by_email("ada@example.com", &user("a1"))
        .await
        .unwrap();
    let again = store
        .user_by_email("ada@example.com", &user("a2"))
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(first.id.as_str(), "a1");
    assert_eq!(store.spaces_of(&first.id).await.unwrap().len(), 1);
}

pub async fn space_ids_are_unique(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let err = store
        .create_space(&s, "Again", &user("owner"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub async fn members_and_the_last_owner(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    store.ensure_user(&user("bob")).await.unwrap();
    store
        .set_member(&s, &user("bob"), Role::Viewer)
        .await
        .unwrap();
    assert_eq!(
        store.role(&s, &user("bob")).await.unwrap(),
        Some(Role::Viewer)
    );
    assert_eq!(store.members(&s).await.unwrap().len(), 2);
    // The only owner can neither leave nor be demoted.
    assert!(matches!(
        store.remove_member(&s, &user("owner")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_member(&s, &user("owner"), Role::Editor).await,
        Err(StoreError::Conflict(_))
    ));
    // With a second owner, the first may go.
    store
        .set_member(&s, &user("bob"), Role::Owner)
        .await
        .unwrap();
    store.remove_member(&s, &user("owner")).await.unwrap();
    assert_eq!(store.role(&s, &user("owner")).await.unwrap(), None);
    assert!(matches!(
        store.set_member(&s, &user("nobody"), Role::Editor).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.remove_member(&s, &user("owner")).await,
        Err(StoreError::NotFound(_))
    ));
}

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
    assert!(live.is_empty(), "tombstones are not listed");
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

pub async fn signing_keys_are_created_once(store: Arc<dyn Store>) {
    let key = |kid: &str| super::StoredKey {
        kid: kid.into(),
        private_pkcs8: vec![1, 2, 3],
        created_at_ms: 1,
    };
    let first = store.signing_keys(key("k1")).await.unwrap();
    let second = store.signing_keys(key("k2")).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(second, first, "the first node's key wins");
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
    push(
        store.as_ref(),
        &s,
        "a",
        "2",
        vec![delete("gone", hlc(2, "a"))],
    )
    .await;
    // A cutoff in the past removes nothing.
    let none = store.compact(0).await.unwrap();
    assert_eq!(none, super::CompactReport::default());

    let report = store.compact(u64::MAX / 2).await.unwrap();
    assert_eq!(report.spaces.len(), 1);
    assert_eq!(report.spaces[0].space, s);
    assert_eq!(report.spaces[0].tombstones, 1);
    assert_eq!(report.spaces[0].horizon, 3);
    assert_eq!(report.batches, 2);

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
    assert_eq!(ids, ["kept"]);
    assert_eq!(fresh.cursor, 3);
    assert!(store.pull(&s, all(3)).await.unwrap().records.is_empty());

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
    assert_eq!(records(store.as_ref(), &s).await.len(), 1);
}

pub async fn a_login_token_is_redeemed_once(store: Arc<dyn Store>) {
    store
        .create_login_token("h1", "ada@example.com", 10_000)
        .await
        .unwrap();
    store
        .create_login_token("h2", "bob@example.com", 10_000)
        .await
        .unwrap();
    // Expired at 10 s.
    assert_eq!(store.redeem_login_token("h2", 10_000).await.unwrap(), None);
    assert_eq!(store.redeem_login_token("nope", 1).await.unwrap(), None);
    // Of concurrent redemptions, exactly one wins.
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_login_token("h1", 5_000).await.unwrap() })
        })
        .collect();
    let mut wins = Vec::new();
    for t in tries {
        wins.extend(t.await.unwrap());
    }
    assert_eq!(wins, ["ada@example.com"]);
    assert_eq!(store.redeem_login_token("h1", 5_001).await.unwrap(), None);
}

pub async fn refresh_tokens_rotate_and_reuse_revokes_the_family(store: Arc<dyn Store>) {
    use super::{RefreshToken, Rotation};
    let u = user("u1");
    store.ensure_user(&u).await.unwrap();
    let first = RefreshToken {
        hash: "r1".into(),
        family: "f1".into(),
        user: u.clone(),
        expires_at_ms: 100_000,
    };
    store.create_refresh_token(&first).await.unwrap();
    let rotated = store
        .rotate_refresh_token("r1", "r2", 200_000, 1_000)
        .await
        .unwrap();
    assert_eq!(rotated, Rotation::Rotated { user: u.clone() });
    // r1 again: stolen, so the whole family goes, r2 included.
    assert_eq!(
        store
            .rotate_refresh_token("r1", "r3", 200_000, 2_000)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        store
            .rotate_refresh_token("r2", "r4", 200_000, 3_000)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "r5", 200_000, 3_000)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    // Expiry, and logout.
    let other = RefreshToken {
        hash: "s1".into(),
        family: "f2".into(),
        user: u.clone(),
        expires_at_ms: 5_000,
    };
    store.create_refresh_token(&other).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("s1", "s2", 9_000, 5_000)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    let third = RefreshToken {
        hash: "t1".into(),
        family: "f3".into(),
        user: u,
        expires_at_ms: 100_000,
    };
    store.create_refresh_token(&third).await.unwrap();
    store.revoke_refresh_family("t1", 1_000).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("t1", "t2", 200_000, 2_000)
            .await
            .unwrap(),
        Rotation::Reused
    );
}

pub async fn an_external_identity_is_one_user(store: Arc<dyn Store>) {
    let first = store
        .user_for_identity("https://idp", "sub-1", Some("ada@example.com"), &user("n1"))
        .await
        .unwrap();
    assert_eq!(first.id.as_str(), "n1");
    assert_eq!(first.email.as_deref(), Some("ada@example.com"));
    assert_eq!(
        store.spaces_of(&first.id).await.unwrap()[0].id.as_str(),
        "user:n1"
    );
    let again = store
        .user_for_identity("https://idp", "sub-1", None, &user("n2"))
        .await
        .unwrap();
    assert_eq!(again, first);
    // The same subject at another issuer is someone else; an email already
    // taken is not recorded twice.
    let other = store
        .user_for_identity(
            "https://other",
            "sub-1",
            Some("ada@example.com"),
            &user("n3"),
        )
        .await
        .unwrap();
    assert_eq!(other.id.as_str(), "n3");
    assert_eq!(other.email, None);
}

/// Instantiates every storage test for a backend: `$open` is an async
/// expression giving an `Arc<dyn Store>` on a fresh, empty database and a
/// guard that removes that database when dropped.
#[macro_export]
macro_rules! store_suite {
    ($open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard): (std::sync::Arc<dyn $crate::store::Store>, _) = $open;
                $crate::store::tests::$name(store).await;
            }
        )*
    };
}

/// Every storage test, once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            crate::store_suite!(crate::testing::fresh_sqlite().await; $($name),*);
        }
        mod postgres {
            crate::store_suite!(crate::testing::fresh_postgres().await; $($name),*);
        }
    };
}

both_backends!(
    users_get_a_personal_space_once,
    users_by_email_are_found_again,
    space_ids_are_unique,
    members_and_the_last_owner,
    push_assigns_seq_and_pull_returns_in_order,
    stale_writes_change_nothing_and_are_reported,
    a_retried_batch_applies_once_and_answers_the_same,
    deletes_win_and_keep_no_values,
    pages_follow_the_cursor_without_gaps,
    collection_filters_still_move_the_cursor,
    cursors_outside_the_space_are_expired,
    unknown_spaces_are_not_found,
    concurrent_pushes_get_distinct_gapless_seqs,
    signing_keys_are_created_once,
    compaction_drops_old_tombstones_and_expires_older_cursors,
    a_login_token_is_redeemed_once,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    an_external_identity_is_one_user,
);

/// What only PostgreSQL does: commits of different spaces in parallel.
mod postgres_only {
    use std::time::Duration;

    use sqlx::Connection;

    use super::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn a_push_waits_for_its_own_space_only() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        store.ensure_user(&user("owner")).await.unwrap();
        for id in ["a", "b"] {
            store
                .create_space(&space(id), id, &user("owner"))
                .await
                .unwrap();
        }
        // Hold space a's row lock, as a push in flight does.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM spaces WHERE id = 'a' FOR UPDATE")
            .execute(&mut *tx)
            .await
            .unwrap();
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                push(
                    store.as_ref(),
                    &space("a"),
                    "c",
                    "1",
                    vec![delete("x", hlc(1, "c"))],
                )
                .await
            })
        };
        let other = tokio::time::timeout(
            Duration::from_secs(3),
            push(
                store.as_ref(),
                &space("b"),
                "c",
                "1",
                vec![delete("x", hlc(1, "c"))],
            ),
        )
        .await
        .expect("a push to another space is not held up");
        assert_eq!(other.head, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the push to the locked space waits");
        tx.rollback().await.unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes on once the lock is released")
            .unwrap();
        assert_eq!(done.head, 1);
    }
}
