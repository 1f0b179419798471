//! A mirrored table's own rules (a `CHECK`, a unique index, a
//! trigger of its own) are the app's: a change whose row the table refuses is
//! `422 invalid_change` naming the change and the rule `column`, and
//! nothing of its batch applies, never a server error.

use super::tables::{SCHEMA, app_db, apply, card, drained, record, row};
use super::*;

async fn refused(api: &Api, batch: &str, changes: Vec<Value>) -> Value {
    let r = api
        .sync("alice", "team", push("laptop", batch, 0, changes))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_change", "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["rule"], "column", "{:?}", r.body);
    let mut details = r.body["error"]["details"].clone();
    details["message"] = r.body["error"]["message"].clone();
    details
}

#[tokio::test]
async fn a_row_the_app_s_table_refuses_is_its_change_s_422_and_nothing_applies() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    let mut db = app_db(&api).await;
    sqlx::raw_sql(
        "CREATE TABLE cards (workspace_id text, id text, title text NOT NULL CONSTRAINT short_titles CHECK (length(title) <= 20),
                             votes bigint CONSTRAINT votes_not_negative CHECK (votes >= 0),
                             PRIMARY KEY (workspace_id, id))",
    )
    .execute(&mut db)
    .await
    .unwrap();
    apply(&api, SCHEMA).await.unwrap();
    sqlx::raw_sql("CREATE UNIQUE INDEX one_card_a_link ON cards (workspace_id, link)")
        .execute(&mut db)
        .await
        .unwrap();

    // The second change breaks the table's CHECK: it is the one named.
    let details = refused(
        &api,
        "b1",
        vec![
            card("c1", json!({"title": "Fine"}), &hlc(1, "laptop")),
            card(
                "c2",
                json!({"title": "Less", "votes": -1}),
                &hlc(2, "laptop"),
            ),
        ],
    )
    .await;
    assert_eq!(details["index"], 1, "{details}");
    assert_eq!(details["id"], "c2", "{details}");
    assert!(
        details["message"]
            .as_str()
            .is_some_and(|m| m.contains("votes_not_negative")),
        "{details}"
    );
    // Longer than the table allows, though the schema allows 100.
    let details = refused(
        &api,
        "b2",
        vec![card(
            "c3",
            json!({"title": "x".repeat(30)}),
            &hlc(3, "laptop"),
        )],
    )
    .await;
    assert_eq!(details["index"], 0, "{details}");
    // Two records of one batch given one link: the one written second.
    let details = refused(
        &api,
        "b3",
        vec![
            card(
                "c4",
                json!({"title": "A", "url": "https://a"}),
                &hlc(4, "laptop"),
            ),
            card(
                "c5",
                json!({"title": "B", "url": "https://a"}),
                &hlc(5, "laptop"),
            ),
        ],
    )
    .await;
    assert_eq!(details["index"], 1, "{details}");
    assert_eq!(details["id"], "c5", "{details}");
    // Nothing of the refused batches applied, in Ferry's store or the table.
    for id in ["c1", "c2", "c3", "c4", "c5"] {
        assert_eq!(record(&api, id).await, None, "{id}");
        assert_eq!(row(&mut db, id).await, None, "{id}");
    }
    // What the table takes goes through.
    let r = api
        .sync(
            "alice",
            "team",
            push(
                "laptop",
                "b4",
                0,
                vec![card(
                    "c1",
                    json!({"title": "Fine", "votes": 0}),
                    &hlc(6, "laptop"),
                )],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(row(&mut db, "c1").await.unwrap()["votes"], 0);
}

/// `user`'s push of one card `c1` titled `title` to `space`: its status.
async fn send(api: &Api, user: &str, space: &str, batch: &str, title: &str) -> StatusCode {
    let change = card("c1", json!({"title": title}), &hlc(1, user));
    let r = api
        .sync(user, space, push(user, batch, 0, vec![change]))
        .await;
    r.status
}

#[tokio::test]
async fn one_id_in_two_spaces_is_two_rows_and_no_member_reaches_the_other() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    api.space("mallory", "mine").await;
    api.add("alice", "team", "victor", "viewer").await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    assert_eq!(
        send(&api, "alice", "team", "a1", "Ours").await,
        StatusCode::OK
    );
    // The same id written in another space is another row.
    assert_eq!(
        send(&api, "mallory", "mine", "m1", "Theirs").await,
        StatusCode::OK
    );
    // Mallory's push to the team, and a viewer's, are refused before any row.
    let outsider = send(&api, "mallory", "team", "m2", "Taken").await;
    assert_eq!(outsider, StatusCode::NOT_FOUND);
    let viewer = send(&api, "victor", "team", "v1", "Mine").await;
    assert_eq!(viewer, StatusCode::FORBIDDEN);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT workspace_id, title FROM cards WHERE id = 'c1' ORDER BY 1")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("mine".to_owned(), "Theirs".to_owned()),
            ("team".to_owned(), "Ours".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_backend_write_the_table_refuses_back_is_set_aside_and_the_queue_goes_on() {
    let api = Api::postgres().await;
    api.space("alice", "team").await;
    apply(&api, SCHEMA).await.unwrap();
    let mut db = app_db(&api).await;
    // The app's own trigger refuses a title, but only in Ferry's writes
    // (the row written back after the merge), after the statements before
    // it in the drain's transaction did their part.
    sqlx::raw_sql(
        "CREATE FUNCTION no_forbidden() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF current_setting('ferry.origin', true) LIKE 'ferry:%'
                AND NEW.title = 'forbidden' THEN
                 RAISE EXCEPTION 'no forbidden titles here';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER no_forbidden BEFORE INSERT OR UPDATE ON cards
             FOR EACH ROW EXECUTE FUNCTION no_forbidden();",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let served = api.serve().await;
    sqlx::raw_sql(
        "INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c1', 'forbidden');
         INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c2', 'Fine');",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    assert_eq!(record(&api, "c1").await, None);
    assert_eq!(
        record(&api, "c2").await.unwrap()["fields"]["title"]["value"],
        "Fine"
    );
    let refused: Vec<(String, String)> =
        sqlx::query_as("SELECT new_row->>'id', reason FROM ferry.capture_refused")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "c1");
    assert!(refused[0].1.contains("no forbidden titles"), "{refused:?}");
    // Later writes still flow, past a row written into the queue by hand
    // that is not an object (refused, not the drain's error).
    sqlx::raw_sql(
        "INSERT INTO ferry.captured (collection, space, op, new_row)
             VALUES ('cards', 'team', 'INSERT', '[1]');
         INSERT INTO cards (workspace_id, id, title) VALUES ('team', 'c3', 'Later');",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drained(&mut db).await;
    assert!(record(&api, "c3").await.is_some());
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM ferry.capture_refused WHERE new_row = '[1]'::jsonb")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(reason.contains("not a JSON object"), "{reason}");
    served.stop().await;
}
