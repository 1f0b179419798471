//! Nothing a client sends produces a 5xx, and every refusal is in the error
//! format of PROTOCOL.md §10.

use super::*;

const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/v1/me"),
    ("GET", "/v1/schema"),
    ("GET", "/v1/spaces"),
    ("POST", "/v1/spaces"),
    ("POST", "/v1/spaces/team/sync"),
    ("GET", "/v1/spaces/team/changes"),
    ("GET", "/v1/spaces/team/members"),
    ("PUT", "/v1/spaces/team/members/bob"),
    ("DELETE", "/v1/spaces/team/members/bob"),
    ("POST", "/v1/spaces/team/invites"),
    ("GET", "/v1/spaces/team/collections/todos/records"),
    ("GET", "/v1/spaces/team/collections/todos/records/t-1"),
    ("PUT", "/v1/spaces/team/collections/todos/records/t-1"),
    ("PATCH", "/v1/spaces/team/collections/todos/records/t-1"),
    ("DELETE", "/v1/spaces/team/collections/todos/records/t-1"),
];

fn bodies() -> Vec<Vec<u8>> {
    let h = "001763798400000:00000:c";
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"x\"".to_vec(),
        b"{".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"fields\": null}".to_vec(),
        b"{\"fields\": {\"a\": 1}, \"role\": \"owner\", \"email\": 5, \"name\": []}".to_vec(),
        b"{\"client_id\": \"c\", \"batch_id\": \"b\", \"changes\": null}".to_vec(),
        b"{\"client_id\": \"c\", \"batch_id\": \"b\", \"changes\": [null, 1, \"x\", []]}".to_vec(),
        b"{\"client_id\": \"c\", \"cursor\": 1e400}".to_vec(),
        b"{\"client_id\": \"c\", \"cursor\": 18446744073709551616}".to_vec(),
        b"{\"client_id\": \"c\", \"limit\": 4294967296}".to_vec(),
    ];
    // Deep nesting, in a value and at the top.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    out.push(
        format!(
            r#"{{"client_id":"c","batch_id":"b","changes":[{{"op":"upsert","collection":"t","id":"i","fields":{{"a":{{"value":{deep},"hlc":"{h}"}}}}}}]}}"#
        )
        .into_bytes(),
    );
    out.push(format!(r#"{{"fields": {{"a": {deep}}}}}"#).into_bytes());
    out.push(deep.into_bytes());
    // A value nested just within the parser's limit is stored and served.
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    out.push(
        format!(
            r#"{{"client_id":"c","batch_id":"n","changes":[{{"op":"upsert","collection":"t","id":"n","fields":{{"a":{{"value":{nested},"hlc":"{h}"}}}}}}]}}"#
        )
        .into_bytes(),
    );
    out.push(format!(r#"{{"fields": {{"a": {nested}, "b": "\u0000\ud83d\ude00"}}}}"#).into_bytes());
    out
}

async fn assert_clean(api: &Api, req: Request<Body>, what: &str) {
    let r = api.send(req).await;
    assert!(r.status.as_u16() < 500, "{what}: {} {:?}", r.status, r.body);
    if r.status.as_u16() >= 400 {
        assert!(r.body["error"]["code"].is_string(), "{what}: {:?}", r.body);
        assert!(
            r.body["error"]["message"].is_string(),
            "{what}: {:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn no_body_on_any_endpoint_yields_a_5xx() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let token = api.token("alice");
    for (method, path) in ENDPOINTS {
        for body in bodies() {
            let req = Request::builder()
                .method(*method)
                .uri(*path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            assert_clean(&api, req, &format!("{method} {path} {shown}")).await;
        }
    }
    // What was accepted is readable again.
    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.status, StatusCode::OK);
}

#[tokio::test]
async fn no_path_or_query_yields_a_5xx() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let token = api.token("alice");
    let long = "a".repeat(5000);
    let paths = [
        format!("/v1/spaces/{long}/changes"),
        format!("/v1/spaces/team/collections/{long}/records/x"),
        "/v1/spaces/%ff%fe/changes".into(),
        "/v1/spaces/te%00am/changes".into(),
        "/v1/spaces/%E2%98%83/changes".into(),
        "/v1/spaces/team/changes?cursor=abc".into(),
        "/v1/spaces/team/changes?cursor=99999999999999999999".into(),
        "/v1/spaces/team/changes?limit=-5&limit=3".into(),
        "/v1/spaces/team/changes?collections=%ff".into(),
        "/v1/spaces/team/changes?unknown=1".into(),
        "/v1/spaces/team/collections/todos/records?after=%20&limit=0".into(),
        "/v1/spaces/team/collections/todos/records?limit=1001".into(),
        "/v1/spaces//changes".into(),
        "/v1/spaces/team/collections/todos/records/".into(),
        "/v1/../health".into(),
    ];
    for path in paths {
        let Ok(req) = Request::get(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
        else {
            continue; // not even a valid URI: no request to send
        };
        assert_clean(&api, req, &path).await;
    }
    for auth in [
        "Bearer".to_owned(),
        "Bearer a.b.c".into(),
        format!("Bearer {}", "a".repeat(100_000)),
        "bearer \u{7f}".into(),
    ] {
        let Ok(req) = Request::get("/v1/me")
            .header(header::AUTHORIZATION, auth.as_str())
            .body(Body::empty())
        else {
            continue;
        };
        assert_clean(&api, req, &auth[..auth.len().min(40)]).await;
    }
}

mod random {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, biased towards the keys a sync request has.
    fn json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "client_id",
            "batch_id",
            "cursor",
            "changes",
            "limit",
            "op",
            "collection",
            "id",
            "fields",
            "value",
            "hlc",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z0-9:_.-]{0,24}".prop_map(Value::from),
            Just(Value::from("001763798400000:00000:c")),
            Just(Value::from("upsert")),
            Just(Value::from("delete")),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    /// Random bodies against one server (one database for all the cases).
    #[test]
    fn random_sync_bodies_never_yield_a_5xx() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api = rt.block_on(async {
            let api = Api::new().await;
            api.space("alice", "team").await;
            api
        });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        });
        runner
            .run(&json(), |body| {
                rt.block_on(async {
                    let r = api
                        .post("/v1/spaces/team/sync", "alice", body.clone())
                        .await;
                    prop_assert!(r.status.as_u16() < 500, "{body}: {:?}", r.body);
                    let path = "/v1/spaces/team/collections/t/records/r";
                    let r = api
                        .call(Method::PUT, path, Some("alice"), Some(body.clone()))
                        .await;
                    prop_assert!(r.status.as_u16() < 500, "{body}: {:?}", r.body);
                    Ok(())
                })
            })
            .unwrap();
    }
}

#[tokio::test]
async fn the_deepest_value_accepted_can_be_read_back() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let mut accepted = 0;
    for depth in 110..140 {
        let value = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let path = format!("/v1/spaces/team/collections/t/records/d{depth}");
        let body = format!(r#"{{"fields": {{"a": {value}}}}}"#);
        let req = Request::put(path.as_str())
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", api.token("alice")),
            )
            .body(Body::from(body))
            .unwrap();
        let r = api.send(req).await;
        assert!(r.status.as_u16() < 500, "depth {depth}: {:?}", r.body);
        if r.status == StatusCode::OK {
            accepted = depth;
            assert_eq!(api.get(&path, "alice").await.status, StatusCode::OK);
            // Written again over sync, it is read back through the merge.
            let h = hlc(1, "c");
            let change: Value = serde_json::from_str(&format!(
                r#"{{"op":"upsert","collection":"t","id":"d{depth}","fields":{{"a":{{"value":{value},"hlc":"{h}"}}}}}}"#
            ))
            .unwrap_or(Value::Null);
            if !change.is_null() {
                let r = api
                    .sync(
                        "alice",
                        "team",
                        push("c", &format!("b{depth}"), 0, vec![change]),
                    )
                    .await;
                assert!(r.status.as_u16() < 500, "depth {depth}: {:?}", r.body);
            }
        }
    }
    assert!(accepted >= 100, "values nested 100 deep are accepted");
    let pull = api.get("/v1/spaces/team/changes", "alice").await;
    assert_eq!(pull.status, StatusCode::OK);
}
