//! Health, metrics, JWKS and compression.

use super::*;

#[tokio::test]
async fn health_metrics_and_jwks() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    api.sync(
        "alice",
        "team",
        push("c", "b", 0, vec![up("a", "t", json!(1), &hlc(1, "c"))]),
    )
    .await;
    let h = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(h.body, json!({"status": "ok", "db": "ok"}));
    let jwks = api
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let m = api.call(Method::GET, "/metrics", None, None).await;
    let text = m.body.as_str().unwrap();
    assert!(text.contains(r#"ferry_http_requests_total{route="/v1/spaces/{space}/sync",method="POST",status="200"} 1"#), "{text}");
    assert!(text.contains("ferry_changes_applied_total 1"), "{text}");
    assert!(
        text.contains("ferry_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("ferry_db_pool_connections "), "{text}");
    assert!(text.contains("ferry_db_pool_max "), "{text}");
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    let changes: Vec<Value> = (0..200)
        .map(|i| {
            up(
                &format!("r{i}"),
                "title",
                json!("some text to compress"),
                &hlc(1, "c"),
            )
        })
        .collect();
    api.sync("alice", "team", push("c", "b", 0, changes)).await;
    let req = Request::get("/v1/spaces/team/changes")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    // A small answer (a push's) is sent as it is: setting up a compressor
    // costs more than it saves.
    let req = Request::post("/v1/spaces/team/sync")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token("alice")),
        )
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            push(
                "c",
                "b2",
                200,
                vec![up("small", "title", json!("x"), &hlc(2, "c"))],
            )
            .to_string(),
        ))
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get(header::CONTENT_ENCODING).is_none(),
        "{:?}",
        res.headers()
    );
}
