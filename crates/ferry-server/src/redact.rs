//! URLs as they may be shown: in logs, messages, the start banner. Every
//! credential a URL can carry is replaced by `***`: the password of its
//! user info, and the value of every query parameter that names one, in
//! any case and percent-encoding.

/// Query parameters of a URL that carry a credential (PostgreSQL's
/// `password` and `sslpassword`, and the names other URLs use).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "auth",
];

/// `url` as it may be shown: the password of its user info and the value
/// of every query parameter that carries a credential replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_user_info(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_param(name: &str) -> bool {
    // As the database driver reads it: percent-decoded, in any case.
    let name = crate::http::percent::decode(name).to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
}

/// `url` (no query) with the password of its user info replaced by `***`.
fn redact_user_info(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact_password("postgres://ferry@db/x"),
            "postgres://ferry@db/x"
        );
        assert_eq!(redact_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact_password("postgres://a:b@c@d/x"),
            "postgres://a:***@d/x"
        );
        // Credentials in the query, in any case, beside others that stay.
        assert_eq!(
            redact_password("postgres://ferry@db/x?sslmode=require&password=s3cret"),
            "postgres://ferry@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_password("postgresql:///x?host=/run&PassWord=s3cret&sslpassword=k3y"),
            "postgresql:///x?host=/run&PassWord=***&sslpassword=***"
        );
        assert_eq!(
            redact_password("smtps://me:pw@mail:465?token=t0k"),
            "smtps://me:***@mail:465?token=***"
        );
        assert_eq!(
            redact_password("postgres://h/d?pass%77ord=s3cret"),
            "postgres://h/d?pass%77ord=***"
        );
    }
}
