//! Stripe's events: `customer.subscription.created|updated|deleted` and
//! `checkout.session.completed`.
//!
//! The state's time ([`StoredEntitlement::stamp_ms`]) is the latest of the
//! event's `created` and the subscription's own timestamps (`created`,
//! `current_period_start`, `canceled_at`, `ended_at`), so a redelivered or
//! late event never takes a subscription back to an older state.

use serde_json::Value;

use super::event::{EventError, Parsed, UserHints, secs_ms, text};
use crate::store::StoredEntitlement;

/// Reads a Stripe event; `default_plan` names the plan of subscriptions
/// whose metadata names none.
pub fn parse(body: &[u8], default_plan: &str) -> Result<Parsed, EventError> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| EventError(format!("not JSON: {e}")))?;
    let id = text(&event, "id").ok_or_else(|| EventError("no id".into()))?;
    let kind = text(&event, "type").ok_or_else(|| EventError("no type".into()))?;
    let object = event
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or_else(|| EventError("no data.object".into()))?;
    let created = secs_ms(&event, "created").unwrap_or(0);
    match kind.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            Ok(subscription(id, &kind, object, created, default_plan)?)
        }
        "checkout.session.completed" => checkout(id, object, created, default_plan),
        _ => Ok(Parsed::Ignored { kind }),
    }
}

/// The customer: an id, or an expanded object with an id and an email.
fn customer(object: &Value) -> (Option<String>, Option<String>) {
    match object.get("customer") {
        Some(Value::String(id)) if !id.is_empty() => (Some(id.clone()), None),
        Some(c @ Value::Object(_)) => (text(c, "id"), text(c, "email")),
        _ => (None, None),
    }
}

/// The plan: the subscription's `metadata.plan`, else its price's
/// `lookup_key`, else `default_plan`.
fn plan(object: &Value, default_plan: &str) -> String {
    object
        .get("metadata")
        .and_then(|m| text(m, "plan"))
        .or_else(|| {
            object
                .pointer("/items/data/0/price")
                .and_then(|p| text(p, "lookup_key"))
        })
        .unwrap_or_else(|| default_plan.to_owned())
}

