//! Mirrored collections in Ferry's SQLite file (docs/tables.md, "On
//! SQLite"): a real table another process reads with plain SQL, made and
//! filled by the apply, written in each push's transaction, typed as
//! SQLite types values, and never a name Ferry's own tables have.

use std::time::Duration;

use axum::http::StatusCode;
use ferry_server::testing::WsClient;
use rusqlite::Connection;
use serde_json::json;

use super::tables::{self, apply, card, sync};
use super::*;

const SCHEMA: &str = r#"{"collections": {"cards": {"table": "cards",
    "space_column": "workspace_id", "fields": {
        "title": {"type": "string"},
        "votes": {"type": "integer"},
        "score": {"type": "number"},
        "done":  {"type": "boolean"},
        "due":   {"type": "timestamp"},
        "meta":  {"type": "json"},
        "tags":  {"type": "array", "items": "string"}}}}}"#;

/// The SQLite API, and a connection to its file as another process of the
/// app's would open one.
async fn sqlite_api() -> (Api, Connection) {
    let api = Api::on(testing::fresh_sqlite().await, |_| {}).await;
    let testing::Guard::Sqlite(dir) = &api._guard else {
        panic!("an SQLite store")
    };
    let file = Connection::open(dir.path().join("ferry.db")).unwrap();
    (api, file)
}

type Row = (
    String,
    Option<String>,
    Option<i64>,
    Option<f64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn row(file: &Connection, id: &str) -> Option<Row> {
    file.query_row(
        "SELECT id, title, votes, score, done, due, meta, tags, deleted_at FROM cards
         WHERE workspace_id = 'team' AND id = ?1",
        [id],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        },
    )
    .ok()
}

