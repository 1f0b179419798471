//! Collections mirrored into tables of the app's own, on PostgreSQL
//! (docs/tables.md): the table made when the schema is applied, written in
//! each commit's transaction, and the app's backend writes to it (insert,
//! update, soft and hard delete, in its own transactions) carried to
//! devices as commits, once each, by whichever node, after a restart too.

use std::time::Duration;

use ferry_server::testing::{Guard, Served, WsClient};
use sqlx::{Connection, PgConnection, Row};

use super::*;

/// Cards of a workspace, mirrored into `public.cards`.
pub const SCHEMA: &str = r#"{"collections": {"cards": {"mode": "strict", "table": "cards",
    "space_column": "workspace_id", "fields": {
        "title": {"type": "string", "required": true, "max_length": 100},
        "url":   {"type": "string", "column": "link"},
        "votes": {"type": "integer"},
        "due":   {"type": "timestamp"},
        "tags":  {"type": "array", "items": "string"}}}}}"#;

fn url(api: &Api) -> String {
    match &api._guard {
        Guard::Postgres(db) => db.url.clone(),
        Guard::Sqlite(_) => panic!("tables are kept on PostgreSQL"),
    }
}

/// A connection as the app's backend has one: its own, on `public`.
pub async fn app_db(api: &Api) -> PgConnection {
    PgConnection::connect(&url(api)).await.unwrap()
}

pub async fn apply(api: &Api, schema: &str) -> Result<u64, ferry_server::StoreError> {
    let schema = ferry_core::schema::Schema::parse(schema).unwrap();
    let json = serde_json::to_string(&schema).unwrap();
    let (version, _) = api.state.store.app_schema().await.unwrap();
    let applied = api.state.store.apply_app_schema(&json, version).await;
    api.state
        .app_schema
        .reload(api.state.store.as_ref())
        .await
        .unwrap();
    applied
}

pub fn card(id: &str, fields: Value, at: &str) -> Value {
    let fields: serde_json::Map<String, Value> = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!({"value": v, "hlc": at})))
        .collect();
    json!({"op": "upsert", "collection": "cards", "id": id, "fields": fields})
}

/// Alice's push of `changes` to `team` from her laptop, as batch `batch`
/// at `cursor`.
pub async fn sync(api: &Api, batch: &str, cursor: u64, changes: Vec<Value>) -> Reply {
    api.sync("alice", "team", push("laptop", batch, cursor, changes))
        .await
}

/// The app's row `id`, as text per column.
pub async fn row(db: &mut PgConnection, id: &str) -> Option<Value> {
    let found = sqlx::query(
        "SELECT to_jsonb(c)::text FROM public.cards c WHERE workspace_id = 'team' AND id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
    .unwrap();
    found.map(|r| serde_json::from_str(r.get::<&str, _>(0)).unwrap())
}

/// The record `id` of `team` as a pull from 0 gives it.
pub async fn record(api: &Api, id: &str) -> Option<Value> {
    let r = api.get("/v1/spaces/team/changes?cursor=0", "alice").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

/// Waits until every captured write was taken off the queue.
pub async fn drained(db: &mut PgConnection) {
    for _ in 0..200 {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.captured")
            .fetch_one(&mut *db)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the captured writes were never applied");
}

#[tokio::test]
async fn a_mirrored_collection_is_a_table_written_in_each_commit() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    assert_eq!(apply(&api, SCHEMA).await.unwrap(), 1);
    let mut db = app_db(&api).await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'cards' ORDER BY ordinal_position",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("workspace_id", "text"),
            ("id", "text"),
            ("due", "timestamp with time zone"),
            ("tags", "ARRAY"),
            ("title", "text"),
            ("link", "text"),
            ("votes", "bigint"),
            ("deleted_at", "timestamp with time zone"),
            ("updated_at", "timestamp with time zone"),
        ]
    );

    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "b1",
                0,
                vec![
                    card(
                        "c1",
                        json!({"title": "Ferry", "url": "https://ferry.dev", "votes": 3,
                               "due": "2026-12-24T18:00:00Z", "tags": ["sync", "rust"]}),
                        &hlc(1, "laptop"),
                    ),
                    card("c2", json!({"title": "Gone soon"}), &hlc(2, "laptop")),
                ],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c1 = row(&mut db, "c1").await.unwrap();
    assert_eq!(c1["title"], "Ferry");
    assert_eq!(c1["link"], "https://ferry.dev");
    assert_eq!(c1["votes"], 3);
    assert_eq!(c1["due"], "2026-12-24T18:00:00+00:00");
    assert_eq!(c1["tags"], json!(["sync", "rust"]));
    assert_eq!(c1["deleted_at"], Value::Null);
    // A delete marks the row and keeps its last values.
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "b2",
                2,
                vec![json!({"op": "delete", "collection": "cards", "id": "c2",
                            "hlc": hlc(3, "laptop")})],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c2 = row(&mut db, "c2").await.unwrap();
    assert_eq!(c2["title"], "Gone soon");
    assert!(c2["deleted_at"].is_string(), "{c2}");
    // Ferry's own writes are never captured back.
    let captured: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.captured")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(captured, 0);
    // A value the table cannot hold is refused at the sync, naming the
    // rule, and nothing of the batch applies.
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "b3",
                3,
                vec![
                    card("c3", json!({"title": "fine"}), &hlc(4, "laptop")),
                    card("c4", json!({"title": "nul\u{0}"}), &hlc(5, "laptop")),
                ],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["rule"], "column");
    assert_eq!(r.body["error"]["details"]["index"], 1);
    assert_eq!(row(&mut db, "c3").await, None);
}

