//! Subscriptions and billing events as stored (docs/protocol.md §7), and
//! the one rule that orders them, shared by every backend.
//!
//! Each subscription a payment provider reports is kept on its own, keyed
//! by the provider's subscription id: a user may hold several (two plans, a
//! renewal under a new customer, a grant by support staff), and what they
//! may do is the union of them. One customer's events therefore only ever
//! change that customer's own subscription.
//!
//! Payment providers deliver webhooks late, out of order and more than
//! once. So each event is applied at most once (its id is recorded in the
//! same transaction as its effect), and an event describing an older state
//! of the subscription than the one stored changes nothing: states are
//! ordered by the provider's own timestamps ([`StoredEntitlement::stamp_ms`])
//! and, at equal times, an ending (cancelled, expired) after anything else.

use ferry_core::UserId;

/// One subscription's state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntitlement {
    /// The provider's id of the subscription (`sub_...`, a Lemon Squeezy
    /// subscription id; `grant:{user}` for support staff's grant).
    pub subscription_id: String,
    /// The plan, e.g. `pro`, as `[billing.plans]` maps what was bought;
    /// empty when nothing bought maps to a plan (it grants none).
    pub plan: String,
    /// The subscription's status, as Ferry names it: `active`, `trialing`,
    /// `canceled`, `expired`, `past_due`, `unpaid`, `paused`, `incomplete`,
    /// or `granted` (by support staff, until `current_period_end_ms`).
    pub status: String,
    /// When the paid period ends (ms since the epoch), when known.
    pub current_period_end_ms: Option<u64>,
    /// `stripe`, `lemonsqueezy` or `admin`.
    pub provider: String,
    /// The provider's customer id, when known.
    pub customer_id: Option<String>,
    /// When the provider says this state began (ms since the epoch): the
    /// order of states.
    pub stamp_ms: u64,
}

impl StoredEntitlement {
    /// Whether this state ends the subscription (it wins ties).
    fn ends(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "expired")
    }

    /// Whether `self`, arriving now, replaces `stored`: it is not older.
    pub fn replaces(&self, stored: Option<&StoredEntitlement>) -> bool {
        stored.is_none_or(|s| (self.stamp_ms, self.ends()) >= (s.stamp_ms, s.ends()))
    }

    /// What storing `self` over `stored` leaves: `None` when `self` is
    /// older and changes nothing; else `self`, keeping the stored customer
    /// id when `self` names none. Every backend applies events with it.
    pub fn over(&self, stored: Option<&StoredEntitlement>) -> Option<StoredEntitlement> {
        if !self.replaces(stored) {
            return None;
        }
        let mut next = self.clone();
        if next.customer_id.is_none() {
            next.customer_id = stored.and_then(|s| s.customer_id.clone());
        }
        Some(next)
    }

    /// The state of a subscription Ferry has only heard linked to a user
    /// (by a checkout), not described yet: it grants nothing, and any state
    /// the provider reports replaces it.
    pub fn linked_only(provider: &str, subscription_id: &str, customer_id: Option<&str>) -> Self {
        StoredEntitlement {
            subscription_id: subscription_id.to_owned(),
            plan: String::new(),
            status: "incomplete".into(),
            current_period_end_ms: None,
            provider: provider.to_owned(),
            customer_id: customer_id.map(str::to_owned),
            stamp_ms: 0,
        }
    }

    /// Whether it lets its user sync at `now_ms`: a trial or an active
    /// subscription (the provider says when that stops), or a cancelled
    /// subscription or a grant still inside its paid period.
    pub fn is_active(&self, now_ms: u64) -> bool {
        match self.status.as_str() {
            "active" | "trialing" => true,
            "canceled" | "granted" => self.current_period_end_ms.is_some_and(|end| now_ms < end),
            _ => false,
        }
    }
}

/// A verified billing event, its user looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEvent {
    /// `stripe` or `lemonsqueezy`.
    pub provider: String,
    /// The provider's event id (or, where it sends none, a digest of the
    /// body): each applies once.
    pub event_id: String,
    /// The provider's id of the subscription the event is about.
    pub subscription_id: String,
    /// The provider's customer, when the event names one.
    pub customer_id: Option<String>,
    /// The user the subscription belongs to, when found. A subscription
    /// already linked to a user stays linked to that user.
    pub user: Option<UserId>,
    /// The subscription's state as the event describes it; `None` for an
    /// event that only links it to a user (a completed checkout).
    pub state: Option<StoredEntitlement>,
}

impl BillingEvent {
    /// What the subscription's row holds after this event, over `stored`
    /// (its row, if any): its owner, its state, and whether the state is
    /// the event's (`false`: the event is older than what is stored, or
    /// carries no state). Every backend applies events with it.
    pub fn over(
        &self,
        stored: Option<(Option<UserId>, StoredEntitlement)>,
    ) -> (Option<UserId>, StoredEntitlement, bool) {
        let (owner, current) = match stored {
            Some((owner, current)) => (owner, Some(current)),
            None => (None, None),
        };
        let owner = owner.or_else(|| self.user.clone());
        let next = self.state.as_ref().and_then(|s| s.over(current.as_ref()));
        let applied = next.is_some();
        let mut state = next.or(current).unwrap_or_else(|| {
            StoredEntitlement::linked_only(
                &self.provider,
                &self.subscription_id,
                self.customer_id.as_deref(),
            )
        });
        if state.customer_id.is_none() {
            state.customer_id = self.customer_id.clone();
        }
        (owner, state, applied || self.state.is_none())
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// The subscription's state is now the event's (or, for a checkout,
    /// it is linked to its user).
    Applied,
    /// The event was seen before: nothing changed.
    Duplicate,
    /// The event describes an older state than the stored one: nothing
    /// changed (its id is recorded).
    Stale,
}

impl EventOutcome {
    /// As stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Stale => "stale",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, stamp_ms: u64, end: Option<u64>) -> StoredEntitlement {
        StoredEntitlement {
            subscription_id: "sub_1".into(),
            plan: "pro".into(),
            status: status.into(),
            current_period_end_ms: end,
            provider: "stripe".into(),
            customer_id: None,
            stamp_ms,
        }
    }

    #[test]
    fn older_states_never_replace_newer_ones_and_endings_win_ties() {
        let active = state("active", 10, Some(100));
        let canceled = state("canceled", 20, Some(100));
        assert!(active.replaces(None));
        assert!(canceled.replaces(Some(&active)));
        assert!(!active.replaces(Some(&canceled)));
        let same_time_update = state("active", 20, Some(100));
        assert!(!same_time_update.replaces(Some(&canceled)));
        assert!(canceled.replaces(Some(&same_time_update)));
        assert!(same_time_update.replaces(Some(&same_time_update.clone())));
    }

    #[test]
    fn active_means_paid_for_now() {
        assert!(state("active", 0, Some(5)).is_active(10));
        assert!(state("trialing", 0, None).is_active(10));
        assert!(state("canceled", 0, Some(11)).is_active(10));
        assert!(!state("canceled", 0, Some(10)).is_active(10));
        assert!(!state("canceled", 0, None).is_active(10));
        assert!(state("granted", 0, Some(11)).is_active(10));
        assert!(!state("expired", 0, Some(11)).is_active(10));
        assert!(!state("past_due", 0, None).is_active(10));
    }
}
