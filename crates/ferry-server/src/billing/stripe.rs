//! Stripe's events: `customer.subscription.created|updated|deleted`, which
//! describe a subscription, and `checkout.session.completed`, which says
//! whose it is.
//!
//! The state's time ([`StoredEntitlement::stamp_ms`]) is the latest of the
//! event's `created` and the subscription's own timestamps (`created`,
//! `current_period_start`, `canceled_at`, `ended_at`), so a redelivered or
//! late event never takes a subscription back to an older state. The plan
//! is what `[billing.plans]` maps the subscription's prices to (by price
//! id, lookup key or product id): what was bought, never metadata.

use serde_json::Value;

use super::event::{EventError, Parsed, PlanMap, UserHints, id_text, plan_of, secs_ms, text};
use crate::store::StoredEntitlement;

/// Reads a Stripe event; `plans` maps what was bought to plans.
pub fn parse(body: &[u8], plans: &PlanMap) -> Result<Parsed, EventError> {
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
        | "customer.subscription.deleted" => Ok(subscription(id, &kind, object, created, plans)?),
        "checkout.session.completed" => Ok(checkout(id, object)),
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

/// The plan of the subscription's items: the first price whose id, lookup
/// key or product `plans` maps.
fn plan(sub: &Value, plans: &PlanMap) -> String {
    let prices: Vec<&Value> = sub
        .pointer("/items/data")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|i| i.get("price")).collect())
        .unwrap_or_default();
    let keys: Vec<String> = prices
        .iter()
        .flat_map(|p| {
            [
                text(p, "id"),
                text(p, "lookup_key"),
                id_text(p.get("product")),
            ]
        })
        .flatten()
        .collect();
    plan_of(plans, keys.iter().map(String::as_str))
}

fn subscription(
    id: String,
    kind: &str,
    sub: &Value,
    created: u64,
    plans: &PlanMap,
) -> Result<Parsed, EventError> {
    let subscription_id = text(sub, "id").ok_or_else(|| EventError("no subscription id".into()))?;
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
        subscription_id: subscription_id.clone(),
        hints: UserHints {
            user_id: sub.get("metadata").and_then(|m| text(m, "user_id")),
            customer_id: customer_id.clone(),
            email,
        },
        state: Some(Box::new(StoredEntitlement {
            subscription_id,
            plan: plan(sub, plans),
            status,
            current_period_end_ms: period_end,
            provider: "stripe".into(),
            customer_id,
            stamp_ms: stamp,
        })),
    })
}

