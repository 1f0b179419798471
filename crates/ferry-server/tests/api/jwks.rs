//! An external provider publishing a JWKS, served by a fake provider on
//! 127.0.0.1, and the forged tokens that must never get in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ferry_server::auth::jwks::{JwksConfig, default_algorithms};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

use super::*;

/// A 2048-bit RSA key (PKCS#1 DER), made for these tests only.
const RSA_DER_B64: &str = "MIIEowIBAAKCAQEApwJkvDBvuTweykHMs2aV4uLAGR2WTKo2ICQXYLc2cy1OlputjupUGh8aGrG8/HMJ/XVI3JMUoMUksWefGbTyjxLSUR+px27R5ptVIgH/7qYkiolUyOj789NGccr6ZX4vSt+x1C87PLInyXIf+/zMZyuWumVbQxJQ3vAhDb1AmMjwdRZpaZa5UPU1vmklftS1SRNKcktCFS/14ULenMh3ftv/fctLQxAU7FXRLEw9wd30N9sOSm3ZcuUsiPtvRUXtrzyxO2QYDlYjYevZFLHqQzBEEwHRtgQHARSjGpSzmQtb67+jvzwDfGFBWloiJpDjISDqno8nB2dHFrVkwtMJlwIDAQABAoIBAB1L+bDbjFXBuqL/XPHhnoyA+3LMcme7eig0PJeePCKDQaSA5bbK23sDlrg1ErJ0Wb3JG8F52aYEP1YRl+LSD7TSd+t8MvPFuHOMLyh6klNieMmGosVlvYD9wH9IvJkeRByN1iujJ3CTzg/0AbFaHN9CUbwb+KDw7xfUpu+6kcDbQgQeNLrxIToMR3lwkQW2IHMVA3FLM1aguv5z0xloxMyp6ni64VHaNkcBldcPwWSST13n//JKF3j5c5KVUEOjPtbbE/aXDs+Y+YCSrCbWKq1/rBYPL/lmtJiFG0vKBWHIdfxqDWc3Cqb/LcBI7o2qhMcCJMgemF4n68A+7YtLxp0CgYEA5c3iPdWho7bt1NoWGCT7xVm+6aXFW3snF3WNUoWMv6nMneUiv/ZFwutK6ASxzq9JHvIcSQMkOMPxhUV9HGZPtj+z9YQJlNEtgj03/iT+arJYX4Mmx9h2W9AAlVWX/zXMFEEpq4QjuHnvGCzu15KIx7R5gt+gj+6pWOyiGbGwpgMCgYEAugwJsrS0fkn/rzxY9w4LhpfXQXNLHHtqQ8pF1EyttnEpobwq3Uue3LRSj3I7LIS4h420wOKjEitDOcuNIpWq6GqrpE8m0g1BMD7Ot1SFoGsDkaSonNoqKnJAUJjVnwEEV7aFOnt19CSCEMi1qGDnTuJlV4HBHrZP/z1sBfoAk90CgYAOeKOZnz1ZkOhzMfSYOqP8LoWeMwk1lJDGomlu2+gcHbY77zT7/6cu+iAycjE8Qb+KClcLpf3+8R/hc5nIUw0L/gD4IgN0cqO6At7myy+WSnrUMO8dQJ1bdMLEpKo4sQuT7vKP0XdqY4tR62py+tBQOyY3vpte1PmnFueyVIU6PwKBgCNnHQVTm7EYdb4r1qYUlx7ikASVYuqllYAW4pjWiovYFtr/Co0X0cAf1EIVs6ryCodI8OdveSaA8wbxdAbrwhz+B3F52mJIQWpj2URLoi33jzNMyQUoArQXD6QGoUfjkqb6RXnuenCd7d4xw1eqMPny3OP8/fnRKYHhd0ff3fJFAoGBAIfVv6eurbSB0/VjuQTvb9dsxbMWj8Gr9gyJa6V84gnXhMKdZXIax16FEGtPl6jyRizzWGggiz8f0UkCwBYwZF10sj2PnlVcKCzGaAEt9cq7YnX5LC8lX7ecfFiRm9H1cvPt5Q7BXld063aKpFnseCDGSUwnBoiJ8I0qcTr3ePWU";
const ISS: &str = "https://idp.example";
const AUD: &str = "ferry-app";

/// The fake provider: serves `keys` and counts the fetches.
struct Provider {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicU64>,
}

async fn provider(keys: Vec<Value>) -> Provider {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicU64::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"keys": *k.lock().unwrap()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Provider { url, keys, fetches }
}

fn ed_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn ed_jwk(key: &SigningKey, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())})
}

fn ed_sign(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

fn rsa_der() -> Vec<u8> {
    STANDARD.decode(RSA_DER_B64).unwrap()
}

fn rsa_jwk(kid: &str) -> Value {
    let key = rsa::RsaPrivateKey::from_pkcs1_der(&rsa_der()).unwrap();
    json!({"kty": "RSA", "alg": "RS256", "kid": kid,
           "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
           "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())})
}

fn rsa_sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&rsa_der())).unwrap()
}

fn now() -> u64 {
    wall_ms() / 1000
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "email": "ada@example.com", "email_verified": true,
           "iss": ISS, "aud": AUD, "exp": now() + 600})
}

