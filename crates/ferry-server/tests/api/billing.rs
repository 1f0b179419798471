//! The billing gate and its webhooks, with payloads signed here exactly as
//! Stripe and Lemon Squeezy sign them, and every attack on them.

use ferry_server::billing::BillingSettings;
use ferry_server::billing::signature::sign;
use ferry_server::testing::WsClient;

use super::*;

pub(super) const STRIPE: &str = "whsec_current_4f9a2c1b7e";
pub(super) const STRIPE_OLD: &str = "whsec_previous_8d3e6a0f5c";
pub(super) const LEMON: &str = "ls_secret_b81f03c9d2";

pub(super) async fn gated() -> Api {
    Api::configured(|s| {
        s.billing = BillingSettings {
            required_plans: vec!["pro".into()],
            stripe_secrets: vec![STRIPE_OLD.into(), STRIPE.into()],
            lemonsqueezy_secret: Some(LEMON.into()),
            plans: [
                ("price_pro", "pro"),
                ("price_basic", "basic"),
                ("555", "pro"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        }
    })
    .await
}

pub(super) fn now_s() -> u64 {
    wall_ms() / 1000
}

/// A Stripe event as Stripe sends it, `age_s` seconds old.
pub(super) fn stripe_event(id: &str, kind: &str, created: u64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": kind, "created": created,
        "api_version": "2025-10-29", "livemode": false,
        "data": {"object": object}
    }))
    .unwrap()
}

pub(super) fn subscription(user: &str, status: &str, created: u64, period_end: u64) -> Value {
    json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
           "created": created, "current_period_start": created, "current_period_end": period_end,
           "metadata": {"user_id": user},
           "items": {"data": [{"price": {"id": "price_pro", "product": "prod_1"}}]}})
}

pub(super) async fn post_stripe(api: &Api, body: &[u8], signature: Option<String>) -> Reply {
    let mut req = Request::post("/v1/billing/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(sig) = signature {
        req = req.header("Stripe-Signature", sig);
    }
    api.send(req.body(Body::from(body.to_vec())).unwrap()).await
}

pub(super) async fn stripe_signed(api: &Api, body: &[u8]) -> Reply {
    post_stripe(api, body, Some(sign::stripe(STRIPE, now_s(), body))).await
}

pub(super) async fn post_lemon(api: &Api, body: &[u8], signature: Option<String>) -> Reply {
    let mut req = Request::post("/v1/billing/webhooks/lemonsqueezy")
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Event-Name", "subscription_updated");
    if let Some(sig) = signature {
        req = req.header("X-Signature", sig);
    }
    api.send(req.body(Body::from(body.to_vec())).unwrap()).await
}

pub(super) fn lemon_event(
    kind: &str,
    email: &str,
    status: &str,
    updated_at: &str,
    ends_at: Option<&str>,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "meta": {"event_name": kind, "custom_data": {}},
        "data": {"type": "subscriptions", "id": "77", "attributes": {
            "store_id": 1, "customer_id": 4242, "user_email": email, "status": status,
            "variant_id": 555, "product_id": 90,
            "variant_name": "Pro monthly", "renews_at": "2099-01-01T00:00:00.000000Z",
            "ends_at": ends_at, "created_at": "2026-01-01T00:00:00.000000Z",
            "updated_at": updated_at}}
    }))
    .unwrap()
}

/// Whether `user` may sync: the status of a pure pull.
pub(super) async fn sync_status(api: &Api, user: &str) -> StatusCode {
    api.sync(user, &format!("user:{user}"), json!({"client_id": "c"}))
        .await
        .status
}

