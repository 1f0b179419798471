//! A backend write that replaces a device's write it never saw
//! (docs/tables.md): the device is told, as any writer whose write loses
//! unseen is told, on either backend.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::tables::{SCHEMA, apply, card, sync};
use super::*;

/// Runs `sql` as the app's backend does: its own connection to the
/// database (PostgreSQL) or to Ferry's file (SQLite). How many writes are
/// queued for a node afterwards.
async fn backend(api: &Api, sql: &str) -> i64 {
    match &api._guard {
        testing::Guard::Sqlite(dir) => {
            let file = rusqlite::Connection::open(dir.path().join("ferry.db")).unwrap();
            if !sql.is_empty() {
                file.execute_batch(sql).unwrap();
            }
            file.query_row("SELECT count(*) FROM captured", [], |r| r.get(0))
                .unwrap()
        }
        testing::Guard::Postgres(db) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            if !sql.is_empty() {
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            sqlx::query_scalar("SELECT count(*) FROM ferry.captured")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }
}

#[tokio::test]
async fn a_device_whose_write_the_backend_replaced_unseen_is_told() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let (h1, h2) = (hlc(1, "laptop"), hlc(2, "laptop"));
    let r = sync(&api, "b1", 0, vec![card("c1", json!({"title": "A"}), &h1)]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The backend changes the title it read as A; no node applies it yet.
    assert_eq!(
        backend(&api, "UPDATE cards SET title = 'Backend' WHERE id = 'c1'").await,
        1
    );
    // Meanwhile the device, which also saw A, writes B.
    let edit = json!({"op": "upsert", "collection": "cards", "id": "c1",
                      "fields": {"title": {"value": "B", "hlc": h2}}, "base": {"title": h1}});
    let r = sync(&api, "b2", 1, vec![edit]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["conflicts"], json!([]), "{:?}", r.body);
    let cursor = r.body["cursor"].as_u64().unwrap();
    // A node applies the backend's write: it did not see B, so B's author
    // is told on its next pull.
    let served = api.serve().await;
    for _ in 0..400 {
        if backend(&api, "").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pulled = api
        .sync(
            "alice",
            "team",
            json!({"client_id": "laptop", "cursor": cursor}),
        )
        .await;
    assert_eq!(pulled.status, StatusCode::OK, "{:?}", pulled.body);
    let changes = pulled.body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{:?}", pulled.body);
    assert_eq!(changes[0]["fields"]["title"]["value"], "Backend");
    let told = &pulled.body["reported"];
    assert_eq!(told.as_array().map(Vec::len), Some(1), "{:?}", pulled.body);
    assert_eq!(told[0]["yours"]["value"], "B", "{told}");
    assert_eq!(told[0]["winner"]["value"], "Backend", "{told}");
    served.stop().await;
}
