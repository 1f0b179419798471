//! Lemon Squeezy's events: `subscription_created`, `_updated`,
//! `_cancelled`, `_expired` (and `_resumed`, `_paused`, `_unpaused`, which
//! carry a status the same way).
//!
//! Lemon Squeezy sends no event id, so a delivery is named by the SHA-256
//! of its body: a retry resends the same bytes. The state's time is the
//! subscription's own `updated_at`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::{EventError, Parsed, UserHints, text};
use crate::store::StoredEntitlement;

fn rfc3339_ms(v: &Value, key: &str) -> Option<u64> {
    let s = text(v, key)?;
    let t = humantime::parse_rfc3339_weak(&s).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// Reads a Lemon Squeezy event; `default_plan` names the plan of
/// subscriptions whose checkout named none (`custom_data.plan`).
pub fn parse(body: &[u8], default_plan: &str) -> Result<Parsed, EventError> {
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
    let customer_id = match attrs.get("customer_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok(Parsed::Subscription {
        event_id: hex::encode(Sha256::digest(body)),
        hints: UserHints {
            user_id: custom.and_then(|c| text(c, "user_id")),
            customer_id: customer_id.clone(),
            email: text(attrs, "user_email"),
        },
        entitlement: StoredEntitlement {
            plan: custom
                .and_then(|c| text(c, "plan"))
                .unwrap_or_else(|| default_plan.to_owned()),
            status,
            current_period_end_ms: period_end,
            provider: "lemonsqueezy".into(),
            customer_id,
            stamp_ms: stamp,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subscription_events_give_the_state_and_its_time() {
        let body = json!({
            "meta": {"event_name": "subscription_cancelled", "custom_data": {"user_id": "u_1"}},
            "data": {"type": "subscriptions", "id": "1", "attributes": {
                "customer_id": 42, "user_email": "a@example.com", "status": "cancelled",
                "renews_at": "2026-12-01T00:00:00.000000Z", "ends_at": "2026-12-01T00:00:00.000000Z",
                "created_at": "2026-11-01T00:00:00.000000Z", "updated_at": "2026-11-20T10:00:00.000000Z"}}
        })
        .to_string();
        let p = parse(body.as_bytes(), "pro").unwrap();
        let Parsed::Subscription {
            event_id,
            hints,
            entitlement,
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(event_id.len(), 64);
        assert_eq!(hints.user_id.as_deref(), Some("u_1"));
        assert_eq!(hints.customer_id.as_deref(), Some("42"));
        assert_eq!(entitlement.status, "canceled");
        assert_eq!(entitlement.current_period_end_ms, Some(1_796_083_200_000));
        assert_eq!(entitlement.stamp_ms, 1_795_168_800_000);
        // The same body is the same delivery.
        let Parsed::Subscription {
            event_id: again, ..
        } = parse(body.as_bytes(), "pro").unwrap()
        else {
            panic!()
        };
        assert_eq!(event_id, again);
    }

    #[test]
    fn other_events_are_ignored_and_broken_ones_refused() {
        let order = json!({"meta": {"event_name": "order_created"}, "data": {}}).to_string();
        assert!(matches!(
            parse(order.as_bytes(), "pro"),
            Ok(Parsed::Ignored { .. })
        ));
        for bad in [
            json!({}),
            json!({"meta": {"event_name": "subscription_updated"}}),
            json!({"meta": {"event_name": "subscription_updated"},
                           "data": {"attributes": {"status": "active"}}}),
        ] {
            assert!(parse(bad.to_string().as_bytes(), "pro").is_err(), "{bad}");
        }
    }
}
