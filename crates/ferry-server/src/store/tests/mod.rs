//! The storage test suite. Each test is a function over `Arc<dyn Store>`;
//! [`store_suite!`] instantiates all of them for one backend, so every
//! backend is held to exactly the same behaviour.

mod accounts;
mod app_schema;
mod billing;
mod conflicts;
mod files;
#[cfg(test)]
mod namespace;
mod records;

pub use accounts::*;
pub use app_schema::*;
pub use billing::*;
pub use conflicts::*;
pub use files::*;
pub use records::*;

use std::collections::HashMap;

use ferry_core::protocol::BatchId;
use ferry_core::{
    Change, ClientId, Collection, ConflictKind, FieldName, FieldValue, Hlc, Record, RecordId, Role,
    SpaceId, UserId,
};
use serde_json::Value;

use super::{Batch, PullQuery, Store};

pub(super) fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

pub(super) fn space(id: &str) -> SpaceId {
    SpaceId::new(id).unwrap()
}

pub(super) fn hlc(p: u64, node: &str) -> Hlc {
    Hlc::new(p, 0, ClientId::new(node).unwrap()).unwrap()
}

pub(super) fn upsert(id: &str, field: &str, value: Value, h: Hlc) -> Change {
    Change::Upsert {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new(id).unwrap(),
        fields: [(FieldName::new(field).unwrap(), FieldValue { value, hlc: h })].into(),
        base: None,
    }
}

pub(super) fn delete(id: &str, h: Hlc) -> Change {
    Change::Delete {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new(id).unwrap(),
        hlc: h,
        base: None,
    }
}

pub(super) fn batch(client: &str, batch_id: &str, changes: Vec<Change>) -> Batch {
    Batch {
        user: UserId::new("writer").unwrap(),
        client_id: ClientId::new(client).unwrap(),
        batch_id: Some(BatchId::new(batch_id).unwrap()),
        cursor: None,
        changes,
        schema: None,
        actor: None,
    }
}

