//! Billing as one customer's payments must never touch another's:
//! subscriptions kept apart (a stranger's checkout in a paying user's
//! email changes nothing of hers), and the plan taken only from what was
//! bought (never metadata, never a buyer's custom data).

use ferry_server::billing::signature::sign;

use super::billing::{
    LEMON, gated, lemon_event, now_s, post_lemon, stripe_event, stripe_signed, subscription,
    sync_status,
};
use super::*;

/// A paying user, `vic`, with email `vic@example.com`, subscribed to pro
/// through a checkout that named her.
async fn paying_victim(api: &Api) {
    let vic = api
        .state
        .store
        .user_by_email("vic@example.com", &UserId::new("vic").unwrap())
        .await
        .unwrap();
    assert_eq!(vic.id.as_str(), "vic");
    let checkout = stripe_event(
        "evt_v0",
        "checkout.session.completed",
        now_s() - 600,
        json!({"mode": "subscription", "payment_status": "paid", "customer": "cus_vic",
               "client_reference_id": "vic", "subscription": "sub_vic"}),
    );
    assert_eq!(stripe_signed(api, &checkout).await.body["linked"], true);
    let mut sub = subscription("vic", "active", now_s() - 600, now_s() + 30 * 86400);
    sub["id"] = json!("sub_vic");
    sub["customer"] = json!("cus_vic");
    sub["metadata"] = json!({});
    let created = stripe_event(
        "evt_v1",
        "customer.subscription.created",
        now_s() - 600,
        sub,
    );
    assert_eq!(
        stripe_signed(api, &created).await.body["outcome"],
        "applied"
    );
    assert_eq!(sync_status(api, "vic").await, StatusCode::OK);
}