fn subscription(
    id: String,
    kind: &str,
    sub: &Value,
    created: u64,
    default_plan: &str,
) -> Result<Parsed, EventError> {
    let status = text(sub, "status").ok_or_else(|| EventError("no status".into()))?;
    let status = match status.as_str() {
        "incomplete_expired" => "expired".to_owned(),
        _ => status,
    };
    // Newer API versions keep the period on each item.
    let period_end = secs_ms(sub, "current_period_end").or_else(|| {
        sub.pointer("/items/data")
            .and_then(Value::as_array)
            .and_then(|items| {
                items
                    .iter()
                    .filter_map(|i| secs_ms(i, "current_period_end"))
                    .max()
            })
    });
    let ended = secs_ms(sub, "ended_at");
    // A deleted subscription has ended: when it ended (at once, or at the
    // end of the period it was cancelled for) is when access ends.
    let (status, period_end) = if kind == "customer.subscription.deleted" {
        ("canceled".to_owned(), ended.or(period_end))
    } else {
        (status, period_end)
    };
    let stamp = [
        Some(created),
        secs_ms(sub, "created"),
        secs_ms(sub, "current_period_start"),
        secs_ms(sub, "canceled_at"),
        ended,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let (customer_id, email) = customer(sub);
    Ok(Parsed::Subscription {
        event_id: id,
        hints: UserHints {
            user_id: sub.get("metadata").and_then(|m| text(m, "user_id")),
            customer_id: customer_id.clone(),
            email,
        },
        entitlement: StoredEntitlement {
            plan: plan(sub, default_plan),
            status,
            current_period_end_ms: period_end,
            provider: "stripe".into(),
            customer_id,
            stamp_ms: stamp,
        },
    })
}

fn checkout(
    id: String,
    session: &Value,
    created: u64,
    default_plan: &str,
) -> Result<Parsed, EventError> {
    if text(session, "mode").as_deref() != Some("subscription") {
        return Ok(Parsed::Ignored {
            kind: "checkout.session.completed (not a subscription)".into(),
        });
    }
    // Paid, or a trial that needs no payment; an asynchronous payment that
    // is still pending grants nothing yet.
    let status = match text(session, "payment_status").as_deref() {
        Some("paid" | "no_payment_required") => "active",
        _ => "incomplete",
    };
    let (customer_id, expanded_email) = customer(session);
    let email = session
        .get("customer_details")
        .and_then(|d| text(d, "email"))
        .or_else(|| text(session, "customer_email"))
        .or(expanded_email);
    let user_id = session
        .get("metadata")
        .and_then(|m| text(m, "user_id"))
        .or_else(|| text(session, "client_reference_id"));
    Ok(Parsed::Subscription {
        event_id: id,
        hints: UserHints {
            user_id,
            customer_id: customer_id.clone(),
            email,
        },
        entitlement: StoredEntitlement {
            plan: plan(session, default_plan),
            status: status.into(),
            current_period_end_ms: None,
            provider: "stripe".into(),
            customer_id,
            stamp_ms: created.max(secs_ms(session, "created").unwrap_or(0)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value) -> Parsed {
        parse(v.to_string().as_bytes(), "pro").unwrap()
    }

    #[test]
    fn subscription_events_give_the_state_and_its_time() {
        let p = parsed(json!({
            "id": "evt_1", "type": "customer.subscription.updated", "created": 1_700_000_100,
            "data": {"object": {"id": "sub_1", "customer": "cus_1", "status": "trialing",
                "created": 1_700_000_000, "current_period_start": 1_700_000_050,
                "current_period_end": 1_702_000_000, "metadata": {"user_id": "u_1"}}}
        }));
        let Parsed::Subscription {
            event_id,
            hints,
            entitlement,
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(event_id, "evt_1");
        assert_eq!(hints.user_id.as_deref(), Some("u_1"));
        assert_eq!(hints.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(entitlement.status, "trialing");
        assert_eq!(entitlement.plan, "pro");
        assert_eq!(entitlement.current_period_end_ms, Some(1_702_000_000_000));
        assert_eq!(entitlement.stamp_ms, 1_700_000_100_000);
    }

    #[test]
    fn a_deleted_subscription_ends_when_it_ended() {
        let p = parsed(json!({
            "id": "evt_2", "type": "customer.subscription.deleted", "created": 1_700_000_300,
            "data": {"object": {"customer": {"id": "cus_1", "email": "a@example.com"},
                "status": "canceled", "ended_at": 1_700_000_200,
                "items": {"data": [{"current_period_end": 1_702_000_000,
                                    "price": {"lookup_key": "team"}}]}}}
        }));
        let Parsed::Subscription {
            hints, entitlement, ..
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(hints.email.as_deref(), Some("a@example.com"));
        assert_eq!(entitlement.status, "canceled");
        assert_eq!(entitlement.plan, "team");
        assert_eq!(entitlement.current_period_end_ms, Some(1_700_000_200_000));
    }

    #[test]
    fn checkouts_link_the_customer_and_other_events_are_ignored() {
        let p = parsed(json!({
            "id": "evt_3", "type": "checkout.session.completed", "created": 1_700_000_000,
            "data": {"object": {"mode": "subscription", "payment_status": "paid",
                "customer": "cus_9", "client_reference_id": "u_9",
                "customer_details": {"email": "b@example.com"}}}
        }));
        let Parsed::Subscription {
            hints, entitlement, ..
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(hints.user_id.as_deref(), Some("u_9"));
        assert_eq!(hints.email.as_deref(), Some("b@example.com"));
        assert_eq!(entitlement.status, "active");
        let one_off = parsed(json!({"id": "evt_4", "type": "checkout.session.completed",
            "data": {"object": {"mode": "payment"}}}));
        assert!(matches!(one_off, Parsed::Ignored { .. }));
        let other = parsed(json!({"id": "evt_5", "type": "invoice.paid", "data": {"object": {}}}));
        assert!(matches!(other, Parsed::Ignored { .. }));
        for bad in [
            json!([]),
            json!({"id": "e"}),
            json!({"id": "e", "type": "x"}),
            json!({"id": "e", "type": "customer.subscription.updated", "data": {"object": {}}}),
        ] {
            assert!(parse(bad.to_string().as_bytes(), "pro").is_err(), "{bad}");
        }
        assert!(parse(b"not json", "pro").is_err());
    }
}
