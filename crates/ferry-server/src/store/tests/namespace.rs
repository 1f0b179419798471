//! Ferry's tables in a PostgreSQL schema of their own (docs/tables.md):
//! created there, moved there from `public` once and without losing a
//! row, beside an app's own tables of the same names, and two deployments
//! apart in one database.

use sqlx::{Connection, Row};

use super::*;
use crate::store::PgStore;
use crate::store::postgres::namespace::{self, TABLES};

fn names() -> Vec<&'static str> {
    TABLES.iter().map(|(name, _, _)| *name).collect()
}
use crate::testing::TestDatabase;

/// The tables of `TABLES` present in `schema`, sorted.
async fn ferry_tables_in(conn: &mut sqlx::PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname = ANY($2) ORDER BY 1",
    )
    .bind(schema)
    .bind(names())
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deployment_in_public_moves_to_its_own_schema_with_every_row() {
    let db = TestDatabase::create().await;
    // Ferry as it was: its tables in public, holding records, next to a
    // table of the app's.
    let old = PgStore::connect_in(&db.url, "public").await.unwrap();
    let s = team(&old).await;
    push(
        &old,
        &s,
        "laptop",
        "b1",
        vec![
            upsert("t1", "title", "Tea".into(), hlc(1, "laptop")),
            upsert("t2", "title", "Milk".into(), hlc(2, "laptop")),
        ],
    )
    .await;
    push(
        &old,
        &s,
        "laptop",
        "b2",
        vec![delete("t2", hlc(3, "laptop"))],
    )
    .await;
    let before = old.pull(&s, all(0)).await.unwrap();
    old.close().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.notes (id text PRIMARY KEY, body text);
         INSERT INTO public.notes VALUES ('n1', 'the app''s own');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let moving = ferry_tables_in(&mut conn, "public").await;
    assert!(moving.contains(&"records".to_owned()), "{moving:?}");

    // The new Ferry starts: everything moved, nothing lost or changed.
    let new = PgStore::connect(&db.url).await.unwrap();
    // Only the mark that stops an earlier Ferry from starting there stays.
    assert_eq!(ferry_tables_in(&mut conn, "public").await, ["ferry_schema"]);
    assert_eq!(ferry_tables_in(&mut conn, "ferry").await, moving);
    let after = new.pull(&s, all(0)).await.unwrap();
    assert_eq!(
        serde_json::to_value(&after.records).unwrap(),
        serde_json::to_value(&before.records).unwrap()
    );
    assert_eq!(after.cursor, before.cursor);
    // The batches came along: a retried batch is still recognized.
    let again = push(
        &new,
        &s,
        "laptop",
        "b2",
        vec![delete("t2", hlc(3, "laptop"))],
    )
    .await;
    assert_eq!(again.head, before.cursor);
    // Counters and sequences too: the space's next seq, a new space's id.
    let next = push(
        &new,
        &s,
        "laptop",
        "b3",
        vec![upsert("t3", "title", "Oat".into(), hlc(4, "laptop"))],
    )
    .await;
    assert_eq!(next.head, before.cursor + 1);
    new.create_space(&space("other"), "Other", &user("owner"))
        .await
        .unwrap();
    // The app's table is untouched.
    let body: String = sqlx::query_scalar("SELECT body FROM public.notes WHERE id = 'n1'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(body, "the app's own");
    new.close().await;

    // Starting again moves nothing and finds everything.
    let again = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(records(&again, &s).await.len(), 3);
    again.close().await;
}

#[tokio::test]
async fn an_app_s_own_users_table_is_left_alone() {
    let db = TestDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.users (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO public.users (name) VALUES ('Ada');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let store = PgStore::connect(&db.url).await.unwrap();
    team(&store).await;
    let row = sqlx::query("SELECT count(*), min(name) FROM public.users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (row.get::<i64, _>(0), row.get::<String, _>(1)),
        (1, "Ada".to_owned())
    );
    let ferry_users: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry.users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(ferry_users, 1);
    // Every table the migrations create is one the move knows.
    let mut created = ferry_tables_in(&mut conn, "ferry").await;
    created.push("entitlements".to_owned());
    created.sort();
    let mut known: Vec<String> = names().iter().map(|t| (*t).to_owned()).collect();
    known.sort();
    assert_eq!(created, known);
    let all_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ferry'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        all_tables as usize,
        TABLES.len() - 1,
        "a table the move does not know"
    );
    store.close().await;
}

#[tokio::test]
async fn two_deployments_share_a_database_apart() {
    let db = TestDatabase::create().await;
    let a = PgStore::connect(&db.url).await.unwrap();
    // `user` is a keyword: quoted everywhere, it works.
    let b = PgStore::connect_in(&db.url, "user").await.unwrap();
    let s = team(&a).await;
    push(
        &a,
        &s,
        "laptop",
        "b1",
        vec![upsert("t1", "title", "A".into(), hlc(1, "laptop"))],
    )
    .await;
    // The other deployment has no such space until it makes its own.
    assert!(
        b.pull(&s, all(0))
            .await
            .map_or(true, |p| p.records.is_empty())
    );
    team(&b).await;
    assert_eq!(records(&b, &s).await.len(), 0);
    assert_eq!(records(&a, &s).await.len(), 1);
    assert_ne!(namespace::channel("ferry"), namespace::channel("user"));
    for bad in ["", "Ferry", "a-b", "1a", "a b", "x\"y", &"x".repeat(51)] {
        assert!(PgStore::connect_in(&db.url, bad).await.is_err(), "{bad:?}");
    }
    a.close().await;
    b.close().await;
}