/// A completed checkout links its subscription (and customer) to the user
/// the app named; what the subscription grants comes from the
/// subscription's own events, which carry what was bought.
fn checkout(id: String, session: &Value) -> Parsed {
    let subscription_id = id_text(session.get("subscription"));
    let (Some("subscription"), Some(subscription_id)) =
        (text(session, "mode").as_deref(), subscription_id)
    else {
        return Parsed::Ignored {
            kind: "checkout.session.completed (not a subscription)".into(),
        };
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
    Parsed::Subscription {
        event_id: id,
        subscription_id,
        hints: UserHints {
            user_id,
            customer_id,
            email,
        },
        state: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> PlanMap {
        [
            ("price_pro", "pro"),
            ("team", "team"),
            ("prod_basic", "basic"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn parsed(v: Value) -> Parsed {
        parse(v.to_string().as_bytes(), &plans()).unwrap()
    }

    fn state(p: Parsed) -> (UserHints, StoredEntitlement) {
        match p {
            Parsed::Subscription {
                hints,
                state: Some(state),
                ..
            } => (hints, *state),
            other => panic!("not a subscription's state: {other:?}"),
        }
    }

    #[test]
    fn subscription_events_give_the_state_and_its_time() {
        let p = parsed(json!({
            "id": "evt_1", "type": "customer.subscription.updated", "created": 1_700_000_100,
            "data": {"object": {"id": "sub_1", "customer": "cus_1", "status": "trialing",
                "created": 1_700_000_000, "current_period_start": 1_700_000_050,
                "current_period_end": 1_702_000_000, "metadata": {"user_id": "u_1", "plan": "team"},
                "items": {"data": [{"price": {"id": "price_pro", "product": "prod_x"}}]}}}
        }));
        let (hints, entitlement) = state(p);
        assert_eq!(hints.user_id.as_deref(), Some("u_1"));
        assert_eq!(hints.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(entitlement.subscription_id, "sub_1");
        assert_eq!(entitlement.status, "trialing");
        // The price bought, not the metadata.
        assert_eq!(entitlement.plan, "pro");
        assert_eq!(entitlement.current_period_end_ms, Some(1_702_000_000_000));
        assert_eq!(entitlement.stamp_ms, 1_700_000_100_000);
    }

    #[test]
    fn the_plan_is_what_was_bought_and_nothing_else() {
        let with_items = |items: Value, metadata: Value| {
            state(parsed(json!({
                "id": "evt", "type": "customer.subscription.created", "created": 1,
                "data": {"object": {"id": "sub_1", "status": "active", "metadata": metadata,
                                    "items": {"data": items}}}
            })))
            .1
            .plan
        };
        assert_eq!(
            with_items(
                json!([{"price": {"id": "price_x", "product": "prod_basic"}}]),
                json!({})
            ),
            "basic"
        );
        assert_eq!(
            with_items(
                json!([{"price": {"id": "price_x", "product": {"id": "prod_basic"}}}]),
                json!({})
            ),
            "basic"
        );
        assert_eq!(
            with_items(
                json!([{"price": {"id": "price_x", "lookup_key": "team"}}]),
                json!({})
            ),
            "team"
        );
        // Nothing mapped: no plan, whatever the metadata says.
        assert_eq!(
            with_items(
                json!([{"price": {"id": "price_x"}}]),
                json!({"plan": "pro"})
            ),
            ""
        );
        assert_eq!(with_items(json!([]), json!({"plan": "pro"})), "");
    }

    #[test]
    fn a_deleted_subscription_ends_when_it_ended() {
        let p = parsed(json!({
            "id": "evt_2", "type": "customer.subscription.deleted", "created": 1_700_000_300,
            "data": {"object": {"id": "sub_1", "customer": {"id": "cus_1", "email": "a@example.com"},
                "status": "canceled", "ended_at": 1_700_000_200,
                "items": {"data": [{"current_period_end": 1_702_000_000,
                                    "price": {"lookup_key": "team"}}]}}}
        }));
        let (hints, entitlement) = state(p);
        assert_eq!(hints.email.as_deref(), Some("a@example.com"));
        assert_eq!(entitlement.status, "canceled");
        assert_eq!(entitlement.plan, "team");
        assert_eq!(entitlement.current_period_end_ms, Some(1_700_000_200_000));
    }

    #[test]
    fn checkouts_only_link_and_other_events_are_ignored() {
        let p = parsed(json!({
            "id": "evt_3", "type": "checkout.session.completed", "created": 1_700_000_000,
            "data": {"object": {"mode": "subscription", "payment_status": "paid",
                "customer": "cus_9", "client_reference_id": "u_9", "subscription": "sub_9",
                "metadata": {"plan": "pro"},
                "customer_details": {"email": "b@example.com"}}}
        }));
        let Parsed::Subscription {
            subscription_id,
            hints,
            state,
            ..
        } = p
        else {
            panic!("not a subscription: {p:?}")
        };
        assert_eq!(subscription_id, "sub_9");
        assert_eq!(hints.user_id.as_deref(), Some("u_9"));
        assert_eq!(hints.email.as_deref(), Some("b@example.com"));
        assert_eq!(state, None, "a checkout grants nothing by itself");
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
            json!({"id": "e", "type": "customer.subscription.updated",
                   "data": {"object": {"status": "active"}}}),
        ] {
            assert!(
                parse(bad.to_string().as_bytes(), &plans()).is_err(),
                "{bad}"
            );
        }
        assert!(parse(b"not json", &plans()).is_err());
    }
}
