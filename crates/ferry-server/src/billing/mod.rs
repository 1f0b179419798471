//! The billing gate (PROTOCOL.md §7): sync as a paid plan, offline always
//! free.
//!
//! Off by default. With `required_plans` set, the endpoints that carry
//! space data over the network (sync, changes, REST records, event streams,
//! WebSocket subscriptions) answer `402 payment_required` to a caller
//! without an active entitlement to one of those plans; sign-in, `/v1/me`,
//! spaces and members, and the webhooks are never gated, and clients keep
//! working on their local data.
//!
//! Entitlements come from the payment provider's webhooks, verified on the
//! raw body ([`signature`]), read ([`stripe`], [`lemonsqueezy`]), matched
//! to a user (the app's user id in the checkout's metadata, else the
//! customer already linked to a user, else the customer's email) and
//! stored with the ordering and idempotency rules of
//! [`crate::store::billing`]; or from support staff (`ferry admin
//! entitlement set`).

pub mod event;
pub mod lemonsqueezy;
pub mod signature;
pub mod stripe;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use ferry_core::UserId;
use ferry_core::protocol::Entitlement;
use serde_json::{Value, json};

use crate::clock::wall_ms;
use crate::error::ApiError;
use crate::ids;
use crate::spaces::normalize_email;
use crate::state::AppState;
use crate::store::{BillingEvent, StoredEntitlement};
use event::{EventError, Parsed, UserHints};
use signature::SignatureError;

/// Billing's settings; the default turns the gate off.
#[derive(Debug, Clone, Default)]
pub struct BillingSettings {
    /// The plans that include sync (e.g. `["pro"]`); empty: no gate. The
    /// first also names subscriptions whose metadata names no plan.
    pub required_plans: Vec<String>,
    /// Stripe's webhook signing secrets (`whsec_...`); several while one
    /// is rotated.
    pub stripe_secrets: Vec<String>,
    /// Lemon Squeezy's webhook signing secret.
    pub lemonsqueezy_secret: Option<String>,
}

impl BillingSettings {
    /// Whether sync needs a plan.
    pub fn gated(&self) -> bool {
        !self.required_plans.is_empty()
    }

    /// The plan of a subscription that names none.
    fn default_plan(&self) -> &str {
        self.required_plans.first().map_or("paid", String::as_str)
    }
}

/// `402 payment_required` unless `user` may sync now.
pub async fn require_sync(state: &AppState, user: &UserId) -> Result<(), ApiError> {
    let billing = &state.settings.billing;
    if !billing.gated() {
        return Ok(());
    }
    let entitlement = state.store.entitlement(user).await?;
    if allows_sync(billing, entitlement.as_ref(), wall_ms()) {
        Ok(())
    } else {
        Err(ApiError::payment_required(format!(
            "syncing needs an active {} subscription; the app keeps working offline",
            billing.required_plans.join(" or ")
        )))
    }
}

fn allows_sync(billing: &BillingSettings, e: Option<&StoredEntitlement>, now_ms: u64) -> bool {
    !billing.gated()
        || e.is_some_and(|e| e.is_active(now_ms) && billing.required_plans.contains(&e.plan))
}

/// A time as RFC 3339, to the second.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The caller's entitlement as `/v1/me` shows it. Without one, the free
/// plan; `sync` says whether the gate lets the user sync now.
pub async fn view(state: &AppState, user: &UserId) -> Result<Entitlement, ApiError> {
    let stored = state.store.entitlement(user).await?;
    let sync = allows_sync(&state.settings.billing, stored.as_ref(), wall_ms());
    Ok(match stored {
        Some(e) => Entitlement {
            plan: e.plan,
            status: e.status,
            current_period_end: e.current_period_end_ms.map(rfc3339),
            provider: Some(e.provider),
            customer_id: e.customer_id,
            sync,
        },
        None => Entitlement {
            plan: "free".into(),
            status: "active".into(),
            current_period_end: None,
            provider: None,
            customer_id: None,
            sync,
        },
    })
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::NotConfigured => ApiError::not_found(e.to_string()),
            _ => ApiError::invalid_request(e.to_string()),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::invalid_request(e.to_string())
    }
}

