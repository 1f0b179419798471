//! The web app at `/`.
//!
//! With no configuration, Ferry serves its todo demo (`examples/todo`, built
//! by `scripts/build-web` and embedded in the binary), so the first
//! `ferry serve` shows a local-first app syncing in the browser: the page at
//! `/`, its files under `/app/`, and the page sign-in links open
//! (`/auth/magic-link`), where the demo itself finishes the sign-in. The
//! same demo written in React with Ferry's `useQuery` is at `/react`.
//!
//! With `app_dir` set, the files of that directory are served instead (an
//! app's own build, with `index.html` for paths it does not hold, as
//! single-page apps expect), and sign-in links open Ferry's standalone
//! sign-in page.

use std::path::Path;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::ApiError;
use crate::state::AppState;

/// The demo's files: name, content type, bytes.
const DEMO_FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../../examples/todo/dist/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../../examples/todo/dist/style.css"),
    ),
    (
        "react.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../../examples/todo/dist/react.js"),
    ),
    (
        "ferry_wasm_bg.wasm",
        "application/wasm",
        include_bytes!("../../../../examples/todo/dist/ferry_wasm_bg.wasm"),
    ),
];

const DEMO_INDEX: &str = include_str!("../../../../examples/todo/dist/index.html");

/// The same demo in React, with Ferry's `useQuery` (`examples/todo/src/react`).
const REACT_INDEX: &str = include_str!("../../../../examples/todo/dist/react.html");

/// The demo changes with each build of Ferry: browsers revalidate.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

async fn demo_index() -> Response {
    ([(header::CACHE_CONTROL, NO_CACHE)], Html(DEMO_INDEX)).into_response()
}

async fn react_index() -> Response {
    ([(header::CACHE_CONTROL, NO_CACHE)], Html(REACT_INDEX)).into_response()
}

/// The demo's icon, which browsers ask for at `/favicon.ico`.
async fn favicon() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/x-icon"),
            ),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        include_bytes!("../../../../examples/todo/dist/favicon.ico").as_slice(),
    )
        .into_response()
}

async fn demo_file(UrlPath(name): UrlPath<String>) -> Response {
    match DEMO_FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (header::CACHE_CONTROL, NO_CACHE),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("no file /app/{name}")).into_response(),
    }
}

/// The page a sign-in link opens when the app is not Ferry's demo: it reads
/// the token from the link's fragment (which browsers never send, so it
/// stays out of logs) and redeems it only when the person clicks, never on a
/// mere GET, which mail scanners do.
async fn magic_link_page() -> Html<&'static str> {
    Html(include_str!("../auth/magic_link.html"))
}

/// The routes of the embedded demo.
pub fn demo_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(demo_index))
        .route("/auth/magic-link", get(demo_index))
        .route("/react", get(react_index))
        .route("/app/{name}", get(demo_file))
        .route("/favicon.ico", get(favicon))
}

/// Whether `path` names a hidden file or directory (a segment starting
/// with `.`, percent-encoded or not), other than `/.well-known/`, which
/// apps publish on purpose. Build directories hold `.env` files, `.git`
/// directories and editor leftovers that must never be served.
fn hidden(path: &str) -> bool {
    // Decoded as the file server decodes it: `%2F` is a separator there,
    // and `%2e` a dot.
    let decoded = crate::http::percent::decode(path);
    decoded
        .split('/')
        .enumerate()
        .any(|(i, segment)| segment.starts_with('.') && !(i == 1 && segment == ".well-known"))
}

/// Screens requests to the app's files: hidden files are not found, and
/// neither is a path the file system cannot hold (a name over its length
/// limit makes the file server answer 500, which no request may cause).
async fn screen(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_owned();
    if hidden(&path) {
        return ApiError::not_found("no such file").into_response();
    }
    let response = next.run(req).await;
    if response.status().is_server_error() {
        tracing::warn!(%path, status = %response.status(), "the app directory could not serve a file");
        return ApiError::not_found("no such file").into_response();
    }
    response
}

/// The routes serving the app in `dir`; the caller makes it the fallback.
/// Hidden files are never served.
pub fn dir_routes(dir: &Path) -> Router<AppState> {
    let files = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .fallback(ServeFile::new(dir.join("index.html")));
    Router::new()
        .route("/auth/magic-link", get(magic_link_page))
        .fallback_service(files)
        .layer(axum::middleware::from_fn(screen))
}

#[cfg(test)]
mod tests {
    use super::hidden;

    #[test]
    fn hidden_paths_are_recognised() {
        for path in [
            "/.env",
            "/a/.git/config",
            "/%2eenv",
            "/x/%2Essh/id",
            "/.well-known/../.env",
        ] {
            assert!(hidden(path), "{path}");
        }
        for path in [
            "/",
            "/index.html",
            "/a.b/c.d",
            "/.well-known/assetlinks.json",
            "/app.js",
        ] {
            assert!(!hidden(path), "{path}");
        }
    }
}