#[tokio::test]
async fn another_customers_checkout_in_a_paying_users_email_changes_nothing_of_hers() {
    let api = gated().await;
    paying_victim(&api).await;
    // A stranger checks out under a new customer, typing her email
    // (Stripe does not verify it), then cancels at once.
    let mut theirs = subscription("x", "active", now_s() - 300, now_s() + 86400);
    theirs["id"] = json!("sub_mallory");
    theirs["metadata"] = json!({});
    theirs["customer"] = json!({"id": "cus_mallory", "email": "VIC@example.com"});
    let r = stripe_signed(
        &api,
        &stripe_event(
            "evt_m1",
            "customer.subscription.created",
            now_s() - 300,
            theirs.clone(),
        ),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["linked"]),
        (StatusCode::OK, &json!(false)),
        "{:?}",
        r.body
    );
    theirs["status"] = json!("canceled");
    theirs["ended_at"] = json!(now_s() - 200);
    let r = stripe_signed(
        &api,
        &stripe_event(
            "evt_m2",
            "customer.subscription.deleted",
            now_s() - 200,
            theirs,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Her plan is untouched...
    assert_eq!(sync_status(&api, "vic").await, StatusCode::OK);
    let me = api.get("/v1/me", "vic").await.body;
    assert_eq!(me["entitlement"]["status"], "active", "{me}");
    assert_eq!(me["entitlement"]["customer_id"], "cus_vic");
    // ...and her own renewal, which carries only her customer and
    // subscription, still finds her.
    let mut renewal = subscription("x", "active", now_s() - 100, now_s() + 60 * 86400);
    renewal["id"] = json!("sub_vic");
    renewal["metadata"] = json!({});
    renewal["customer"] = json!("cus_vic");
    let r = stripe_signed(
        &api,
        &stripe_event(
            "evt_v2",
            "customer.subscription.updated",
            now_s() - 100,
            renewal,
        ),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{:?}",
        r.body
    );
    assert_eq!(sync_status(&api, "vic").await, StatusCode::OK);

    // A second subscription of her own that ends leaves the first one
    // granting: access is the union.
    let mut second = subscription("vic", "active", now_s() - 50, now_s() + 86400);
    second["id"] = json!("sub_vic_2");
    second["customer"] = json!("cus_vic");
    stripe_signed(
        &api,
        &stripe_event(
            "evt_v3",
            "customer.subscription.created",
            now_s() - 50,
            second.clone(),
        ),
    )
    .await;
    second["status"] = json!("canceled");
    second["ended_at"] = json!(now_s() - 10);
    stripe_signed(
        &api,
        &stripe_event(
            "evt_v4",
            "customer.subscription.deleted",
            now_s() - 10,
            second,
        ),
    )
    .await;
    assert_eq!(sync_status(&api, "vic").await, StatusCode::OK);
}

#[tokio::test]
async fn the_plan_granted_is_what_was_bought_never_what_the_buyer_or_metadata_says() {
    let api = gated().await;
    api.get("/v1/me", "bea").await;
    // Bea holds basic.
    let mut basic = subscription("bea", "active", now_s() - 600, now_s() + 86400);
    basic["id"] = json!("sub_bea");
    basic["customer"] = json!("cus_bea");
    basic["items"] = json!({"data": [{"price": {"id": "price_basic"}}]});
    basic["metadata"] = json!({"user_id": "bea", "plan": "pro"});
    let r = stripe_signed(
        &api,
        &stripe_event(
            "evt_b1",
            "customer.subscription.created",
            now_s() - 600,
            basic,
        ),
    )
    .await;
    assert_eq!(r.body["outcome"], "applied", "{:?}", r.body);
    let me = api.get("/v1/me", "bea").await.body;
    assert_eq!(
        me["entitlement"]["plan"], "basic",
        "the price, not metadata.plan"
    );
    assert_eq!(sync_status(&api, "bea").await, StatusCode::PAYMENT_REQUIRED);
    // A completed checkout naming no plan grants none, and leaves basic.
    let checkout = stripe_event(
        "evt_b2",
        "checkout.session.completed",
        now_s() - 300,
        json!({"mode": "subscription", "payment_status": "paid", "customer": "cus_bea",
               "client_reference_id": "bea", "subscription": "sub_bea_2"}),
    );
    assert_eq!(stripe_signed(&api, &checkout).await.status, StatusCode::OK);
    assert_eq!(sync_status(&api, "bea").await, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        api.get("/v1/me", "bea").await.body["entitlement"]["plan"],
        "basic"
    );
    // Something nobody mapped grants no plan.
    let mut unknown = subscription("bea", "active", now_s() - 200, now_s() + 86400);
    unknown["id"] = json!("sub_bea_3");
    unknown["items"] =
        json!({"data": [{"price": {"id": "price_free_tier", "lookup_key": "pro_lookalike"}}]});
    stripe_signed(
        &api,
        &stripe_event(
            "evt_b3",
            "customer.subscription.created",
            now_s() - 200,
            unknown,
        ),
    )
    .await;
    assert_eq!(sync_status(&api, "bea").await, StatusCode::PAYMENT_REQUIRED);

    // Lemon Squeezy: custom data a buyer can add to a checkout link does
    // not name the plan; the variant bought does.
    let mut event: Value = serde_json::from_slice(&lemon_event(
        "subscription_created",
        "lee@example.com",
        "active",
        "2026-11-01T00:00:00.000000Z",
        None,
    ))
    .unwrap();
    event["meta"]["custom_data"] = json!({"plan": "pro"});
    event["data"]["attributes"]["variant_id"] = json!(999);
    let body = serde_json::to_vec(&event).unwrap();
    let r = post_lemon(&api, &body, Some(sign::lemonsqueezy(LEMON, &body))).await;
    assert_eq!(r.body["outcome"], "applied", "{:?}", r.body);
    let lee = api
        .state
        .store
        .user_by_email("lee@example.com", &UserId::new("unused").unwrap())
        .await
        .unwrap()
        .id;
    assert_eq!(
        sync_status(&api, lee.as_str()).await,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        api.get("/v1/me", lee.as_str()).await.body["entitlement"]["plan"],
        "none"
    );
}
