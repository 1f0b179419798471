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
//! Subscriptions come from the payment provider's webhooks, verified on
//! the raw body ([`signature`]), read ([`stripe`], [`lemonsqueezy`]) with
//! the plan `[billing.plans]` maps what was bought to, matched to a user
//! ([`find_user`]) and stored each on its own with the ordering and
//! idempotency rules of [`crate::store::billing`]; or from support staff
//! (`ferry admin entitlement set`). A user may sync when any one of their
//! subscriptions is active for a required plan.

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
use event::{EventError, Parsed, PlanMap, UserHints};
use signature::SignatureError;

/// Billing's settings; the default turns the gate off.
#[derive(Debug, Clone, Default)]
pub struct BillingSettings {
    /// The plans that include sync (e.g. `["pro"]`); empty: no gate.
    pub required_plans: Vec<String>,
    /// Stripe's webhook signing secrets (`whsec_...`); several while one
    /// is rotated.
    pub stripe_secrets: Vec<String>,
    /// Lemon Squeezy's webhook signing secret.
    pub lemonsqueezy_secret: Option<String>,
    /// What each product grants (`[billing.plans]`).
    pub plans: PlanMap,
    /// The file quota of each plan that has its own (`[billing.file_quotas]`).
    pub file_quotas: std::collections::BTreeMap<String, u64>,
}

impl BillingSettings {
    /// Whether sync needs a plan.
    pub fn gated(&self) -> bool {
        !self.required_plans.is_empty()
    }
}

/// `402 payment_required` unless `user` may sync now.
pub async fn require_sync(state: &AppState, user: &UserId) -> Result<(), ApiError> {
    let billing = &state.settings.billing;
    if !billing.gated() {
        return Ok(());
    }
    let held = state.store.entitlements(user).await?;
    if allows_sync(billing, &held, wall_ms()) {
        Ok(())
    } else {
        Err(ApiError::payment_required(format!(
            "syncing needs an active {} subscription; the app keeps working offline",
            billing.required_plans.join(" or ")
        )))
    }
}

/// The most bytes `user`'s files may take: the largest quota of the plans
/// of their active subscriptions that `[billing.file_quotas]` names (the
/// plan `free` when none is active), else `default` (`file_quota_bytes`).
pub async fn file_quota(state: &AppState, user: &UserId, default: u64) -> Result<u64, ApiError> {
    let quotas = &state.settings.billing.file_quotas;
    if quotas.is_empty() {
        return Ok(default);
    }
    let held = state.store.entitlements(user).await?;
    let now = wall_ms();
    let mut plans: Vec<&str> = held
        .iter()
        // A subscription to a product `[billing.plans]` does not name
        // grants no plan: its user keeps the free quota.
        .filter(|e| e.is_active(now) && !e.plan.is_empty())
        .map(|e| e.plan.as_str())
        .collect();
    if plans.is_empty() {
        plans.push("free");
    }
    Ok(plans
        .iter()
        .filter_map(|p| quotas.get(*p))
        .copied()
        .max()
        .unwrap_or(default))
}

/// Whether one subscription lets its user sync at `now_ms`.
fn grants_sync(billing: &BillingSettings, e: &StoredEntitlement, now_ms: u64) -> bool {
    e.is_active(now_ms) && billing.required_plans.contains(&e.plan)
}

/// Whether the subscriptions `held` let their user sync: any one does.
fn allows_sync(billing: &BillingSettings, held: &[StoredEntitlement], now_ms: u64) -> bool {
    !billing.gated() || held.iter().any(|e| grants_sync(billing, e, now_ms))
}

