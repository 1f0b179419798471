//! Storage tests of entitlements and billing events.

use std::sync::Arc;

use super::*;
use crate::store::{BillingEvent, EventOutcome, Store, StoreError, StoredEntitlement};

fn state(status: &str, stamp_ms: u64, customer: Option<&str>) -> StoredEntitlement {
    StoredEntitlement {
        plan: "pro".into(),
        status: status.into(),
        current_period_end_ms: Some(stamp_ms + 1000),
        provider: "stripe".into(),
        customer_id: customer.map(str::to_owned),
        stamp_ms,
    }
}

fn event(id: &str, u: &str, e: StoredEntitlement) -> BillingEvent {
    BillingEvent {
        provider: "stripe".into(),
        event_id: id.into(),
        user: user(u),
        entitlement: e,
    }
}

pub async fn billing_events_apply_once_and_never_go_back(store: Arc<dyn Store>) {
    let u = user("payer");
    store.ensure_user(&u).await.unwrap();
    assert_eq!(store.entitlement(&u).await.unwrap(), None);

    let created = event("evt_1", "payer", state("active", 100, Some("cus_1")));
    assert_eq!(
        store.apply_billing_event(&created).await.unwrap(),
        EventOutcome::Applied
    );
    assert_eq!(
        store.entitlement(&u).await.unwrap(),
        Some(created.entitlement.clone())
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
        store
            .user_by_customer("lemonsqueezy", "cus_1")
            .await
            .unwrap(),
        None
    );

    // The cancellation arrives before an update made earlier: the update
    // is stale, and the customer id stays when an event carries none.
    let canceled = event("evt_3", "payer", state("canceled", 300, None));
    assert_eq!(
        store.apply_billing_event(&canceled).await.unwrap(),
        EventOutcome::Applied
    );
    let late = event("evt_2", "payer", state("active", 200, Some("cus_1")));
    assert_eq!(
        store.apply_billing_event(&late).await.unwrap(),
        EventOutcome::Stale
    );
    assert_eq!(
        store.apply_billing_event(&late).await.unwrap(),
        EventOutcome::Duplicate
    );
    let now = store.entitlement(&u).await.unwrap().unwrap();
    assert_eq!(now.status, "canceled");
    assert_eq!(now.customer_id.as_deref(), Some("cus_1"));

    // Support staff can set it outright.
    let granted = StoredEntitlement {
        provider: "admin".into(),
        status: "granted".into(),
        ..state("granted", 400, None)
    };
    store.set_entitlement(&u, &granted).await.unwrap();
    assert_eq!(store.entitlement(&u).await.unwrap(), Some(granted));

    let stranger = event("evt_9", "nobody", state("active", 1, None));
    let err = store.apply_billing_event(&stranger).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn concurrent_deliveries_of_one_event_apply_once(store: Arc<dyn Store>) {
    let u = user("racer");
    store.ensure_user(&u).await.unwrap();
    let e = event("evt_race", "racer", state("active", 100, Some("cus_r")));
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
