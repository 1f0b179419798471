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
    /// A subscription's new state.
    Subscription {
        /// The event id (each applies once).
        event_id: String,
        /// Whose it is.
        hints: UserHints,
        /// The state.
        entitlement: StoredEntitlement,
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
