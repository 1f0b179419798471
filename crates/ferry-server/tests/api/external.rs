//! Tokens of an external identity provider sharing an HS256 secret, and the
//! forged tokens that must never get in: each case here fails if its check
//! is removed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_server::auth::external::{EmailTrust, SharedSecretConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const ISS: &str = "https://project.supabase.co/auth/v1";
const AUD: &str = "authenticated";

async fn supabase_style() -> Api {
    Api::configured(|s| {
        s.shared_secret = Some(SharedSecretConfig {
            secret: SECRET.into(),
            issuer: Some(ISS.into()),
            audience: Some(AUD.into()),
            email_trust: EmailTrust::Verified,
        })
    })
    .await
}

fn now() -> u64 {
    wall_ms() / 1000
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "email": "Ada@Example.com", "email_verified": true, "iss": ISS, "aud": AUD,
           "exp": now() + 600, "iat": now(), "role": "authenticated"})
}

fn sign(header: Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Header::new(Algorithm::HS256), claims, SECRET.as_bytes())
}

#[tokio::test]
async fn a_providers_token_signs_its_user_in() {
    let api = supabase_style().await;
    let token = hs256(&claims("6b1f0c9e-5a3d-4f7e-9b2a-1c2d3e4f5a6b"));
    let me = api.get_with_token("/v1/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["user"]["email"], "ada@example.com");
    let id = me.body["user"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("u_"), "a Ferry user id: {id}");
    // The same subject is the same user, with a personal space.
    let again = api
        .get_with_token(
            "/v1/me",
            &hs256(&claims("6b1f0c9e-5a3d-4f7e-9b2a-1c2d3e4f5a6b")),
        )
        .await;
    assert_eq!(again.body["user"]["id"], id.as_str());
    let reply = api.get_with_token("/v1/spaces", &token).await;
    assert_eq!(reply.body["spaces"][0]["id"], format!("user:{id}"));
    // Ferry's own tokens keep working beside the provider's.
    assert_eq!(api.get("/v1/me", "alice").await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_and_unfit_tokens_are_refused() {
    let api = supabase_style().await;
    let good = claims("user-1");
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let header_with = |f: fn(&mut Header)| {
        let mut h = Header::new(Algorithm::HS256);
        f(&mut h);
        sign(h, &good, SECRET.as_bytes())
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let valid = hs256(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    // Ferry's own public key, as an attacker would use it for HS/RS confusion.
    let jwks = api
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    let public_key = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();

    let cases: Vec<(&str, String)> = vec![
        (
            "wrong secret",
            sign(
                Header::new(Algorithm::HS256),
                &good,
                b"another-secret-of-enough-length-1234",
            ),
        ),
        ("expired", hs256(&with("exp", json!(now() - 120)))),
        ("not valid yet", hs256(&with("nbf", json!(now() + 120)))),
        ("no exp", hs256(&without("exp"))),
        ("wrong audience", hs256(&with("aud", json!("anon")))),
        ("no audience", hs256(&without("aud"))),
        (
            "wrong issuer",
            hs256(&with("iss", json!("https://evil.example/auth/v1"))),
        ),
        ("no issuer", hs256(&without("iss"))),
        ("no subject", hs256(&without("sub"))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                parts[1]
            ),
        ),
        (
            "alg HS384",
            sign(Header::new(Algorithm::HS384), &good, SECRET.as_bytes()),
        ),
        (
            "HS256 keyed with Ferry's public key",
            sign(Header::new(Algorithm::HS256), &good, &public_key),
        ),
        (
            "jku header",
            header_with(|h| h.jku = Some("https://evil.example/jwks.json".into())),
        ),
        (
            "x5u header",
            header_with(|h| h.x5u = Some("https://evil.example/cert.pem".into())),
        ),
        (
            "x5c header",
            header_with(|h| h.x5c = Some(vec!["MIIB".into()])),
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
        ("oversized", hs256(&with("pad", json!("x".repeat(9000))))),
        (
            "EdDSA with an unknown kid",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "kid": "nope"})),
                parts[1],
                parts[2]
            ),
        ),
        ("not a JWT", "a.b".into()),
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
    // The embedded-key case needs a key object in the header.
    let mut h = Header::new(Algorithm::HS256);
    h.jwk = serde_json::from_value(json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(b"attacker")}))
        .ok();
    assert!(h.jwk.is_some());
    let r = api
        .get_with_token("/v1/me", &sign(h, &good, SECRET.as_bytes()))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "jwk header");
}

