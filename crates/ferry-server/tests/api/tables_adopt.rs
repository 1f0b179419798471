//! `ferry adopt` (docs/tables.md): a table of the app's old rows and the
//! records Ferry already held brought together, while the app runs:
//! rows Ferry lacked become records, rows of records it held are merged
//! field by field, records the table lacked get rows, and running it again
//! changes nothing.

use std::time::Duration;

use ferry_core::Collection;
use ferry_server::adopt::{Adopted, adopt};

use super::tables::{SCHEMA, app_db, apply, card, record, row};
use super::*;

async fn head(api: &Api) -> u64 {
    let r = api
        .get("/v1/spaces/team/changes?cursor=0&limit=1000", "alice")
        .await;
    r.body["cursor"].as_u64().unwrap()
}

async fn adopted(api: &Api, patience: Duration) -> Adopted {
    let cards = Collection::new("cards").unwrap();
    let mut heard = |line: &str| assert!(line.starts_with("cards: "), "{line}");
    adopt(api.state.store.as_ref(), &cards, patience, &mut heard)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_app_s_old_rows_are_taken_in_merged_with_what_ferry_held_once() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    // Ferry held these before the collection was mirrored.
    let held = vec![
        card(
            "c6",
            json!({"title": "Ferry's", "votes": 2}),
            &hlc(1, "laptop"),
        ),
        card("c9", json!({"title": "Only in Ferry"}), &hlc(2, "laptop")),
        card("c1", json!({"title": "Ferry's c1"}), &hlc(3, "laptop")),
    ];
    let r = api
        .sync("alice", "team", push("laptop", "b1", 0, held))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The app's table of its old rows.
    let mut db = app_db(&api).await;
    sqlx::raw_sql(
        "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL, votes bigint,
                             deleted_at timestamptz, PRIMARY KEY (workspace_id, id));
         INSERT INTO cards VALUES
             ('team', 'c1', 'The table''s c1', NULL, NULL),
             ('team', 'c2', 'Only in the table', 7, NULL),
             ('team', 'c3', 'Deleted long ago', NULL, '2025-01-01Z'),
             ('nowhere', 'c4', 'No such space', NULL, NULL),
             ('team', 'c5', repeat('x', 101), NULL, NULL),
             ('team', 'c6', 'The table''s', 2, NULL);",
    )
    .execute(&mut db)
    .await
    .unwrap();
    apply(&api, SCHEMA).await.unwrap();

    // No node runs: the rows are queued and wait.
    let waiting = adopted(&api, Duration::ZERO).await;
    assert_eq!((waiting.filled, waiting.queued), (1, 7), "{waiting:?}");
    assert!(waiting.left > 0, "{waiting:?}");
    assert_eq!(row(&mut db, "c9").await.unwrap()["title"], "Only in Ferry");
    // A device's write in the meantime is what the table holds when the
    // queue is applied: the row as queued is not taken back in.
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "b2",
                0,
                vec![card("c1", json!({"title": "Newest"}), &hlc(4, "laptop"))],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let served = api.serve().await;
    // Run again with a node to apply them: the rows queued twice are
    // taken in once.
    let done = adopted(&api, Duration::from_secs(20)).await;
    assert_eq!(done.left, 0, "{done:?}");
    assert_eq!(done.filled, 0, "{done:?}");
    let title = |r: Option<Value>| r.unwrap()["fields"]["title"]["value"].clone();
    assert_eq!(title(record(&api, "c1").await), "Newest");
    assert_eq!(title(record(&api, "c2").await), "Only in the table");
    assert_eq!(
        record(&api, "c2").await.unwrap()["fields"]["votes"]["value"],
        7
    );
    assert!(record(&api, "c3").await.unwrap()["deleted"].is_string());
    assert_eq!(record(&api, "c4").await, None);
    assert_eq!(record(&api, "c5").await, None);
    // Held by both: the table's differing value taken in, the same one
    // left as it was written.
    let c6 = record(&api, "c6").await.unwrap();
    assert_eq!(c6["fields"]["title"]["value"], "The table's");
    assert_eq!(c6["fields"]["votes"]["hlc"], hlc(1, "laptop").as_str());
    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT new_row->>'id', reason FROM ferry.capture_refused
         WHERE op = 'ADOPT' ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].1.contains("no space"), "{refused:?}");
    assert!(refused[1].1.contains("max_length") || refused[1].1.contains("100"));

    // Once is enough: again, nothing moves.
    let before = head(&api).await;
    let again = adopted(&api, Duration::from_secs(20)).await;
    assert_eq!((again.filled, again.left), (0, 0), "{again:?}");
    assert_eq!(head(&api).await, before);
    served.stop().await;
}
