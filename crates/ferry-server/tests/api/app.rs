//! The web app at `/`: the embedded todo demo, or an app's own directory.

use super::*;

#[tokio::test]
async fn the_demo_is_served_at_the_root_with_its_files() {
    let api = Api::new().await;
    let index = api.call(Method::GET, "/", None, None).await;
    assert_eq!(index.status, StatusCode::OK);
    let html = index.body.as_str().unwrap();
    assert!(html.contains("/app/app.js"), "{html}");
    assert_eq!(index.headers[header::CACHE_CONTROL], "no-cache");
    // Sign-in links open the demo, which finishes the sign-in itself.
    let link = api.call(Method::GET, "/auth/magic-link", None, None).await;
    assert_eq!(link.body, index.body);
    for (path, kind) in [
        ("/app/app.js", "text/javascript; charset=utf-8"),
        ("/app/style.css", "text/css; charset=utf-8"),
        ("/app/ferry_wasm_bg.wasm", "application/wasm"),
        ("/favicon.ico", "image/x-icon"),
    ] {
        let r = api.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers[header::CONTENT_TYPE], kind, "{path}");
    }
    let wasm = api
        .send(
            Request::get("/app/ferry_wasm_bg.wasm")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(wasm.body.as_str().unwrap().starts_with("\0asm"));
    // The icon is fixed bytes; nothing else is taken at its path.
    let icon = api.call(Method::POST, "/favicon.ico", None, None).await;
    assert_eq!(icon.status, StatusCode::METHOD_NOT_ALLOWED);
    for path in ["/app/nope.js", "/app/../Cargo.toml", "/nope", "/v1/nope"] {
        let r = api.call(Method::GET, path, None, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_app_directory_replaces_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>my app</p>").unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/main.js"), "console.log(1)").unwrap();
    let root = dir.path().to_owned();
    let api = Api::configured(move |s| s.app_dir = Some(root)).await;
    let index = api.call(Method::GET, "/", None, None).await;
    assert_eq!(
        (index.status, index.body.as_str()),
        (StatusCode::OK, Some("<p>my app</p>"))
    );
    let js = api.call(Method::GET, "/assets/main.js", None, None).await;
    assert_eq!(js.body.as_str(), Some("console.log(1)"));
    assert!(
        js.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    // Paths the app does not hold get its index, as single-page apps expect.
    let deep = api.call(Method::GET, "/todos/42", None, None).await;
    assert_eq!(deep.body.as_str(), Some("<p>my app</p>"));
    // Nothing outside the directory is reachable.
    let out = api.call(Method::GET, "/../Cargo.toml", None, None).await;
    assert_eq!(
        (out.status, out.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // Sign-in links open Ferry's standalone page; the API is untouched.
    let link = api.call(Method::GET, "/auth/magic-link", None, None).await;
    assert!(link.body.as_str().unwrap().contains("/v1/auth/verify"));
    let api404 = api.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(api404.code(), "not_found");
    let health = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.body["status"], "ok");
}

#[tokio::test]
async fn listed_origins_may_use_the_api_from_their_pages() {
    let api = Api::configured(|s| {
        s.realtime.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/spaces/user:alice/sync")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let ok = api.send(preflight("https://app.example")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let methods = ok.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let refused = api.send(preflight("https://evil.example")).await;
    assert!(
        !refused
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    // The answer itself carries the header for the listed page only.
    let get = |origin: &str| {
        Request::get("/v1/me")
            .header(header::ORIGIN, origin)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", api.token("alice")),
            )
            .body(Body::empty())
            .unwrap()
    };
    let me = api.send(get("https://app.example")).await;
    assert_eq!(
        (me.status, &me.body["user"]["id"]),
        (StatusCode::OK, &json!("alice"))
    );
    assert_eq!(
        me.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let other = api.send(get("https://evil.example")).await;
    assert!(
        !other
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test]
async fn an_app_directory_never_serves_hidden_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>my app</p>").unwrap();
    std::fs::write(dir.path().join(".env"), "DATABASE_PASSWORD=s3cret").unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/config"), "[remote] s3cret").unwrap();
    std::fs::create_dir_all(dir.path().join("assets/.cache")).unwrap();
    std::fs::write(dir.path().join("assets/.cache/x"), "s3cret").unwrap();
    std::fs::create_dir_all(dir.path().join(".well-known")).unwrap();
    std::fs::write(dir.path().join(".well-known/assetlinks.json"), "[]").unwrap();
    let root = dir.path().to_owned();
    let api = Api::configured(move |s| s.app_dir = Some(root)).await;
    for path in [
        "/.env",
        "/%2eenv",
        "/%2Eenv",
        "/.git/config",
        "/assets/.cache/x",
        "/assets/%2ecache/x",
        "/.well-known/../.env",
        "/assets%2f.cache/x",
        "/assets%2F%2ecache%2fx",
    ] {
        let r = api.call(Method::GET, path, None, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
        assert!(!format!("{:?}", r.body).contains("s3cret"), "{path}");
    }
    // A name longer than the file system allows is not a 500 (the flood
    // found it).
    let long = api
        .call(Method::GET, &format!("/{}", "a".repeat(300)), None, None)
        .await;
    assert_eq!(
        (long.status, long.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // What apps publish on purpose stays reachable.
    let published = api
        .call(Method::GET, "/.well-known/assetlinks.json", None, None)
        .await;
    assert_eq!(
        (published.status, published.body.clone()),
        (StatusCode::OK, json!([]))
    );
}
