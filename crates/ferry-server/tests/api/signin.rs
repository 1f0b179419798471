//! Sign-in by magic link, refresh and logout (PROTOCOL.md §6).

use super::*;

/// The sign-in token in a mail.
fn token_in(mail: &str) -> String {
    let at = mail
        .find("#token=")
        .expect("the mail holds a link with a token")
        + 7;
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn ask(api: &Api, email: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/auth/magic-link",
        None,
        Some(json!({"email": email})),
    )
    .await
}

async fn verify(api: &Api, token: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/auth/verify",
        None,
        Some(json!({"token": token})),
    )
    .await
}

async fn refresh(api: &Api, token: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

/// Signs `email` in by magic link; the session's answer.
pub async fn sign_in(api: &Api, email: &str, nth_mail: usize) -> Value {
    assert_eq!(ask(api, email).await.status, StatusCode::ACCEPTED);
    let mails = api.mails(nth_mail).await;
    let r = verify(api, &token_in(&mails[nth_mail - 1])).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_magic_link_signs_in_once() {
    let api = Api::new().await;
    let r = ask(&api, " Ada@Example.com ").await;
    assert_eq!((r.status, &r.body), (StatusCode::ACCEPTED, &json!({})));
    let mail = &api.mails(1).await[0];
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(
        mail.contains("http://ferry.test/auth/magic-link#token="),
        "{mail}"
    );
    let token = token_in(mail);

    // Opening the link is a GET of a page that asks for a click: it does
    // not spend the token.
    // (The page is the web app's; see app.rs.)
    let page = api.call(Method::GET, "/auth/magic-link", None, None).await;
    assert_eq!(page.status, StatusCode::OK);

    let r = verify(&api, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "ada@example.com");
    assert_eq!(r.body["expires_in"], 900);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let spaces = api.get_with_token("/v1/spaces", &access).await;
    let id = r.body["user"]["id"].as_str().unwrap();
    assert_eq!(spaces.body["spaces"][0]["id"], format!("user:{id}"));

    let again = verify(&api, &token).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    // The same email signs in to the same user.
    let second = sign_in(&api, "ada@example.com", 2).await;
    assert_eq!(second["user"]["id"], r.body["user"]["id"]);
}

#[tokio::test]
async fn concurrent_redemptions_of_one_link_let_exactly_one_in() {
    let api = std::sync::Arc::new(Api::new().await);
    ask(&api, "ada@example.com").await;
    let token = token_in(&api.mails(1).await[0]);
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (api, token) = (api.clone(), token.clone());
            tokio::spawn(async move { verify(&api, &token).await.status })
        })
        .collect();
    let mut ok = 0;
    for t in tries {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            other => assert_eq!(other, StatusCode::UNAUTHORIZED),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn the_answer_does_not_tell_who_has_an_account() {
    let api = Api::new().await;
    sign_in(&api, "known@example.com", 1).await;
    let known = ask(&api, "known@example.com").await;
    let unknown = ask(&api, "stranger@example.com").await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    let bad = ask(&api, "not an email").await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test]
async fn sign_in_mail_is_rate_limited_per_email() {
    let api = Api::new().await;
    for _ in 0..3 {
        assert_eq!(
            ask(&api, "ada@example.com").await.status,
            StatusCode::ACCEPTED
        );
    }
    let r = ask(&api, "ada@example.com").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=301).contains(&wait), "{wait}");
    // Others are not held up.
    assert_eq!(
        ask(&api, "bob@example.com").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.mails(4).await.len(),
        4,
        "the refused request sent nothing"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let api = Api::new().await;
    let session = sign_in(&api, "ada@example.com", 1).await;
    let r1 = session["refresh_token"].as_str().unwrap();
    let next = refresh(&api, r1).await;
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    let r2 = next.body["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_eq!(next.body["user"], session["user"]);
    assert!(next.body["access_token"].is_string());
    // r1 again: stolen. Its session ends, r2 included.
    let reused = refresh(&api, r1).await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert_eq!(refresh(&api, r2).await.status, StatusCode::UNAUTHORIZED);

    // Logout ends a session.
    let other = sign_in(&api, "ada@example.com", 2).await;
    let r = other["refresh_token"].as_str().unwrap();
    let out = api
        .call(
            Method::POST,
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": r})),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = refresh(&api, r).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // Said as what happened: signed out, not "used before".
    let message = after.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("signed out"), "{message}");
    assert!(!message.contains("used before"), "{message}");
    let reused = refresh(&api, r1).await;
    let message = reused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("used before"), "{message}");
}

#[tokio::test]
async fn malformed_and_unknown_tokens_are_401() {
    let api = Api::new().await;
    let long = "a".repeat(500);
    for token in ["", "has space", "unknown-but-well-formed", long.as_str()] {
        let r = verify(&api, token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{token}"
        );
        let r = refresh(&api, token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{token}"
        );
    }
    let r = api
        .call(
            Method::POST,
            "/v1/auth/verify",
            None,
            Some(json!({"tokn": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// A minimal SMTP server on 127.0.0.1 that accepts every mail and hands
/// each message's DATA to the test.
async fn fake_smtp() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-fake\r\n250 OK\r\n",
                        "DATA" => {
                            write.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            let _ = tx.send(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn the_smtp_mailer_sends_the_link() {
    let (port, mut received) = fake_smtp().await;
    let api = Api::configured(|s| {
        s.mailer = MailerConfig::Smtp {
            url: format!("smtp://127.0.0.1:{port}"),
            from: "Ferry <no-reply@ferry.test>".into(),
        }
    })
    .await;
    assert_eq!(
        ask(&api, "ada@example.com").await.status,
        StatusCode::ACCEPTED
    );
    let data = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("the mail arrives")
        .unwrap();
    assert!(data.contains("To: ada@example.com"), "{data}");
    assert!(data.contains("From: Ferry <no-reply@ferry.test>"), "{data}");
    // The body is quoted-printable: undo its soft breaks and escaped '='.
    let unwrapped = data.replace("=\n", "").replace("=3D", "=");
    let r = verify(&api, &token_in(&unwrapped)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}\n{data}", r.body);
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    let api = Api::configured(|s| s.login_ttl_secs = 0).await;
    ask(&api, "ada@example.com").await;
    let token = token_in(&api.mails(1).await[0]);
    let r = verify(&api, &token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

#[tokio::test]
async fn sign_in_mail_is_rate_limited_per_client_address() {
    use axum::extract::connect_info::MockConnectInfo;
    let api = Api::new().await;
    let from = |ip: [u8; 4]| {
        api.app
            .clone()
            .layer(MockConnectInfo(std::net::SocketAddr::from((ip, 4242))))
    };
    let ask_from = |ip: [u8; 4], email: String| {
        let app = from(ip);
        async move {
            let req = Request::post("/v1/auth/magic-link")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::to_vec(&json!({"email": email})).unwrap(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    // Different emails, one address: 20 pass, then the address is limited.
    for i in 0..20 {
        assert_eq!(
            ask_from([10, 0, 0, 1], format!("u{i}@example.com")).await,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        ask_from([10, 0, 0, 1], "u20@example.com".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        ask_from([10, 0, 0, 2], "u21@example.com".into()).await,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn printed_links_are_limited_per_client_address_not_per_email() {
    use axum::extract::connect_info::MockConnectInfo;
    // Links printed on the operator's terminal reach no mailbox: one
    // person trying Ferry signs in many times with one email.
    let api = Api::configured(|s| s.mailer = MailerConfig::Log).await;
    let app = api
        .app
        .clone()
        .layer(MockConnectInfo(std::net::SocketAddr::from((
            [10, 0, 0, 9],
            4242,
        ))));
    let ask_once = || {
        let app = app.clone();
        async move {
            let req = Request::post("/v1/auth/magic-link")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::to_vec(&json!({"email": "ada@example.com"})).unwrap(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    for _ in 0..20 {
        assert_eq!(ask_once().await, StatusCode::ACCEPTED);
    }
    // The address limit still holds.
    assert_eq!(ask_once().await, StatusCode::TOO_MANY_REQUESTS);
}
