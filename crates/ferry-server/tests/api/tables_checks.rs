//! What holds around Ferry's writes to an app's PostgreSQL table
//! (docs/tables.md, "What the app may do to a mirrored table"): the app's
//! own triggers run with a search path an app's connection has, a value
//! past a limit of the app's is the change's refusal, the backend's own
//! soft-delete time is kept, and no role but Ferry's may run the capture
//! function.

use axum::http::StatusCode;
use serde_json::json;

use super::tables::{SCHEMA, app_db, apply, card, drained, sync};
use super::*;

#[tokio::test]
async fn the_app_s_own_trigger_finds_its_tables_by_name_in_ferry_s_writes() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    // An audit trigger written as apps write them: table names unqualified.
    sqlx::raw_sql(
        "CREATE TABLE audit (id text, title text);
         CREATE FUNCTION audit_cards() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO audit VALUES (NEW.id, NEW.title);
             RETURN NEW;
         END $$;
         CREATE TRIGGER audit_cards AFTER INSERT OR UPDATE ON cards
             FOR EACH ROW EXECUTE FUNCTION audit_cards();",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let r = sync(
        &api,
        "b1",
        0,
        vec![card("c1", json!({"title": "Audited"}), &hlc(1, "laptop"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let audited: Vec<(String, String)> = sqlx::query_as("SELECT id, title FROM audit")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(audited, [("c1".to_owned(), "Audited".to_owned())]);
}

#[tokio::test]
async fn a_value_past_a_limit_of_the_app_s_is_the_change_s_422() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    // A B-tree entry holds at most about 2.7 kB: a long link that does not
    // compress is past it (SQLSTATE 54000).
    sqlx::raw_sql("CREATE INDEX cards_by_link ON cards (link)")
        .execute(&mut db)
        .await
        .unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let long: String = (0..6000)
        .map(|_| {
            // xorshift: letters with no repeats for compression to find.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let r = sync(
        &api,
        "b1",
        0,
        vec![
            card("c1", json!({"title": "short"}), &hlc(1, "laptop")),
            card(
                "c2",
                json!({"title": "long", "url": long}),
                &hlc(2, "laptop"),
            ),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["rule"], "column");
    assert_eq!(r.body["error"]["details"]["index"], 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cards")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn the_backend_s_own_soft_delete_time_is_kept() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let served = api.serve().await;
    let mut db = app_db(&api).await;
    sqlx::raw_sql(
        "INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c1', 'Old');
         UPDATE cards SET deleted_at = '2020-01-02T03:04:05Z' WHERE id = 'c1';",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    let record = super::tables::record(&api, "c1").await.unwrap();
    assert!(record["deleted"].is_string(), "{record}");
    // Ferry wrote the row back after the merge, and kept the app's time.
    let at: String = sqlx::query_scalar("SELECT deleted_at::text FROM cards WHERE id = 'c1'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(at, "2020-01-02 03:04:05+00");
    served.stop().await;
}

#[tokio::test]
async fn no_role_but_ferry_s_may_run_the_capture_function() {
    let api = Api::postgres().await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    let role = format!("ferry_test_app_{}", std::process::id());
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"))
        .execute(&mut db)
        .await
        .unwrap();
    // (`ferry.refuse_truncate()` only raises: anyone may run it.)
    let may: bool = sqlx::query_scalar(&format!(
        "SELECT has_function_privilege('{role}', 'ferry.capture()', 'EXECUTE')
             OR has_function_privilege('{role}', 'ferry.capture_rows()', 'EXECUTE')"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    sqlx::raw_sql(&format!("DROP ROLE {role}"))
        .execute(&mut db)
        .await
        .unwrap();
    assert!(!may, "a role of the app's may run the capture function");
}

#[tokio::test]
async fn bulk_statements_are_captured_whole_and_a_key_change_is_refused() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let served = api.serve().await;
    let mut db = app_db(&api).await;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    // One statement of 500 rows: queued by one trigger call, all applied.
    sqlx::raw_sql(
        "INSERT INTO cards (workspace_id, id, title, votes)
         SELECT 'team', 'c' || g, 'Card ' || g, g FROM generate_series(1, 500) g",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    let live = "SELECT count(*) FROM ferry.records WHERE collection = 'cards' AND deleted IS NULL";
    assert_eq!(count(live).fetch_one(&mut db).await.unwrap(), 500);
    // An update of every row pairs each row's old and new versions.
    sqlx::raw_sql("UPDATE cards SET votes = votes + 1")
        .execute(&mut db)
        .await
        .unwrap();
    drained(&mut db).await;
    let votes: String = sqlx::query_scalar(
        "SELECT fields::jsonb -> 'votes' ->> 'value' FROM ferry.records WHERE id = 'c7'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(votes, "8");
    // A changed key names another record: both halves are refused.
    sqlx::raw_sql("UPDATE cards SET id = 'moved' WHERE id = 'c1'")
        .execute(&mut db)
        .await
        .unwrap();
    drained(&mut db).await;
    let refused: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ferry.capture_refused ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused.iter().all(|r| r.contains("which name its record")),
        "{refused:?}"
    );
    // A bulk delete deletes each record (votes 401 to 501: 101 of them).
    sqlx::raw_sql("DELETE FROM cards WHERE votes > 400")
        .execute(&mut db)
        .await
        .unwrap();
    drained(&mut db).await;
    assert_eq!(count(live).fetch_one(&mut db).await.unwrap(), 399);
    served.stop().await;
}

#[tokio::test]
async fn columns_named_like_the_capture_s_own_words_are_captured() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    // A mirrored field named like the capture's alias, and columns of the
    // app's own named like its variables.
    let schema = r#"{"collections": {"cards": {"table": "cards",
        "space_column": "workspace_id", "fields": {
            "title": {"type": "string"}, "x": {"type": "number"}, "t": {"type": "number"}}}}}"#;
    apply(&api, schema).await.unwrap();
    let served = api.serve().await;
    let mut db = app_db(&api).await;
    sqlx::raw_sql(
        "ALTER TABLE cards ADD COLUMN other text, ADD COLUMN ferry_other text,
                           ADD COLUMN kept text, ADD COLUMN r jsonb;
         INSERT INTO cards (workspace_id, id, title, x, t, other, kept, r)
             VALUES ('team', 'c1', 'Named', 1.5, 2, 'o', 'k', '{\"a\": 1}');
         UPDATE cards SET x = 2.5 WHERE id = 'c1';",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    let c1 = super::tables::record(&api, "c1").await.unwrap();
    assert_eq!(c1["fields"]["title"]["value"], "Named", "{c1}");
    assert_eq!(c1["fields"]["x"]["value"], 2.5, "{c1}");
    assert_eq!(c1["fields"]["t"]["value"], 2.0, "{c1}");
    assert!(c1["fields"].get("other").is_none(), "{c1}");
    served.stop().await;
}

#[tokio::test]
async fn rows_with_null_keys_pair_with_nothing() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    let mut db = app_db(&api).await;
    // The app's own table, its key columns nullable.
    sqlx::raw_sql(
        "CREATE TABLE cards (workspace_id text, id text, title text, link text, votes bigint,
                             due timestamptz, tags text[], UNIQUE (workspace_id, id));
         INSERT INTO cards (title) SELECT 'no key ' || g FROM generate_series(1, 300) g;",
    )
    .execute(&mut db)
    .await
    .unwrap();
    apply(&api, SCHEMA).await.unwrap();
    // 300 rows updated at once: 300 old and 300 new halves, not 300 × 300.
    sqlx::raw_sql("UPDATE cards SET title = title || '!'")
        .execute(&mut db)
        .await
        .unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.captured")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(queued, 600);
    let served = api.serve().await;
    drained(&mut db).await;
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.capture_refused")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(refused, 600);
    served.stop().await;
}

#[tokio::test]
async fn the_store_checks_table_names_whoever_read_the_schema() {
    let api = Api::postgres().await;
    let bad = r#"{"collections": {"cards": {"table": "cards\"; DROP TABLE ferry.records; --", "fields": {}}}}"#;
    let e = api
        .state
        .store
        .apply_app_schema(bad, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a name Ferry can give"), "{e}");
}