#[tokio::test]
async fn without_a_required_plan_everyone_syncs() {
    let api = Api::new().await;
    assert_eq!(sync_status(&api, "alice").await, StatusCode::OK);
    let me = api.get("/v1/me", "alice").await;
    assert_eq!(me.body["entitlement"]["plan"], "free");
    assert_eq!(me.body["entitlement"]["sync"], true);
    // Webhooks of providers that are not configured do not exist.
    let body = stripe_event("evt_x", "customer.subscription.created", now_s(), json!({}));
    let r = stripe_signed(&api, &body).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn sync_needs_the_plan_and_everything_else_works_without_it() {
    let api = gated().await;
    let space = "user:alice";
    let me = api.get("/v1/me", "alice").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["entitlement"]["plan"], "free");
    assert_eq!(me.body["entitlement"]["sync"], false);
    for (method, path) in [
        (Method::POST, format!("/v1/spaces/{space}/sync")),
        (Method::GET, format!("/v1/spaces/{space}/changes")),
        (
            Method::GET,
            format!("/v1/spaces/{space}/collections/todos/records"),
        ),
        (
            Method::GET,
            format!("/v1/spaces/{space}/collections/todos/records/t1"),
        ),
        (
            Method::PUT,
            format!("/v1/spaces/{space}/collections/todos/records/t1"),
        ),
        (
            Method::DELETE,
            format!("/v1/spaces/{space}/collections/todos/records/t1"),
        ),
        (Method::GET, format!("/v1/spaces/{space}/stream")),
    ] {
        let body = match method {
            Method::POST => Some(push(
                "c",
                "b1",
                0,
                vec![up("t1", "title", json!("x"), &hlc(1, "c"))],
            )),
            Method::PUT => Some(json!({"fields": {"title": "x"}})),
            _ => None,
        };
        let r = api.call(method.clone(), &path, Some("alice"), body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::PAYMENT_REQUIRED, "payment_required"),
            "{method} {path}"
        );
        assert!(r.body["error"]["message"].as_str().unwrap().contains("pro"));
    }
    // Nothing was written by the refused push.
    let grant = subscription("alice", "active", now_s(), now_s() + 30 * 86400);
    let r = stripe_signed(
        &api,
        &stripe_event("evt_grant", "customer.subscription.created", now_s(), grant),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let pulled = api
        .get(&format!("/v1/spaces/{space}/changes"), "alice")
        .await;
    assert_eq!(pulled.body["changes"], json!([]));
    // Spaces and members are not gated.
    assert_eq!(api.get("/v1/spaces", "bob").await.status, StatusCode::OK);
    assert_eq!(
        api.post("/v1/spaces", "bob", json!({"name": "Bob's"}))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn stripe_events_grant_and_revoke_and_attacks_change_nothing() {
    let api = gated().await;
    assert_eq!(
        sync_status(&api, "alice").await,
        StatusCode::PAYMENT_REQUIRED
    );
    let t0 = now_s() - 3600;
    let created = stripe_event(
        "evt_1",
        "customer.subscription.created",
        t0,
        subscription("alice", "trialing", t0, t0 + 14 * 86400),
    );

    // Attacks first: none of them grants anything.
    let other_key = sign::stripe("whsec_guess", now_s(), &created);
    let stale = sign::stripe(STRIPE, now_s() - 301, &created);
    let future = sign::stripe(STRIPE, now_s() + 301, &created);
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&created).unwrap()).unwrap();
    let signed_compact = sign::stripe(STRIPE, now_s(), &created);
    for (body, sig, why) in [
        (created.clone(), None, "unsigned"),
        (created.clone(), Some(other_key), "another key"),
        (created.clone(), Some(stale), "stale timestamp"),
        (created.clone(), Some(future), "timestamp from the future"),
        (pretty, Some(signed_compact.clone()), "re-serialized body"),
        (
            created.clone(),
            Some("t=abc,v1=def".into()),
            "malformed header",
        ),
        (
            created.clone(),
            Some(signed_compact.replace("v1=", "v0=")),
            "only v0",
        ),
    ] {
        let r = post_stripe(&api, &body, sig).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{why}"
        );
    }
    assert_eq!(
        sync_status(&api, "alice").await,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        api.get("/v1/me", "alice").await.body["entitlement"]["plan"],
        "free"
    );

    // The real event grants; a secret being rotated out still verifies.
    let r = post_stripe(
        &api,
        &created,
        Some(sign::stripe(STRIPE_OLD, now_s(), &created)),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{:?}",
        r.body
    );
    assert_eq!(sync_status(&api, "alice").await, StatusCode::OK);
    let me = api.get("/v1/me", "alice").await.body;
    assert_eq!(me["entitlement"]["plan"], "pro");
    assert_eq!(me["entitlement"]["status"], "trialing");
    assert_eq!(me["entitlement"]["provider"], "stripe");
    assert_eq!(me["entitlement"]["customer_id"], "cus_1");
    assert_eq!(me["entitlement"]["sync"], true);
    assert!(
        me["entitlement"]["current_period_end"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Replayed (Stripe retries for days): acknowledged, applied once.
    let again = stripe_signed(&api, &created).await;
    assert_eq!(
        (again.status, &again.body["outcome"]),
        (StatusCode::OK, &json!("duplicate"))
    );

    // Cancelled now, and then an older update arrives late: it is stale.
    let t2 = now_s() - 60;
    let mut ended = subscription("alice", "canceled", t0, t0 + 14 * 86400);
    ended["ended_at"] = json!(t2);
    ended["canceled_at"] = json!(t2);
    let deleted = stripe_event("evt_3", "customer.subscription.deleted", t2, ended);
    assert_eq!(
        stripe_signed(&api, &deleted).await.body["outcome"],
        "applied"
    );
    assert_eq!(
        sync_status(&api, "alice").await,
        StatusCode::PAYMENT_REQUIRED
    );
    let t1 = now_s() - 1800;
    let older = stripe_event(
        "evt_2",
        "customer.subscription.updated",
        t1,
        subscription("alice", "active", t0, t0 + 30 * 86400),
    );
    assert_eq!(stripe_signed(&api, &older).await.body["outcome"], "stale");
    assert_eq!(
        sync_status(&api, "alice").await,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        api.get("/v1/me", "alice").await.body["entitlement"]["status"],
        "canceled"
    );

    let metrics = api.call(Method::GET, "/metrics", None, None).await.body;
    let text = metrics.as_str().unwrap();
    for line in [
        r#"ferry_billing_events_total{provider="stripe",outcome="applied"} 2"#,
        r#"ferry_billing_events_total{provider="stripe",outcome="duplicate"} 1"#,
        r#"ferry_billing_events_total{provider="stripe",outcome="stale"} 1"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[tokio::test]
async fn stripe_finds_users_by_checkout_customer_and_email() {
    let api = gated().await;
    api.get("/v1/me", "carol").await;
    // The checkout names the app's user and links the subscription and
    // the customer; it grants nothing by itself (it says nothing of what
    // was bought)...
    let checkout = stripe_event(
        "evt_c1",
        "checkout.session.completed",
        now_s() - 120,
        json!({"object": "checkout.session", "mode": "subscription", "payment_status": "paid",
               "customer": "cus_carol", "client_reference_id": "carol",
               "subscription": "sub_carol",
               "customer_details": {"email": "carol@example.com"}, "created": now_s() - 130}),
    );
    assert_eq!(
        stripe_signed(&api, &checkout).await.body["outcome"],
        "applied"
    );
    assert_eq!(
        sync_status(&api, "carol").await,
        StatusCode::PAYMENT_REQUIRED
    );
    // ...so the subscription's own events, which carry only the customer
    // and what was bought, find her.
    let mut sub = subscription("carol", "active", now_s() - 100, now_s() + 86400);
    sub["id"] = json!("sub_carol");
    sub["metadata"] = json!({});
    sub["customer"] = json!("cus_carol");
    let updated = stripe_event(
        "evt_c2",
        "customer.subscription.updated",
        now_s() - 100,
        sub,
    );
    assert_eq!(
        stripe_signed(&api, &updated).await.body["outcome"],
        "applied"
    );
    assert_eq!(sync_status(&api, "carol").await, StatusCode::OK);
    let me = api.get("/v1/me", "carol").await.body;
    assert_eq!(me["entitlement"]["customer_id"], "cus_carol");
    assert!(me["entitlement"]["current_period_end"].is_string());

    // A customer known only by email becomes a user, who has the plan at
    // first sign-in.
    let mut by_email = subscription("x", "active", now_s() - 10, now_s() + 86400);
    by_email["id"] = json!("sub_dan");
    by_email["metadata"] = json!({});
    by_email["customer"] = json!({"id": "cus_dan", "email": "Dan@Example.com"});
    let r = stripe_signed(
        &api,
        &stripe_event("evt_d", "customer.subscription.created", now_s(), by_email),
    )
    .await;
    assert_eq!(r.body["outcome"], "applied");
    let dan = api
        .state
        .store
        .user_by_email("dan@example.com", &UserId::new("unused").unwrap())
        .await
        .unwrap();
    assert_ne!(dan.id.as_str(), "unused");
    assert_eq!(sync_status(&api, dan.id.as_str()).await, StatusCode::OK);

    // No way to find the user yet: kept unlinked, granting no one, until
    // the checkout that names the user arrives (in any order).
    let mut orphan = subscription("x", "active", now_s(), now_s() + 86400);
    orphan["id"] = json!("sub_orphan");
    orphan["metadata"] = json!({});
    orphan["customer"] = json!("cus_unknown");
    let body = stripe_event("evt_o", "customer.subscription.created", now_s(), orphan);
    let r = stripe_signed(&api, &body).await;
    assert_eq!(
        (r.status, &r.body["outcome"], &r.body["linked"]),
        (StatusCode::OK, &json!("applied"), &json!(false)),
        "{:?}",
        r.body
    );
    api.get("/v1/me", "olga").await;
    assert_eq!(
        sync_status(&api, "olga").await,
        StatusCode::PAYMENT_REQUIRED
    );
    let link = stripe_event(
        "evt_o2",
        "checkout.session.completed",
        now_s(),
        json!({"mode": "subscription", "payment_status": "paid", "customer": "cus_unknown",
               "client_reference_id": "olga", "subscription": "sub_orphan"}),
    );
    assert_eq!(stripe_signed(&api, &link).await.body["linked"], true);
    assert_eq!(sync_status(&api, "olga").await, StatusCode::OK);
    // A user id Ferry does not know is refused too, never guessed.
    let ghost = stripe_event(
        "evt_g",
        "customer.subscription.created",
        now_s(),
        subscription("ghost", "active", now_s(), now_s() + 86400),
    );
    assert_eq!(
        stripe_signed(&api, &ghost).await.status,
        StatusCode::NOT_FOUND
    );
    // Signed events Ferry does not act on are acknowledged.
    let invoice = stripe_event("evt_i", "invoice.paid", now_s(), json!({"id": "in_1"}));
    assert_eq!(
        stripe_signed(&api, &invoice).await.body["outcome"],
        "ignored"
    );
    // Signed garbage is a 400, never a 5xx.
    for junk in [
        &b"not json"[..],
        b"[]",
        b"{}",
        br#"{"id":"e","type":"customer.subscription.updated","data":{"object":{}}}"#,
    ] {
        let r = stripe_signed(&api, junk).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(junk)
        );
    }
}

#[tokio::test]
async fn lemonsqueezy_events_grant_and_revoke_and_attacks_change_nothing() {
    let api = gated().await;
    let created = lemon_event(
        "subscription_created",
        "erin@example.com",
        "active",
        "2026-11-01T00:00:00.000000Z",
        None,
    );
    for (body, sig, why) in [
        (created.clone(), None, "unsigned"),
        (
            created.clone(),
            Some(sign::lemonsqueezy("guess", &created)),
            "another key",
        ),
        (created.clone(), Some("zz".into()), "not hex"),
        (
            serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&created).unwrap()).unwrap(),
            Some(sign::lemonsqueezy(LEMON, &created)),
            "re-serialized body",
        ),
    ] {
        let r = post_lemon(&api, &body, sig).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{why}"
        );
    }
    let signed = |body: &[u8]| Some(sign::lemonsqueezy(LEMON, body));
    let r = post_lemon(&api, &created, signed(&created)).await;
    assert_eq!(r.body["outcome"], "applied", "{:?}", r.body);
    let erin = api
        .state
        .store
        .user_by_email("erin@example.com", &UserId::new("unused").unwrap())
        .await
        .unwrap()
        .id;
    assert_eq!(sync_status(&api, erin.as_str()).await, StatusCode::OK);
    assert_eq!(
        post_lemon(&api, &created, signed(&created)).await.body["outcome"],
        "duplicate"
    );

    // Cancelled, but paid until a date still ahead: still syncing.
    let cancelled = lemon_event(
        "subscription_cancelled",
        "erin@example.com",
        "cancelled",
        "2026-11-10T00:00:00.000000Z",
        Some("2099-01-01T00:00:00.000000Z"),
    );
    assert_eq!(
        post_lemon(&api, &cancelled, signed(&cancelled)).await.body["outcome"],
        "applied"
    );
    assert_eq!(sync_status(&api, erin.as_str()).await, StatusCode::OK);
    let me = api.get("/v1/me", erin.as_str()).await.body;
    assert_eq!(me["entitlement"]["status"], "canceled");
    assert_eq!(
        me["entitlement"]["current_period_end"],
        "2099-01-01T00:00:00Z"
    );
    // Expired: no more sync. An older update arriving late changes nothing.
    let expired = lemon_event(
        "subscription_expired",
        "erin@example.com",
        "expired",
        "2026-11-20T00:00:00.000000Z",
        Some("2026-11-20T00:00:00.000000Z"),
    );
    assert_eq!(
        post_lemon(&api, &expired, signed(&expired)).await.body["outcome"],
        "applied"
    );
    let late = lemon_event(
        "subscription_updated",
        "erin@example.com",
        "active",
        "2026-11-05T00:00:00.000000Z",
        None,
    );
    assert_eq!(
        post_lemon(&api, &late, signed(&late)).await.body["outcome"],
        "stale"
    );
    assert_eq!(
        sync_status(&api, erin.as_str()).await,
        StatusCode::PAYMENT_REQUIRED
    );
}

#[tokio::test]
async fn realtime_subscriptions_are_gated_too() {
    let api = gated().await;
    let served = api.serve().await;
    let mut ws = WsClient::connect(&served.base).await;
    ws.auth(&api.token("alice")).await;
    ws.send(json!({"type": "subscribe", "spaces": ["user:alice"]}))
        .await;
    let answer = ws.recv().await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["code"], "payment_required");
    // With the plan, the same connection subscribes.
    let t = now_s();
    let body = stripe_event(
        "evt_ws",
        "customer.subscription.created",
        t,
        subscription("alice", "active", t, t + 86400),
    );
    assert_eq!(stripe_signed(&api, &body).await.body["outcome"], "applied");
    let answer = ws.subscribe(&["user:alice"]).await;
    assert_eq!(answer["spaces"], json!(["user:alice"]), "{answer}");
}