#[tokio::test]
async fn a_mirrored_collection_is_a_table_in_ferry_s_file() {
    let (api, file) = sqlite_api().await;
    api.space("alice", "team").await;
    // A record held before the collection was mirrored is in the table
    // the apply makes.
    let r = sync(
        &api,
        "b0",
        0,
        vec![card(
            "c0",
            json!({"title": "Earlier", "votes": 1}),
            &hlc(1, "laptop"),
        )],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    apply(&api, SCHEMA).await.unwrap();
    let c0 = row(&file, "c0").unwrap();
    assert_eq!((c0.1.as_deref(), c0.2), (Some("Earlier"), Some(1)));

    let r = sync(
        &api,
        "b1",
        1,
        vec![card(
            "c1",
            json!({"title": "Ferry", "votes": -3, "score": 0.5, "done": true,
                   "due": "2026-12-24T18:00:00+05:30", "meta": {"a": [1, "b"]},
                   "tags": ["x", "y\"z"]}),
            &hlc(2, "laptop"),
        )],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c1 = row(&file, "c1").unwrap();
    assert_eq!(
        c1,
        (
            "c1".into(),
            Some("Ferry".into()),
            Some(-3),
            Some(0.5),
            Some(1),
            Some("2026-12-24T12:30:00.000000Z".into()),
            Some(r#"{"a":[1,"b"]}"#.into()),
            Some(r#"["x","y\"z"]"#.into()),
            None
        )
    );
    // SQLite's own functions read the values.
    let (tag, year): (String, String) = file
        .query_row(
            "SELECT tags ->> 1, strftime('%Y', due) FROM cards WHERE id = 'c1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((tag.as_str(), year.as_str()), ("y\"z", "2026"));

    // A delete marks the row and keeps its last values.
    let r = sync(
        &api,
        "b2",
        2,
        vec![json!({"op": "delete", "collection": "cards", "id": "c1",
                    "hlc": hlc(3, "laptop")})],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c1 = row(&file, "c1").unwrap();
    assert_eq!(c1.1.as_deref(), Some("Ferry"));
    assert!(c1.8.is_some_and(|at| at.ends_with('Z')));

    // A field declared later gets its column, filled for the records
    // already held.
    let wider = SCHEMA.replace(
        r#""title": {"type": "string"},"#,
        r#""title": {"type": "string"}, "note": {"type": "string"},"#,
    );
    let r = sync(
        &api,
        "b3",
        3,
        vec![card(
            "c2",
            json!({"title": "Noted", "note": "kept"}),
            &hlc(4, "laptop"),
        )],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    apply(&api, &wider).await.unwrap();
    let note: Option<String> = file
        .query_row("SELECT note FROM cards WHERE id = 'c2'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(note.as_deref(), Some("kept"));
}

#[tokio::test]
async fn a_row_the_table_refuses_is_the_change_s_422_and_nothing_applies() {
    let (api, file) = sqlite_api().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    // The app adds a rule of its own to the table.
    file.execute_batch("CREATE UNIQUE INDEX one_title ON cards (workspace_id, title)")
        .unwrap();
    let r = sync(
        &api,
        "b1",
        0,
        vec![card("c1", json!({"title": "Same"}), &hlc(1, "laptop"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = sync(
        &api,
        "b2",
        1,
        vec![
            card("c2", json!({"title": "Other"}), &hlc(2, "laptop")),
            card("c3", json!({"title": "Same"}), &hlc(3, "laptop")),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["rule"], "column");
    assert_eq!(r.body["error"]["details"]["index"], 1);
    assert_eq!(r.body["error"]["details"]["id"], "c3");
    // Nothing of the batch: no row, no record.
    assert!(row(&file, "c2").is_none());
    let pulled = api.get("/v1/spaces/team/changes?cursor=0", "alice").await;
    assert_eq!(pulled.body["changes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_name_the_file_already_has_is_refused_at_apply() {
    let (api, file) = sqlite_api().await;
    for (taken, why) in [
        ("records", "already has a table named records"),
        ("sqlite_cards", "keeps names starting with sqlite_"),
    ] {
        let schema = SCHEMA.replace(r#""table": "cards""#, &format!(r#""table": "{taken}""#));
        let e = apply(&api, &schema).await.unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let schema = SCHEMA.replace(
        r#""table": "cards","#,
        r#""table": "cards", "table_schema": "app","#,
    );
    let e = apply(&api, &schema).await.unwrap_err().to_string();
    assert!(e.contains("has none"), "{e}");
    // A table made for one collection is not given to another.
    apply(&api, SCHEMA).await.unwrap();
    let other = SCHEMA.replace(r#"{"cards": {"#, r#"{"notes": {"#);
    let e = apply(&api, &other).await.unwrap_err().to_string();
    assert!(e.contains("was made for the collection cards"), "{e}");
    // A table keyed by other columns than the schema names is refused.
    let rekeyed = SCHEMA.replace(
        r#""space_column": "workspace_id""#,
        r#""space_column": "owner""#,
    );
    let e = apply(&api, &rekeyed).await.unwrap_err().to_string();
    assert!(e.contains("is keyed by (id, workspace_id)"), "{e}");
    // The store checks the names itself, whoever read the schema.
    let bad = r#"{"collections": {"cards": {"table": "Cards; DROP TABLE records", "fields": {}}}}"#;
    let (version, _) = api.state.store.app_schema().await.unwrap();
    let e = api
        .state
        .store
        .apply_app_schema(bad, version)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a name Ferry can give"), "{e}");
    // Nothing was made for the refused ones.
    let tables: i64 = file
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('sqlite_cards', 'notes')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

/// Waits until every write another process queued was taken off the
/// queue.
async fn drained(file: &Connection) {
    for _ in 0..200 {
        let left: i64 = file
            .query_row("SELECT count(*) FROM captured", [], |r| r.get(0))
            .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the captured writes were never applied");
}

#[tokio::test]
async fn another_process_s_writes_reach_devices_as_commits() {
    let (api, file) = sqlite_api().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    // Written while no node runs: queued, and applied once one does.
    file.execute(
        "INSERT INTO cards (workspace_id, id, title, votes, score, done, due, meta, tags)
         VALUES ('team', 'c1', 'From the app', 2, 1.5, 1, '2026-12-24 18:00:00',
                 '{\"k\": [true]}', '[\"x\", \"y\"]')",
        [],
    )
    .unwrap();
    let served = api.serve().await;
    let mut device = WsClient::connect(&served.base).await;
    device.auth(&api.token("alice")).await;
    device.subscribe(&["team"]).await;
    drained(&file).await;
    let c1 = tables::record(&api, "c1").await.unwrap();
    let f = &c1["fields"];
    assert_eq!(f["title"]["value"], "From the app");
    assert_eq!(
        (f["votes"]["value"].clone(), f["score"]["value"].clone()),
        (json!(2), json!(1.5))
    );
    assert_eq!(f["done"]["value"], true);
    assert_eq!(f["due"]["value"], "2026-12-24T18:00:00Z");
    assert_eq!(f["meta"]["value"], json!({"k": [true]}));
    assert_eq!(f["tags"]["value"], json!(["x", "y"]));
    assert!(f["title"]["hlc"].as_str().unwrap().ends_with(":server-1"));

    // An update of one column changes that field alone, and is announced.
    file.execute("UPDATE cards SET title = 'Renamed' WHERE id = 'c1'", [])
        .unwrap();
    let heard = device.recv_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(heard["space"], "team", "{heard}");
    drained(&file).await;
    let c1 = tables::record(&api, "c1").await.unwrap();
    assert_eq!(c1["fields"]["title"]["value"], "Renamed");
    assert_eq!(c1["fields"]["votes"]["value"], 2);

    // A device's write is Ferry's own: written to the table, never queued.
    let r = sync(
        &api,
        "b1",
        0,
        vec![card(
            "c2",
            json!({"title": "From a device"}),
            &hlc(1, "laptop"),
        )],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let queued: i64 = file
        .query_row("SELECT count(*) FROM captured", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0);
    assert_eq!(
        row(&file, "c2").unwrap().1.as_deref(),
        Some("From a device")
    );

    // A soft delete and a hard DELETE are deletes.
    file.execute_batch(
        "UPDATE cards SET deleted_at = datetime('now') WHERE id = 'c1';
         DELETE FROM cards WHERE id = 'c2';",
    )
    .unwrap();
    drained(&file).await;
    for id in ["c1", "c2"] {
        let gone = tables::record(&api, id).await.unwrap();
        assert!(gone["deleted"].is_string(), "{gone}");
    }

    // A write Ferry cannot make is set aside with why; the rest go on.
    file.execute_batch(
        "INSERT INTO cards (workspace_id, id, title) VALUES ('nowhere', 'c3', 'Lost');
         INSERT INTO cards (workspace_id, id, title, votes) VALUES ('team', 'c4', 'Bad', 'many');
         INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c5', 'Fine');
         INSERT INTO captured (collection, space, op, new_row, captured_at)
             VALUES ('cards', 'team', 'INSERT', 'not json', 0);
         INSERT INTO captured (collection, space, op, new_row, captured_at)
             VALUES (x'00', 'team', 'INSERT', NULL, 0);
         INSERT INTO captured (collection, space, op, new_row, captured_at)
             VALUES ('cards', x'ff', 'INSERT', NULL, 0);
         INSERT INTO cards (workspace_id, id, title)
             VALUES ('team', 'c6', replace(hex(zeroblob(8500000)), '0', 'y'));",
    )
    .unwrap();
    drained(&file).await;
    assert!(tables::record(&api, "c5").await.is_some());
    assert!(tables::record(&api, "c4").await.is_none());
    let reasons: Vec<String> = file
        .prepare("SELECT reason FROM capture_refused ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Rows written into the queue by hand are refused too, not the drain's
    // error (which would stall it).
    // Kept short: the oversized row's reason is all that is printed.
    let reasons: Vec<String> = reasons
        .into_iter()
        .map(|r| r.chars().take(200).collect())
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert!(reasons[0].contains("no space"), "{reasons:?}");
    assert!(reasons[1].contains("votes"), "{reasons:?}");
    assert!(reasons[2].contains("not a JSON object"), "{reasons:?}");
    assert!(
        reasons[3].contains("not one Ferry's triggers write"),
        "{reasons:?}"
    );
}