/// A time as RFC 3339, to the second.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The caller's entitlement as `/v1/me` shows it: of their
/// subscriptions, one that lets them sync if any does, else the latest.
/// Without any, the free plan; `sync` says whether the gate lets the user
/// sync now.
pub async fn view(state: &AppState, user: &UserId) -> Result<Entitlement, ApiError> {
    let billing = &state.settings.billing;
    let held = state.store.entitlements(user).await?;
    let now = wall_ms();
    let sync = allows_sync(billing, &held, now);
    let shown = held
        .iter()
        .rev()
        .find(|e| grants_sync(billing, e, now))
        .or_else(|| held.iter().rev().find(|e| e.is_active(now)))
        .or_else(|| held.last());
    Ok(match shown {
        Some(e) => Entitlement {
            plan: if e.plan.is_empty() {
                "none".into()
            } else {
                e.plan.clone()
            },
            status: e.status.clone(),
            current_period_end: e.current_period_end_ms.map(rfc3339),
            provider: Some(e.provider.clone()),
            customer_id: e.customer_id.clone(),
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

/// The user a subscription belongs to, in order: the app's user id in the
/// event (a user Ferry does not know is refused: `404`, and the provider
/// delivers again); the user the subscription is already linked to; the
/// user its customer is linked to; and last the customer's email, unless
/// that user holds an active subscription of this provider under another
/// customer (a payment provider does not verify the email a buyer types,
/// so an email alone never attaches a stranger's subscription to a paying
/// customer). `None`: nobody yet; the subscription is kept unlinked until
/// a checkout or support staff links it.
async fn find_user(
    state: &AppState,
    provider: &str,
    subscription_id: &str,
    hints: &UserHints,
) -> Result<Option<UserId>, ApiError> {
    if let Some(id) = &hints.user_id {
        let known = match UserId::new(id.as_str()) {
            Ok(id) => state.store.user(&id).await?.map(|u| u.id),
            Err(_) => None,
        };
        return known.map(Some).ok_or_else(|| {
            ApiError::not_found(format!(
                "the event names user {id:?}, whom Ferry does not know"
            ))
        });
    }
    if let Some(user) = state
        .store
        .subscription_owner(provider, subscription_id)
        .await?
    {
        return Ok(Some(user));
    }
    if let Some(customer) = &hints.customer_id
        && let Some(user) = state.store.user_by_customer(provider, customer).await?
    {
        return Ok(Some(user));
    }
    let Some(email) = &hints.email else {
        return Ok(None);
    };
    let email = normalize_email(email)?;
    let user = state
        .store
        .user_by_email(&email, &ids::new_user_id()?)
        .await?;
    let now = wall_ms();
    let paying_elsewhere = state.store.entitlements(&user.id).await?.iter().any(|e| {
        e.provider == provider
            && e.is_active(now)
            && e.customer_id.is_some()
            && e.customer_id != hints.customer_id
    });
    if paying_elsewhere {
        tracing::warn!(
            provider,
            subscription_id,
            user = %user.id,
            "a subscription names the email of a user who pays under another customer; \
             it stays unlinked until the app links it (metadata user_id)"
        );
        return Ok(None);
    }
    Ok(Some(user.id))
}

/// Stores what a verified event says; answers what happened.
async fn apply(state: &AppState, provider: &str, parsed: Parsed) -> Result<Json<Value>, ApiError> {
    let (event_id, subscription_id, hints, subscription) = match parsed {
        Parsed::Ignored { kind } => {
            tracing::debug!(provider, kind, "billing event ignored");
            return Ok(Json(json!({"received": true, "outcome": "ignored"})));
        }
        Parsed::Subscription {
            event_id,
            subscription_id,
            hints,
            state,
        } => (event_id, subscription_id, hints, state),
    };
    let user = find_user(state, provider, &subscription_id, &hints).await?;
    let outcome = state
        .store
        .apply_billing_event(&BillingEvent {
            provider: provider.to_owned(),
            event_id: event_id.clone(),
            subscription_id: subscription_id.clone(),
            customer_id: hints.customer_id.clone(),
            user: user.clone(),
            state: subscription.clone().map(|s| *s),
        })
        .await?;
    if let Some(s) = subscription.as_ref().filter(|s| s.plan.is_empty()) {
        tracing::warn!(
            provider,
            subscription_id,
            status = s.status,
            "a subscription to something [billing.plans] does not map grants no plan"
        );
    }
    tracing::info!(
        provider,
        event_id,
        subscription_id,
        user = user.as_ref().map(UserId::as_str),
        status = subscription.as_ref().map(|s| s.status.as_str()),
        plan = subscription.as_ref().map(|s| s.plan.as_str()),
        outcome = outcome.as_str(),
        "billing event"
    );
    state.metrics.billing_event(provider, outcome.as_str());
    Ok(Json(json!({
        "received": true,
        "outcome": outcome.as_str(),
        "linked": user.is_some(),
    })))
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
    let parsed = stripe::parse(&body, &billing.plans)?;
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
    let parsed = lemonsqueezy::parse(&body, &billing.plans)?;
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
        assert!(allows_sync(&off, &[], 0));
        let on = BillingSettings {
            required_plans: vec!["pro".into(), "team".into()],
            ..Default::default()
        };
        assert!(!allows_sync(&on, &[], 0));
        let mut e = StoredEntitlement {
            subscription_id: "sub_1".into(),
            plan: "team".into(),
            status: "active".into(),
            current_period_end_ms: None,
            provider: "stripe".into(),
            customer_id: None,
            stamp_ms: 0,
        };
        assert!(allows_sync(&on, std::slice::from_ref(&e), 0));
        e.plan = "hobby".into();
        assert!(!allows_sync(&on, std::slice::from_ref(&e), 0));
        e.plan = "pro".into();
        e.status = "expired".into();
        assert!(!allows_sync(&on, std::slice::from_ref(&e), 0));
        // Any one active subscription of a required plan is enough.
        let active = StoredEntitlement {
            status: "active".into(),
            subscription_id: "sub_2".into(),
            ..e.clone()
        };
        assert!(allows_sync(&on, &[e.clone(), active], 0));
        assert_eq!(rfc3339(1_796_083_200_000), "2026-12-01T00:00:00Z");
    }
}
