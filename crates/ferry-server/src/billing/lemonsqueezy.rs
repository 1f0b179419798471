//! Lemon Squeezy's events: `subscription_created`, `_updated`,
//! `_cancelled`, `_expired` (and `_resumed`, `_paused`, `_unpaused`, which
//! carry a status the same way).
//!
//! Lemon Squeezy sends no event id, so a delivery is named by the SHA-256
//! of its body: a retry resends the same bytes. The state's time is the
//! subscription's own `updated_at`. The plan is what `[billing.plans]`
//! maps the subscription's variant or product id to; never `custom_data`,
//! which a buyer can add to a checkout link.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::{EventError, Parsed, PlanMap, UserHints, id_text, plan_of, text};
use crate::store::StoredEntitlement;

fn rfc3339_ms(v: &Value, key: &str) -> Option<u64> {
    let s = text(v, key)?;
    let t = humantime::parse_rfc3339_weak(&s).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// Reads a Lemon Squeezy event; `plans` maps what was bought to plans.
pub fn parse(body: &[u8], plans: &PlanMap) -> Result<Parsed, EventError> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| EventError(format!("not JSON: {e}")))?;
    let kind = event
        .get("meta")
        .and_then(|m| text(m, "event_name"))
        .ok_or_else(|| EventError("no meta.event_name".into()))?;
    let handled = matches!(
        kind.as_str(),
        "subscription_created"
            | "subscription_updated"
            | "subscription_cancelled"
            | "subscription_expired"
            | "subscription_resumed"
            | "subscription_paused"
            | "subscription_unpaused"
    );
    if !handled {
        return Ok(Parsed::Ignored { kind });
    }
    let attrs = event
        .pointer("/data/attributes")
        .filter(|a| a.is_object())
        .ok_or_else(|| EventError("no data.attributes".into()))?;
    let status = text(attrs, "status").ok_or_else(|| EventError("no status".into()))?;
    let status = match status.as_str() {
        "on_trial" => "trialing",
        "cancelled" => "canceled",
        other => other,
    }
    .to_owned();
    let period_end = rfc3339_ms(attrs, "ends_at")
        .or_else(|| rfc3339_ms(attrs, "trial_ends_at").filter(|_| status == "trialing"))
        .or_else(|| rfc3339_ms(attrs, "renews_at"));
    let stamp = rfc3339_ms(attrs, "updated_at")
        .or_else(|| rfc3339_ms(attrs, "created_at"))
        .ok_or_else(|| EventError("no updated_at".into()))?;
    let custom = event.pointer("/meta/custom_data");
    let customer_id = id_text(attrs.get("customer_id"));
    let subscription_id =
        id_text(event.pointer("/data/id")).ok_or_else(|| EventError("no data.id".into()))?;
    let bought = [
        id_text(attrs.get("variant_id")),
        id_text(attrs.get("product_id")),
    ];
    Ok(Parsed::Subscription {
        event_id: hex::encode(Sha256::digest(body)),
        subscription_id: subscription_id.clone(),
        hints: UserHints {
            user_id: custom.and_then(|c| text(c, "user_id")),
            customer_id: customer_id.clone(),
            email: text(attrs, "user_email"),
        },
        state: Some(Box::new(StoredEntitlement {
            subscription_id,
            plan: plan_of(plans, bought.iter().flatten().map(String::as_str)),
            status,
            current_period_end_ms: period_end,
            provider: "lemonsqueezy".into(),
            customer_id,
            stamp_ms: stamp,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> PlanMap {
        [("111", "pro"), ("900", "basic")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn subscription_events_give_the_state_and_its_time() {
        let body = json!({
            "meta": {"event_name": "subscription_cancelled",
                     "custom_data": {"user_id": "u_1", "plan": "enterprise"}},
            "data": {"type": "subscriptions", "id": "1", "attributes": {
                "customer_id": 42, "user_email": "a@example.com", "status": "cancelled",
                "variant_id": 111, "product_id": 900,
                "renews_at": "2026-12-01T00:00:00.000000Z", "ends_at": "2026-12-01T00:00:00.000000Z",
                "created_at": "2026-11-01T00:00:00.000000Z", "updated_at": "2026-11-20T10:00:00.000000Z"}}
        })
        .to_string();
        let p = parse(body.as_bytes(), &plans()).unwrap();
        let Parsed::Subscription {
            event_id,
            subscription_id,
            hints,
            state: Some(entitlement),
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(event_id.len(), 64);
        assert_eq!(subscription_id, "1");
        assert_eq!(hints.user_id.as_deref(), Some("u_1"));
        assert_eq!(hints.customer_id.as_deref(), Some("42"));
        assert_eq!(entitlement.status, "canceled");
        // The variant bought, never the buyer's custom data.
        assert_eq!(entitlement.plan, "pro");
        assert_eq!(entitlement.current_period_end_ms, Some(1_796_083_200_000));
        assert_eq!(entitlement.stamp_ms, 1_795_168_800_000);
        // The same body is the same delivery.
        let Parsed::Subscription {
            event_id: again, ..
        } = parse(body.as_bytes(), &plans()).unwrap()
        else {
            panic!()
        };
        assert_eq!(event_id, again);
        // A variant not mapped falls back to its product; neither: no plan.
        let other = body.replace("\"variant_id\":111", "\"variant_id\":5");
        let Ok(Parsed::Subscription { state: Some(s), .. }) = parse(other.as_bytes(), &plans())
        else {
            panic!()
        };
        assert_eq!(s.plan, "basic");
        let none = other.replace("\"product_id\":900", "\"product_id\":6");
        let Ok(Parsed::Subscription { state: Some(s), .. }) = parse(none.as_bytes(), &plans())
        else {
            panic!()
        };
        assert_eq!(s.plan, "");
    }

    #[test]
    fn other_events_are_ignored_and_broken_ones_refused() {
        let order = json!({"meta": {"event_name": "order_created"}, "data": {}}).to_string();
        assert!(matches!(
            parse(order.as_bytes(), &plans()),
            Ok(Parsed::Ignored { .. })
        ));
        for bad in [
            json!({}),
            json!({"meta": {"event_name": "subscription_updated"}}),
            json!({"meta": {"event_name": "subscription_updated"},
                           "data": {"attributes": {"status": "active"}}}),
            json!({"meta": {"event_name": "subscription_updated"},
                           "data": {"attributes": {"status": "active",
                                    "updated_at": "2026-11-20T10:00:00Z"}}}),
        ] {
            assert!(
                parse(bad.to_string().as_bytes(), &plans()).is_err(),
                "{bad}"
            );
        }
    }
}
