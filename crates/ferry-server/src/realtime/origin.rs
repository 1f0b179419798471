//! Which web pages may open a realtime connection, and use the API from
//! another origin (CORS).
//!
//! Browsers send `Origin` with every WebSocket handshake and let any page
//! connect anywhere; the server has to say no itself. Ferry accepts pages of
//! its own origin (the `Host` they connected to, or `public_url`), the
//! configured `allowed_origins` (`*` for any), and requests without `Origin`
//! (native apps, curl), which no browser page can send.

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

use crate::error::ApiError;
use crate::state::Settings;

/// `403 forbidden` unless the request's origin may connect, by `settings`.
pub fn allowed(headers: &HeaderMap, settings: &Settings) -> Result<(), ApiError> {
    check(
        headers,
        &settings.public_url,
        &settings.realtime.allowed_origins,
    )
}

/// `403 forbidden` unless the request's origin may connect.
pub fn check(headers: &HeaderMap, public_url: &str, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ApiError::forbidden("the Origin header is not text"))?
        .trim_end_matches('/');
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let same_host = host.is_some_and(|h| authority(origin).eq_ignore_ascii_case(h));
    if same_host || listed(origin, public_url, allowed) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "pages of {origin} may not connect; add it to allowed_origins"
        )))
    }
}

/// Whether pages of `origin` are listed: `public_url`, or in `allowed`
/// (`*` for any).
pub fn listed(origin: &str, public_url: &str, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    allowed
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(public_url))
        .map(|a| a.trim_end_matches('/'))
        .any(|a| a == "*" || (!a.is_empty() && a.eq_ignore_ascii_case(origin)))
}

/// Cross-origin use of the API from web pages of the listed origins (the
/// same `allowed_origins` as realtime): browsers ask first (a preflight),
/// and only listed pages may send requests with a bearer token and read
/// the answers. Pages of Ferry's own origin need none of this.
pub fn cors(settings: &Settings) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let (public_url, allowed) = (
        settings.public_url.clone(),
        settings.realtime.allowed_origins.clone(),
    );
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| listed(o, &public_url, &allowed))
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            header::CONTENT_RANGE,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static(ferry_core::protocol::PROTOCOL_HEADER),
            header::HeaderName::from_static(crate::files::NAME_HEADER),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::ETAG,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_LENGTH,
            header::HeaderName::from_static(crate::files::OFFSET_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// `host[:port]` of an origin (`scheme://host[:port]`).
fn authority(origin: &str) -> &str {
    origin.split_once("://").map_or("", |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn own_pages_and_apps_without_origin_connect() {
        let none: Vec<String> = Vec::new();
        assert!(check(&headers(None, "h:1"), "", &none).is_ok());
        assert!(check(&headers(Some("http://h:1"), "h:1"), "", &none).is_ok());
        assert!(
            check(
                &headers(Some("https://App.io/"), "x"),
                "https://app.io",
                &none
            )
            .is_ok()
        );
        let refused = check(&headers(Some("http://evil.example"), "h:1"), "", &none);
        assert_eq!(refused.unwrap_err().code(), "forbidden");
        // A page on another port of the same host is another origin.
        assert!(check(&headers(Some("http://h:2"), "h:1"), "", &none).is_err());
        assert!(check(&headers(Some("null"), "h:1"), "", &none).is_err());
    }

    #[test]
    fn allowed_origins_are_listed_or_any() {
        let list = vec!["https://app.example.com".to_owned()];
        let h = headers(Some("https://app.example.com"), "api.example.com");
        assert!(check(&h, "", &list).is_ok());
        let other = headers(Some("https://other.example.com"), "api.example.com");
        assert!(check(&other, "", &list).is_err());
        assert!(check(&other, "", &["*".to_owned()]).is_ok());
    }
}