/// Pushes `changes` as batch `batch_id` of `client`, which must succeed.
pub(super) async fn push(
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

pub(super) fn all(cursor: u64) -> PullQuery {
    PullQuery {
        cursor,
        limit: 10_000,
        collections: None,
        conflicts: None,
    }
}

/// A space `team` owned by `owner`.
pub(super) async fn team(store: &dyn Store) -> SpaceId {
    store.ensure_user(&user("owner")).await.unwrap();
    let s = space("team");
    store
        .create_space(&s, "Team", &user("owner"))
        .await
        .unwrap();
    s
}

/// Every record of the space, decoded.
pub(super) async fn records(store: &dyn Store, s: &SpaceId) -> HashMap<String, Record> {
    let page = store.pull(s, all(0)).await.unwrap();
    page.records
        .into_iter()
        .map(|r| {
            let rec: Record = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
            (rec.id.to_string(), rec)
        })
        .collect()
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
    a_space_holds_each_file_once_within_its_uploaders_quota,
    a_file_is_collected_only_after_a_grace_period_unreferenced,
    no_collector_pass_forgets_a_referenced_or_recent_file,
    a_reference_keeps_only_its_own_space_s_copy,
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
    concurrent_pushes_with_bad_ones_among_them_commit_apart,
    signing_keys_are_created_once,
    compaction_drops_old_tombstones_and_expires_older_cursors,
    a_login_token_is_redeemed_once,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    an_external_identity_is_one_user,
    billing_events_apply_once_and_never_go_back,
    subscriptions_are_kept_apart_and_linked_once,
    concurrent_deliveries_of_one_event_apply_once,
    a_batch_id_is_its_users_alone,
    pages_stop_at_their_byte_budget,
    a_record_cannot_grow_past_its_limit,
    a_write_replaced_unseen_is_reported_to_its_author_once,
    a_plain_edit_and_a_write_without_bases_report_nothing,
    a_delete_reports_the_values_its_author_had_not_seen,
    reports_fill_a_page_by_bytes,
    reports_are_compacted_with_the_horizon,
    reports_kept_longer_than_tombstones_reach_a_resync,
    a_push_past_its_reports_lets_them_go,
    app_schemas_take_versions_in_order,
    pushes_are_checked_against_the_newest_schema,
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
        let mut conn = db.connect().await;
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

    #[tokio::test]
    async fn a_push_waiting_on_a_schema_apply_is_checked_by_the_new_version() {
        use crate::store::{AppSchema, StoreError};
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let s = team(store.as_ref()).await;
        // An apply in flight: the lock taken alone and version 1 written,
        // not yet committed.
        let mut conn = db.connect().await;
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::store::postgres::APPLY_LOCK)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO app_schemas (version, body, applied_at) VALUES (1, '{}', 0)")
            .execute(&mut *tx)
            .await
            .unwrap();
        // A push checked against no schema (version 0) starts meanwhile.
        let waiting = {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let mut b = batch("c", "1", vec![delete("x", hlc(1, "c"))]);
                b.schema = Some(std::sync::Arc::new(AppSchema::default()));
                store.push(&s, b).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the push waits for the apply");
        tx.commit().await.unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes on once the apply committed")
            .unwrap();
        assert!(
            matches!(done, Err(StoreError::SchemaChanged { version: 1, .. })),
            "{done:?}"
        );
    }

    #[tokio::test]
    async fn a_push_reads_by_key_with_the_generic_plan_every_connection_uses() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let s = team(store.as_ref()).await;
        for b in 0..4 {
            let changes = (0..1_000)
                .map(|i| upsert(&format!("r{b}-{i}"), "n", serde_json::json!(i), hlc(1, "c")))
                .collect();
            push(store.as_ref(), &s, "c", &format!("b{b}"), changes).await;
        }
        let mut conn = db.connect().await;
        // Tables the size a busy server's are: planned with their sizes,
        // a small table is rightly scanned.
        sqlx::raw_sql(
            "INSERT INTO replicas (client_id, user_id, created_at)
                 SELECT 'c' || g, 'writer', 0 FROM generate_series(1, 5000) g
                 ON CONFLICT DO NOTHING;
             INSERT INTO batches (sid, client_id, batch_id, user_id, applied, conflicts, created_at)
                 SELECT (SELECT sid FROM spaces WHERE id = 'team'), 'c' || g, 'x' || g, 'writer',
                        0, '[]', 0
                 FROM generate_series(1, 5000) g;
             INSERT INTO conflicts (sid, client_id, user_id, seq, collection, conflict, created_at)
                 SELECT (SELECT sid FROM spaces WHERE id = 'team'), 'c' || g, 'writer', g,
                        'todos', '{}', 0
                 FROM generate_series(1, 5000) g;
             ANALYZE;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        // The plan Ferry's connections run it by (plan_cache_mode).
        sqlx::query("SET plan_cache_mode = force_generic_plan")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "PREPARE push_read (bigint, text[], text[], text, text, text, bigint, bigint) AS {}",
            crate::store::postgres::PUSH_READ
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN EXECUTE push_read(1, ARRAY['todos'], ARRAY['r0-1'], 'c', 'writer', 'b9', 3, 0)",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{plan}");
        assert!(!plan.contains("Seq Scan on records"), "{plan}");
        assert!(!plan.contains("Seq Scan on conflicts"), "{plan}");
        assert!(!plan.contains("Seq Scan on batches"), "{plan}");
    }

    #[tokio::test]
    async fn connections_the_database_dropped_while_idle_are_replaced() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let s = team(store.as_ref()).await;
        push(store.as_ref(), &s, "c", "1", vec![delete("x", hlc(1, "c"))]).await;
        // The database drops every connection of Ferry's pool (a restart,
        // a failover, an operator).
        let mut conn = db.connect().await;
        let dropped: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'ferry'
               AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(dropped >= 1, "the pool held a connection");
        // Idle past the check: each is found dropped on its way out of the
        // pool and replaced, and the push goes through.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let done = push(store.as_ref(), &s, "c", "2", vec![delete("y", hlc(2, "c"))]).await;
        assert_eq!(done.head, 2);
    }
}
