//! What a verified webhook says, read from the provider's JSON: whose
//! subscription it is (hints to find the user) and its state.

use crate::store::StoredEntitlement;

/// How to find the user a subscription belongs to, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserHints {
    /// Ferry's user id, set by the app when it started the checkout
    /// (`metadata.user_id`, `client_reference_id`, `custom_data.user_id`).
    pub user_id: Option<String>,
    /// The provider's customer id, linked to a user by an earlier event.
    pub customer_id: Option<String>,
    /// The customer's email.
    pub email: Option<String>,
}

/// A webhook's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A subscription's new state, or (a checkout) whose it is.
    Subscription {
        /// The event id (each applies once).
        event_id: String,
        /// The provider's id of the subscription.
        subscription_id: String,
        /// Whose it is.
        hints: UserHints,
        /// The state; `None` when the event only says whose it is.
        state: Option<Box<StoredEntitlement>>,
    },
    /// An event Ferry does not act on (another type, a one-off payment):
    /// acknowledged, nothing changes.
    Ignored {
        /// The event's type, for the log.
        kind: String,
    },
}

/// The body is signed but not an event Ferry can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event cannot be read: {0}")]
pub struct EventError(pub String);

/// A string field, if present and not empty.
pub fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A Unix time in seconds, as milliseconds.
pub fn secs_ms(v: &serde_json::Value, key: &str) -> Option<u64> {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .map(|s| s.saturating_mul(1000))
}

/// What each product grants: a price, product or variant id (or a price's
/// lookup key) to the plan, from `[billing.plans]`.
pub type PlanMap = std::collections::BTreeMap<String, String>;

/// The plan the first of `keys` that `plans` maps grants; empty when none
/// does (the subscription then grants no plan). Never read from anything
/// the buyer can set.
pub fn plan_of<'a>(plans: &PlanMap, keys: impl IntoIterator<Item = &'a str>) -> String {
    keys.into_iter()
        .find_map(|k| plans.get(k))
        .cloned()
        .unwrap_or_default()
}

/// An id that may come as a string or a number.
pub fn id_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Object(o) => id_text(o.get("id")),
        _ => None,
    }
}