/// The user a subscription belongs to: the app's user id, else the user
/// the provider's customer is linked to, else the customer's email (a user
/// created if new, who then finds the subscription at first sign-in).
async fn find_user(
    state: &AppState,
    provider: &str,
    hints: &UserHints,
) -> Result<UserId, ApiError> {
    if let Some(id) = &hints.user_id {
        let known = match UserId::new(id.as_str()) {
            Ok(id) => state.store.user(&id).await?.map(|u| u.id),
            Err(_) => None,
        };
        // A user id Ferry does not know is refused (the provider retries),
        // never guessed from the email.
        return known.ok_or_else(|| {
            ApiError::not_found(format!(
                "the event names user {id:?}, whom Ferry does not know"
            ))
        });
    }
    if let Some(customer) = &hints.customer_id
        && let Some(user) = state.store.user_by_customer(provider, customer).await?
    {
        return Ok(user);
    }
    if let Some(email) = &hints.email {
        let email = normalize_email(email)?;
        let user = state
            .store
            .user_by_email(&email, &ids::new_user_id()?)
            .await?;
        return Ok(user.id);
    }
    Err(ApiError::not_found(
        "no user matches this subscription yet (no user_id in its metadata, a customer not \
         linked by a checkout, no email); the provider will deliver it again",
    ))
}

/// Stores what a verified event says; answers what happened.
async fn apply(state: &AppState, provider: &str, parsed: Parsed) -> Result<Json<Value>, ApiError> {
    let (event_id, hints, entitlement) = match parsed {
        Parsed::Ignored { kind } => {
            tracing::debug!(provider, kind, "billing event ignored");
            return Ok(Json(json!({"received": true, "outcome": "ignored"})));
        }
        Parsed::Subscription {
            event_id,
            hints,
            entitlement,
        } => (event_id, hints, entitlement),
    };
    let user = find_user(state, provider, &hints).await?;
    let outcome = state
        .store
        .apply_billing_event(&BillingEvent {
            provider: provider.to_owned(),
            event_id: event_id.clone(),
            user: user.clone(),
            entitlement: entitlement.clone(),
        })
        .await?;
    tracing::info!(
        provider,
        event_id,
        user = %user,
        status = entitlement.status,
        plan = entitlement.plan,
        outcome = outcome.as_str(),
        "billing event"
    );
    state.metrics.billing_event(provider, outcome.as_str());
    Ok(Json(json!({"received": true, "outcome": outcome.as_str()})))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::Missing(name))?
        .to_str()
        .map_err(|_| SignatureError::Malformed("not text"))
}

async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let billing = &state.settings.billing;
    signature::verify_stripe(
        header(&headers, "stripe-signature")?,
        &body,
        &billing.stripe_secrets,
        wall_ms() / 1000,
    )?;
    let parsed = stripe::parse(&body, billing.default_plan())?;
    apply(&state, "stripe", parsed).await
}

async fn lemonsqueezy_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let billing = &state.settings.billing;
    signature::verify_lemonsqueezy(
        header(&headers, "x-signature")?,
        &body,
        billing.lemonsqueezy_secret.as_deref(),
    )?;
    let parsed = lemonsqueezy::parse(&body, billing.default_plan())?;
    apply(&state, "lemonsqueezy", parsed).await
}

/// The webhook routes, under `/v1`; never gated, authenticated by their
/// signatures alone.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/webhooks/stripe", post(stripe_webhook))
        .route("/billing/webhooks/lemonsqueezy", post(lemonsqueezy_webhook))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_wants_an_active_required_plan() {
        let off = BillingSettings::default();
        assert!(allows_sync(&off, None, 0));
        let on = BillingSettings {
            required_plans: vec!["pro".into(), "team".into()],
            ..Default::default()
        };
        assert!(!allows_sync(&on, None, 0));
        let mut e = StoredEntitlement {
            plan: "team".into(),
            status: "active".into(),
            current_period_end_ms: None,
            provider: "stripe".into(),
            customer_id: None,
            stamp_ms: 0,
        };
        assert!(allows_sync(&on, Some(&e), 0));
        e.plan = "hobby".into();
        assert!(!allows_sync(&on, Some(&e), 0));
        e.plan = "pro".into();
        e.status = "expired".into();
        assert!(!allows_sync(&on, Some(&e), 0));
        assert_eq!(rfc3339(1_796_083_200_000), "2026-12-01T00:00:00Z");
    }
}