#[tokio::test]
async fn without_a_configured_secret_hs256_is_refused() {
    let api = Api::new().await;
    let r = api
        .get_with_token("/v1/me", &hs256(&claims("user-1")))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

/// A provider that signs a token for whatever address someone typed at
/// sign-up, verified or not.
async fn provider_with(trust: EmailTrust) -> Api {
    Api::configured(move |s| {
        s.shared_secret = Some(SharedSecretConfig {
            secret: SECRET.into(),
            issuer: Some(ISS.into()),
            audience: Some(AUD.into()),
            email_trust: trust,
        })
    })
    .await
}

#[tokio::test]
async fn an_unverified_email_claim_reaches_no_one_elses_account() {
    let api = provider_with(EmailTrust::Verified).await;
    // The attacker signs up at the provider with the victim's address,
    // which the provider never verified.
    let mut forged = claims("attacker-1");
    forged["email"] = json!("Victim@Example.com");
    for unverified in [json!(null), json!(false), json!("false"), json!(1)] {
        forged["email_verified"] = unverified;
        let me = api.get_with_token("/v1/me", &hs256(&forged)).await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
        assert_eq!(me.body["user"]["email"], Value::Null, "{:?}", me.body);
    }
    let attacker = api.get_with_token("/v1/me", &hs256(&forged)).await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The victim signs in by magic link: their own account, not the
    // attacker's.
    let session = super::signin::sign_in(&api, "victim@example.com", 1).await;
    let victim = session["user"]["id"].as_str().unwrap();
    assert_ne!(victim, attacker, "the victim got the attacker's account");
    assert_eq!(session["user"]["email"], "victim@example.com");
    // Invites to that address go to the victim.
    api.space("owner", "team").await;
    let invited = api
        .post(
            "/v1/spaces/team/invites",
            "owner",
            json!({"email": "victim@example.com", "role": "editor"}),
        )
        .await;
    assert_eq!(invited.body["user_id"], victim, "{:?}", invited.body);
    let attackers_spaces = api.get_with_token("/v1/spaces", &hs256(&forged)).await;
    assert!(
        !attackers_spaces.body.to_string().contains("team"),
        "{:?}",
        attackers_spaces.body
    );
}

#[tokio::test]
async fn a_verified_email_links_and_the_trust_setting_is_obeyed() {
    // Verified (the claim as a boolean or, as Cognito sends it, a string).
    let api = provider_with(EmailTrust::Verified).await;
    for (sub, verified) in [("v-1", json!(true)), ("v-2", json!("true"))] {
        let mut c = claims(sub);
        c["email"] = json!(format!("{sub}@Example.com"));
        c["email_verified"] = verified;
        let me = api.get_with_token("/v1/me", &hs256(&c)).await;
        assert_eq!(me.body["user"]["email"], format!("{sub}@example.com"));
    }
    // Always: for a provider that signs in verified addresses only.
    let api = provider_with(EmailTrust::Always).await;
    let mut c = claims("a-1");
    c.as_object_mut().unwrap().remove("email_verified");
    let me = api.get_with_token("/v1/me", &hs256(&c)).await;
    assert_eq!(me.body["user"]["email"], "ada@example.com");
    // Never: even a verified claim is not recorded.
    let api = provider_with(EmailTrust::Never).await;
    let me = api.get_with_token("/v1/me", &hs256(&claims("n-1"))).await;
    assert_eq!(me.body["user"]["email"], Value::Null);
    assert_eq!("verified".parse::<EmailTrust>(), Ok(EmailTrust::Verified));
    assert!("yes".parse::<EmailTrust>().is_err());
}

#[tokio::test]
async fn a_secret_anyone_could_guess_is_refused_at_start() {
    for secret in ["", " ", "short", &"x".repeat(31)] {
        let (store, _guard) = testing::fresh_store().await;
        let mut settings = Settings::new(ClientId::new("s").unwrap(), "http://ferry.test");
        settings.shared_secret = Some(SharedSecretConfig {
            secret: secret.into(),
            issuer: None,
            audience: None,
            email_trust: EmailTrust::Verified,
        });
        let err = AppState::new(store, settings).await.unwrap_err();
        assert!(err.to_string().contains("JWT secret"), "{secret:?}: {err}");
    }
    for (stripe, lemon) in [(vec![String::new()], None), (vec![], Some("ls".to_owned()))] {
        let (store, _guard) = testing::fresh_store().await;
        let mut settings = Settings::new(ClientId::new("s").unwrap(), "http://ferry.test");
        settings.billing.stripe_secrets = stripe;
        settings.billing.lemonsqueezy_secret = lemon;
        let err = AppState::new(store, settings).await.unwrap_err();
        assert!(err.to_string().contains("webhook secret"), "{err}");
    }
    // A gate with webhooks but nothing that grants a plan would lock every
    // subscriber out at their next event.
    let (store, _guard) = testing::fresh_store().await;
    let mut settings = Settings::new(ClientId::new("s").unwrap(), "http://ferry.test");
    settings.billing.required_plans = vec!["pro".into()];
    settings.billing.stripe_secrets = vec!["whsec_0123456789abcdef".into()];
    let err = AppState::new(store, settings).await.unwrap_err();
    assert!(err.to_string().contains("[billing.plans]"), "{err}");
}