async fn with_provider(p: &Provider, min_refresh: Duration) -> Api {
    let url = p.url.clone();
    Api::configured(move |s| {
        s.jwks = Some(JwksConfig {
            url,
            algorithms: default_algorithms(),
            issuer: Some(ISS.into()),
            audience: Some(AUD.into()),
            min_refresh,
            email_trust: Default::default(),
        })
    })
    .await
}

#[tokio::test]
async fn tokens_signed_with_published_keys_sign_in_and_the_set_is_fetched_once() {
    let p = provider(vec![ed_jwk(&ed_key(1), "ed-1"), rsa_jwk("rsa-1")]).await;
    let api = with_provider(&p, Duration::from_secs(60)).await;
    let ed = api
        .get_with_token("/v1/me", &ed_sign(&ed_key(1), "ed-1", &claims("u-ed")))
        .await;
    assert_eq!(ed.status, StatusCode::OK, "{:?}", ed.body);
    assert_eq!(ed.body["user"]["email"], "ada@example.com");
    let rs = api
        .get_with_token(
            "/v1/me",
            &rsa_sign(Algorithm::RS256, "rsa-1", &claims("u-rs")),
        )
        .await;
    assert_eq!(rs.status, StatusCode::OK, "{:?}", rs.body);
    assert_ne!(rs.body["user"]["id"], ed.body["user"]["id"]);
    // An address the provider did not verify is not believed.
    let mut unverified = claims("u-unverified");
    unverified["email"] = json!("someone@example.com");
    unverified["email_verified"] = json!(false);
    let r = api
        .get_with_token("/v1/me", &ed_sign(&ed_key(1), "ed-1", &unverified))
        .await;
    assert_eq!(
        (r.status, &r.body["user"]["email"]),
        (StatusCode::OK, &Value::Null)
    );
    // A flood of unknown key ids costs no fetch within the interval.
    for i in 0..20 {
        let r = api
            .get_with_token(
                "/v1/me",
                &ed_sign(&ed_key(9), &format!("forged-{i}"), &claims("x")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
    // Ferry's own tokens still work.
    assert_eq!(api.get("/v1/me", "alice").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_the_provider_adds_is_found_after_the_interval() {
    let p = provider(vec![ed_jwk(&ed_key(1), "ed-1")]).await;
    let api = with_provider(&p, Duration::from_millis(300)).await;
    assert_eq!(
        api.get_with_token("/v1/me", &ed_sign(&ed_key(1), "ed-1", &claims("a")))
            .await
            .status,
        StatusCode::OK
    );
    p.keys.lock().unwrap().push(ed_jwk(&ed_key(2), "ed-2"));
    let rotated = ed_sign(&ed_key(2), "ed-2", &claims("b"));
    // Within the interval the set is not fetched again.
    assert_eq!(
        api.get_with_token("/v1/me", &rotated).await.status,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        api.get_with_token("/v1/me", &rotated).await.status,
        StatusCode::OK
    );
    assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let p = provider(vec![ed_jwk(&ed_key(1), "ed-1"), rsa_jwk("rsa-1")]).await;
    let api = with_provider(&p, Duration::from_secs(60)).await;
    let good = claims("victim");
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let valid = ed_sign(&ed_key(1), "ed-1", &good);
    let parts: Vec<&str> = valid.split('.').collect();
    // HS/RS confusion: an HMAC keyed with the provider's public RSA key.
    let rsa_public = {
        let key = rsa::RsaPrivateKey::from_pkcs1_der(&rsa_der()).unwrap();
        key.n().to_bytes_be()
    };
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&rsa_public)).unwrap();
    let mut jku = Header::new(Algorithm::EdDSA);
    jku.kid = Some("attacker".into());
    jku.jku = Some(p.url.clone());

    let cases: Vec<(&str, String)> = vec![
        (
            "signed by a key not in the set",
            ed_sign(&ed_key(7), "ed-1", &good),
        ),
        ("unknown kid", ed_sign(&ed_key(1), "nope", &good)),
        ("no kid", {
            let der = ed_key(1).to_pkcs8_der().unwrap();
            jsonwebtoken::encode(
                &Header::new(Algorithm::EdDSA),
                &good,
                &EncodingKey::from_ed_der(der.as_bytes()),
            )
            .unwrap()
        }),
        (
            "expired",
            ed_sign(&ed_key(1), "ed-1", &with("exp", json!(now() - 120))),
        ),
        (
            "not valid yet",
            ed_sign(&ed_key(1), "ed-1", &with("nbf", json!(now() + 120))),
        ),
        (
            "wrong audience",
            ed_sign(&ed_key(1), "ed-1", &with("aud", json!("other-app"))),
        ),
        (
            "wrong issuer",
            ed_sign(
                &ed_key(1),
                "ed-1",
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with("sub", json!("admin"))),
                parts[2]
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "ed-1"})),
                parts[1]
            ),
        ),
        ("HS256 keyed with the public RSA key", confused),
        (
            "RS384, not allowed",
            rsa_sign(Algorithm::RS384, "rsa-1", &good),
        ),
        (
            "RS256 naming the EdDSA key",
            rsa_sign(Algorithm::RS256, "ed-1", &good),
        ),
        ("jku header", {
            let der = ed_key(1).to_pkcs8_der().unwrap();
            jsonwebtoken::encode(&jku, &good, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
        }),
    ];
    for (case, token) in cases {
        let r = api.get_with_token("/v1/me", &token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{case}: {:?}",
            r.body
        );
    }
}
