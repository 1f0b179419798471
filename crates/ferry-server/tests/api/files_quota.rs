//! File quotas per billing plan (docs/files.md §4): `[billing.file_quotas]`
//! gives a plan its own quota, `free` the users with no active
//! subscription; a plan it does not name keeps `file_quota_bytes`.

use axum::http::StatusCode;
use ferry_server::billing::BillingSettings;
use serde_json::json;

use super::billing::{STRIPE, now_s, stripe_event, stripe_signed, subscription};
use super::files::{put, sha};
use crate::{Api, Reply};

async fn api() -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let api = Api::configured(move |s| {
        s.files.dir = Some(path);
        s.files.max_file_bytes = 10_000;
        s.files.quota_bytes = 1_000;
        s.billing = BillingSettings {
            stripe_secrets: vec![STRIPE.into()],
            plans: [("price_pro", "pro"), ("price_basic", "basic")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            file_quotas: [("free".to_owned(), 500), ("pro".to_owned(), 5_000)].into(),
            ..Default::default()
        };
    })
    .await;
    (api, dir)
}

/// Subscribes `user` to the plan of `price` through Stripe's signed event.
async fn subscribe(api: &Api, user: &str, price: &str) {
    let mut sub = subscription(user, "active", now_s() - 60, now_s() + 30 * 86400);
    sub["id"] = json!(format!("sub_{user}"));
    sub["customer"] = json!(format!("cus_{user}"));
    sub["items"] = json!({"data": [{"price": {"id": price, "product": "prod_1"}}]});
    let event = stripe_event(
        &format!("evt_{user}"),
        "customer.subscription.created",
        now_s(),
        sub,
    );
    let r = stripe_signed(api, &event).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

async fn upload(api: &Api, user: &str, space: &str, fill: u8, size: usize) -> Reply {
    let bytes = vec![fill; size];
    put(api, user, space, &sha(&bytes), &bytes, &[]).await
}

fn refused_at(r: &Reply, limit: u64) {
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["details"]["limit"], limit);
}

#[tokio::test]
async fn a_plan_sets_its_users_file_quota() {
    let (api, _dir) = api().await;
    for user in ["alice", "bob", "carol"] {
        api.space(user, &format!("{user}-files")).await;
    }
    // No subscription: the free plan's 500 bytes.
    refused_at(&upload(&api, "alice", "alice-files", 1, 600).await, 500);
    assert_eq!(
        upload(&api, "alice", "alice-files", 2, 400).await.status,
        StatusCode::CREATED
    );

    // Pro: 5,000 bytes, at once.
    subscribe(&api, "alice", "price_pro").await;
    assert_eq!(
        upload(&api, "alice", "alice-files", 1, 600).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        upload(&api, "alice", "alice-files", 3, 3_900).await.status,
        StatusCode::CREATED
    );
    refused_at(&upload(&api, "alice", "alice-files", 4, 200).await, 5_000);

    // A plan with no quota of its own keeps file_quota_bytes.
    subscribe(&api, "carol", "price_basic").await;
    refused_at(&upload(&api, "carol", "carol-files", 5, 1_001).await, 1_000);
    assert_eq!(
        upload(&api, "carol", "carol-files", 5, 900).await.status,
        StatusCode::CREATED
    );

    // A subscription to a product no plan is mapped from: still free.
    api.space("dave", "dave-files").await;
    subscribe(&api, "dave", "price_unknown").await;
    refused_at(&upload(&api, "dave", "dave-files", 7, 501).await, 500);

    // Another user is not touched by alice's plan.
    refused_at(&upload(&api, "bob", "bob-files", 6, 501).await, 500);
}