#[tokio::test]
async fn a_table_ferry_cannot_write_is_refused_at_apply_naming_the_column() {
    let api = Api::postgres().await;
    let mut db = app_db(&api).await;
    let refused = |why: &'static str, ddl: &'static str| (why, ddl);
    for (says, ddl) in [
        refused(
            "its column votes is text, which cannot hold",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL, votes text,
                                 PRIMARY KEY (workspace_id, id))",
        ),
        refused(
            "no unique index on exactly (workspace_id, id)",
            "CREATE TABLE cards (workspace_id text, id text PRIMARY KEY, title text NOT NULL)",
        ),
        refused(
            "its column owner is NOT NULL without a default",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL,
                                 owner text NOT NULL, PRIMARY KEY (workspace_id, id))",
        ),
        refused(
            "its column link is NOT NULL, but Ferry writes null there",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL,
                                 link text NOT NULL, PRIMARY KEY (workspace_id, id))",
        ),
        refused(
            "it has no column workspace_id",
            "CREATE TABLE cards (id text PRIMARY KEY, title text)",
        ),
        // A key checked only at commit, one over some rows, and one the
        // database does not keep up to date cannot be written by.
        refused(
            "no unique index on exactly (workspace_id, id)",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL,
                                 PRIMARY KEY (workspace_id, id) DEFERRABLE)",
        ),
        refused(
            "no unique index on exactly (workspace_id, id)",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL);
             CREATE UNIQUE INDEX ON cards (workspace_id, id) WHERE title <> ''",
        ),
        refused(
            "no unique index on exactly (workspace_id, id)",
            "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL);
             CREATE UNIQUE INDEX cards_key ON cards (workspace_id, id);
             UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'cards_key'::regclass",
        ),
    ] {
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS cards; {ddl}"))
            .execute(&mut db)
            .await
            .unwrap();
        let e = apply(&api, SCHEMA).await.unwrap_err().to_string();
        assert!(e.contains(says), "{e} (wanted {says})");
        assert!(e.contains("cards: table \"public\".\"cards\""), "{e}");
    }
    // An app's table that fits is taken as it is, its own columns kept,
    // and the missing ones added.
    sqlx::raw_sql(
        "DROP TABLE cards;
         CREATE TABLE cards (workspace_id varchar, id text, title text NOT NULL,
                             created_at timestamptz NOT NULL DEFAULT now(),
                             PRIMARY KEY (workspace_id, id))",
    )
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(apply(&api, SCHEMA).await.unwrap(), 1);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_name = 'cards' AND column_name IN ('created_at', 'link', 'votes', 'deleted_at')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(n, 4);
    // Truncating it would drop records behind Ferry's back: refused.
    let e = sqlx::raw_sql("TRUNCATE cards")
        .execute(&mut db)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("delete its rows instead"), "{e}");
}

