//! A table keyed by `uuid` columns, as Supabase, Drizzle's `uuid()` and
//! Prisma's `@db.Uuid` make them (docs/tables.md): taken at apply, written
//! by pushes whose ids are uuids, refusing ids that are not, its
//! backend's inserts (ids from the column's default) synced, and its old
//! rows adopted.

use std::time::Duration;

use axum::http::StatusCode;
use ferry_core::Collection;
use serde_json::json;

use super::tables::{SCHEMA, app_db, apply, card, drained};
use super::*;

const TEAM: &str = "6f1c1f9e-3b0a-4d7e-9a55-0c2b8f7d1e01";
const C1: &str = "0b8f3a52-6a1e-4b6f-8f0d-2e9a7c4d5b61";

/// The record `id` of the team space, as a pull from 0 gives it.
async fn record(api: &Api, id: &str) -> Option<Value> {
    let r = api
        .get(
            &format!("/v1/spaces/{TEAM}/changes?cursor=0&limit=1000"),
            "alice",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

#[tokio::test]
async fn a_table_keyed_by_uuids_syncs_both_ways_and_is_adopted() {
    let api = Api::postgres().await;
    api.space("alice", TEAM).await;
    api.space("alice", "not-a-uuid").await;
    let mut db = app_db(&api).await;
    // The app's table, with a row from before Ferry.
    sqlx::raw_sql(&format!(
        "CREATE TABLE cards (workspace_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                             title text NOT NULL, PRIMARY KEY (workspace_id, id));
         INSERT INTO cards (workspace_id, title) VALUES ('{TEAM}', 'From before');"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    apply(&api, SCHEMA).await.unwrap();

    // A device's write with a uuid id reaches its row; a delete marks it.
    let sync = |batch: &str, cursor: u64, changes: Vec<Value>| {
        api.sync("alice", TEAM, push("laptop", batch, cursor, changes))
    };
    let r = sync(
        "b1",
        0,
        vec![card(C1, json!({"title": "Device"}), &hlc(1, "laptop"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let title: String = sqlx::query_scalar(&format!("SELECT title FROM cards WHERE id = '{C1}'"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(title, "Device");
    let gone = json!({"op": "delete", "collection": "cards", "id": C1, "hlc": hlc(2, "laptop")});
    let r = sync("b2", 1, vec![gone]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let deleted: bool = sqlx::query_scalar(&format!(
        "SELECT deleted_at IS NOT NULL FROM cards WHERE id = '{C1}'"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(deleted);

    // An id the column cannot hold is the change's 422, and so is any
    // write into a space whose id is not a uuid.
    let r = sync(
        "b3",
        2,
        vec![card("card-1", json!({"title": "No"}), &hlc(3, "laptop"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["rule"], "column");
    let r = api
        .sync(
            "alice",
            "not-a-uuid",
            push(
                "laptop",
                "b4",
                0,
                vec![card(C1, json!({"title": "No"}), &hlc(4, "laptop"))],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);

    // The backend's insert, its id from the column's default, reaches
    // devices.
    let served = api.serve().await;
    let new_id: String = sqlx::query_scalar(&format!(
        "INSERT INTO cards (workspace_id, title) VALUES ('{TEAM}', 'Backend') RETURNING id::text"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    let backend = record(&api, &new_id).await.unwrap();
    assert_eq!(backend["fields"]["title"]["value"], "Backend");

    // The row from before Ferry is adopted.
    let cards = Collection::new("cards").unwrap();
    let mut heard = |line: &str| assert!(line.starts_with("cards: "), "{line}");
    let adopted = ferry_server::adopt::adopt(
        api.state.store.as_ref(),
        &cards,
        Duration::from_secs(10),
        &mut heard,
    )
    .await
    .unwrap();
    assert_eq!((adopted.left, adopted.refused), (0, 0), "{adopted:?}");
    let before: String =
        sqlx::query_scalar("SELECT id::text FROM cards WHERE title = 'From before'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    let taken = record(&api, &before).await.unwrap();
    assert_eq!(taken["fields"]["title"]["value"], "From before");
    served.stop().await;
}
