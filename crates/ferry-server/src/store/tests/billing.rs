//! Storage tests of subscriptions and billing events.

use std::sync::Arc;

use super::*;
use crate::store::{BillingEvent, EventOutcome, Store, StoreError, StoredEntitlement};

fn state(sub: &str, status: &str, stamp_ms: u64, customer: Option<&str>) -> StoredEntitlement {
    StoredEntitlement {
        subscription_id: sub.into(),
        plan: "pro".into(),
        status: status.into(),
        current_period_end_ms: Some(stamp_ms + 1000),
        provider: "stripe".into(),
        customer_id: customer.map(str::to_owned),
        stamp_ms,
    }
}

fn event(id: &str, u: Option<&str>, e: StoredEntitlement) -> BillingEvent {
    BillingEvent {
        provider: "stripe".into(),
        event_id: id.into(),
        subscription_id: e.subscription_id.clone(),
        customer_id: e.customer_id.clone(),
        user: u.map(user),
        state: Some(e),
    }
}

pub async fn billing_events_apply_once_and_never_go_back(store: Arc<dyn Store>) {
    let u = user("payer");
    store.ensure_user(&u).await.unwrap();
    assert_eq!(store.entitlements(&u).await.unwrap(), []);

    let created = event(
        "evt_1",
        Some("payer"),
        state("sub_1", "active", 100, Some("cus_1")),
    );
    assert_eq!(
        store.apply_billing_event(&created).await.unwrap(),
        EventOutcome::Applied
    );
    assert_eq!(
        store.entitlements(&u).await.unwrap(),
        [created.state.clone().unwrap()]
    );
    assert_eq!(
        store.apply_billing_event(&created).await.unwrap(),
        EventOutcome::Duplicate
    );
    assert_eq!(
        store.user_by_customer("stripe", "cus_1").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        store.subscription_owner("stripe", "sub_1").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        store
            .user_by_customer("lemonsqueezy", "cus_1")
            .await
            .unwrap(),
        None
    );

    // The cancellation arrives before an update made earlier: the update
    // is stale, and the customer id stays when an event carries none.
    let canceled = event("evt_3", None, state("sub_1", "canceled", 300, None));
    assert_eq!(
        store.apply_billing_event(&canceled).await.unwrap(),
        EventOutcome::Applied
    );
    let late = event("evt_2", None, state("sub_1", "active", 200, Some("cus_1")));
    assert_eq!(
        store.apply_billing_event(&late).await.unwrap(),
        EventOutcome::Stale
    );
    assert_eq!(
        store.apply_billing_event(&late).await.unwrap(),
        EventOutcome::Duplicate
    );
    let now = store.entitlements(&u).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].status, "canceled");
    assert_eq!(now[0].customer_id.as_deref(), Some("cus_1"));

    // Support staff's grant is one more subscription beside it.
    let granted = StoredEntitlement {
        subscription_id: "grant:payer".into(),
        provider: "admin".into(),
        status: "granted".into(),
        ..state("x", "granted", 400, None)
    };
    store.set_entitlement(&u, &granted).await.unwrap();
    let held = store.entitlements(&u).await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(held.contains(&granted), "{held:?}");

    let stranger = event("evt_9", Some("nobody"), state("sub_9", "active", 1, None));
    let err = store.apply_billing_event(&stranger).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn subscriptions_are_kept_apart_and_linked_once(store: Arc<dyn Store>) {
    let (victim, other) = (user("victim"), user("other"));
    store.ensure_user(&victim).await.unwrap();
    store.ensure_user(&other).await.unwrap();
    let paid = event(
        "evt_v1",
        Some("victim"),
        state("sub_v", "active", 100, Some("cus_v")),
    );
    store.apply_billing_event(&paid).await.unwrap();
    // Another customer's subscription, attached to the same user, then
    // cancelled: the first one is untouched.
    let stranger = event(
        "evt_s1",
        Some("victim"),
        state("sub_s", "active", 150, Some("cus_s")),
    );
    store.apply_billing_event(&stranger).await.unwrap();
    let cancel = event(
        "evt_s2",
        None,
        state("sub_s", "canceled", 160, Some("cus_s")),
    );
    store.apply_billing_event(&cancel).await.unwrap();
    let held = store.entitlements(&victim).await.unwrap();
    let status = |sub: &str| {
        held.iter()
            .find(|e| e.subscription_id == sub)
            .map(|e| e.status.clone())
    };
    assert_eq!(status("sub_v").as_deref(), Some("active"), "{held:?}");
    assert_eq!(status("sub_s").as_deref(), Some("canceled"), "{held:?}");
    // A subscription linked to a user stays that user's, whoever a later
    // event names.
    let claimed = event(
        "evt_v2",
        Some("other"),
        state("sub_v", "active", 200, Some("cus_v")),
    );
    store.apply_billing_event(&claimed).await.unwrap();
    assert_eq!(
        store.subscription_owner("stripe", "sub_v").await.unwrap(),
        Some(victim.clone())
    );
    assert_eq!(store.entitlements(&other).await.unwrap(), []);

    // A subscription nobody claims yet is kept unlinked, and a checkout
    // that arrives later links it, state and all.
    let orphan = event("evt_o1", None, state("sub_o", "active", 300, Some("cus_o")));
    assert_eq!(
        store.apply_billing_event(&orphan).await.unwrap(),
        EventOutcome::Applied
    );
    assert_eq!(
        store.subscription_owner("stripe", "sub_o").await.unwrap(),
        None
    );
    assert_eq!(
        store.user_by_customer("stripe", "cus_o").await.unwrap(),
        None
    );
    let checkout = BillingEvent {
        provider: "stripe".into(),
        event_id: "evt_o2".into(),
        subscription_id: "sub_o".into(),
        customer_id: Some("cus_o".into()),
        user: Some(other.clone()),
        state: None,
    };
    assert_eq!(
        store.apply_billing_event(&checkout).await.unwrap(),
        EventOutcome::Applied
    );
    assert_eq!(
        store.entitlements(&other).await.unwrap(),
        [orphan.state.clone().unwrap()]
    );
    // A checkout first: the subscription waits, granting nothing, for its
    // state.
    let early = BillingEvent {
        event_id: "evt_e1".into(),
        subscription_id: "sub_e".into(),
        customer_id: Some("cus_e".into()),
        ..checkout.clone()
    };
    store.apply_billing_event(&early).await.unwrap();
    let waiting = store.entitlements(&other).await.unwrap();
    let linked = waiting
        .iter()
        .find(|e| e.subscription_id == "sub_e")
        .unwrap();
    assert!(!linked.is_active(0) && linked.plan.is_empty(), "{linked:?}");
    let described = event("evt_e2", None, state("sub_e", "active", 50, None));
    assert_eq!(
        store.apply_billing_event(&described).await.unwrap(),
        EventOutcome::Applied
    );
    let now = store.entitlements(&other).await.unwrap();
    let sub_e = now.iter().find(|e| e.subscription_id == "sub_e").unwrap();
    assert_eq!(sub_e.status, "active");
    assert_eq!(sub_e.customer_id.as_deref(), Some("cus_e"));
}

pub async fn concurrent_deliveries_of_one_event_apply_once(store: Arc<dyn Store>) {
    let u = user("racer");
    store.ensure_user(&u).await.unwrap();
    let e = event(
        "evt_race",
        Some("racer"),
        state("sub_r", "active", 100, Some("cus_r")),
    );
    let outcomes = futures_util::future::join_all((0..8).map(|_| {
        let (store, e) = (store.clone(), e.clone());
        async move { store.apply_billing_event(&e).await.unwrap() }
    }))
    .await;
    let applied = outcomes
        .iter()
        .filter(|o| **o == EventOutcome::Applied)
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
}