#[tokio::test]
async fn the_backend_s_writes_reach_devices_as_commits() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let served = api.serve().await;
    let mut device = WsClient::connect(&served.base).await;
    device.auth(&api.token("alice")).await;
    device.subscribe(&["team"]).await;
    let mut db = app_db(&api).await;

    // An insert in the app's own transaction, as an ORM makes it.
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO cards (workspace_id, id, title, link, votes, tags, due)
         VALUES ('team', 'c1', 'From the backend', 'https://a', 2, '{x,y}', '2026-12-24 18:00Z')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let heard = device.recv_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(heard["space"], "team", "{heard}");
    let c1 = record(&api, "c1").await.unwrap();
    assert_eq!(c1["fields"]["title"]["value"], "From the backend");
    assert_eq!(c1["fields"]["url"]["value"], "https://a");
    assert_eq!(c1["fields"]["votes"]["value"], 2);
    assert_eq!(c1["fields"]["tags"]["value"], json!(["x", "y"]));
    assert_eq!(c1["fields"]["due"]["value"], "2026-12-24T18:00:00+00:00");
    let stamped = c1["fields"]["title"]["hlc"].as_str().unwrap().to_owned();
    assert!(stamped.ends_with(":server-1"), "{stamped}");

    // An update carries the columns it changed, and nothing else.
    sqlx::query("UPDATE cards SET votes = 5 WHERE id = 'c1'")
        .execute(&mut db)
        .await
        .unwrap();
    drained(&mut db).await;
    let c1 = record(&api, "c1").await.unwrap();
    assert_eq!(c1["fields"]["votes"]["value"], 5);
    assert_eq!(c1["fields"]["title"]["hlc"], stamped.as_str());

    // A write the schema refuses is set aside with the reason; the rest of
    // the queue applies.
    sqlx::raw_sql(
        "INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c2', repeat('x', 101));
         INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c3', 'Kept');
         INSERT INTO cards (workspace_id, id, title) VALUES ('nowhere', 'c4', 'No space');
         INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c5', repeat('y', 17000000));",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    assert_eq!(record(&api, "c2").await, None);
    assert!(record(&api, "c3").await.is_some());
    let refused: Vec<(String, String)> =
        sqlx::query_as("SELECT new_row->>'id', reason FROM ferry.capture_refused ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    // Kept short: the oversized row's reason is all that is printed.
    let refused: Vec<(String, String)> = refused
        .into_iter()
        .map(|(id, why)| (id, why.chars().take(200).collect()))
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(refused[0].0, "c2");
    assert!(
        refused[0].1.contains("max_length") || refused[0].1.contains("at most 100"),
        "{refused:?}"
    );
    assert_eq!(refused[1].0, "c4");
    assert!(refused[1].1.contains("no space"), "{refused:?}");
    // A row larger than a record may be is set aside unread.
    assert_eq!(refused[2].0, "c5");
    assert!(refused[2].1.contains("larger than a record"), "{refused:?}");
    assert_eq!(record(&api, "c5").await, None);

    // A soft delete and a hard delete are deletes.
    sqlx::raw_sql(
        "UPDATE cards SET deleted_at = now() WHERE id = 'c1';
         DELETE FROM cards WHERE id = 'c3';",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    assert!(record(&api, "c1").await.unwrap()["deleted"].is_string());
    assert!(record(&api, "c3").await.unwrap()["deleted"].is_string());
    // The hard-deleted row stays gone; the soft-deleted one keeps its values.
    assert_eq!(row(&mut db, "c3").await, None);
    assert_eq!(
        row(&mut db, "c1").await.unwrap()["title"],
        "From the backend"
    );
    // Every commit was announced: the device heard the space move on.
    let mut last = 0;
    while let Some(signal) = device.recv_within(Duration::from_millis(300)).await {
        last = signal["cursor"].as_u64().unwrap_or(last);
    }
    let head = api
        .get("/v1/spaces/team/changes?cursor=0", "alice")
        .await
        .body["cursor"]
        .as_u64()
        .unwrap();
    assert_eq!(last, head);
    served.stop().await;
}

#[tokio::test]
async fn writes_captured_while_no_node_ran_are_applied_once_by_one_of_two_nodes() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    // Written while no node drains (stopped, crashed, not started yet).
    for i in 0..100 {
        sqlx::query("INSERT INTO cards (workspace_id, id, title) VALUES ('team', $1, 'offline')")
            .bind(format!("a{i:03}"))
            .execute(&mut db)
            .await
            .unwrap();
    }
    // Two nodes on the database, each with its own pool and clock.
    let one = api.serve().await;
    let other_state = AppState::new(
        api._guard.reopen().await,
        Settings::new(ClientId::new("server-2").unwrap(), "http://ferry.test"),
    )
    .await
    .unwrap();
    let two = Served::start(other_state).await;
    // More while both run: each in its own transaction, as requests come.
    for i in 0..100 {
        sqlx::query("INSERT INTO cards (workspace_id, id, title) VALUES ('team', $1, 'online')")
            .bind(format!("b{i:03}"))
            .execute(&mut db)
            .await
            .unwrap();
    }
    drained(&mut db).await;
    // Each write made exactly one commit of one record: the head is 200.
    let r = api
        .get("/v1/spaces/team/changes?cursor=0&limit=1000", "alice")
        .await;
    assert_eq!(r.body["changes"].as_array().unwrap().len(), 200);
    assert_eq!(r.body["cursor"], 200);
    one.stop().await;
    two.stop().await;
}
