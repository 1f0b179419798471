//! Entitlements and billing events as stored (PROTOCOL.md §7), and the one
//! rule that orders them, shared by every backend.
//!
//! Payment providers deliver webhooks late, out of order and more than
//! once. So each event is applied at most once (its id is recorded in the
//! same transaction as its effect), and an event describing an older state
//! of the subscription than the one stored changes nothing: states are
//! ordered by the provider's own timestamps ([`StoredEntitlement::stamp_ms`])
//! and, at equal times, an ending (cancelled, expired) after anything else.

use ferry_core::UserId;

/// What a user has paid for, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntitlement {
    /// The plan, e.g. `pro`.
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

/// A verified billing event, its user found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEvent {
    /// `stripe` or `lemonsqueezy`.
    pub provider: String,
    /// The provider's event id (or, where it sends none, a digest of the
    /// body): each applies once.
    pub event_id: String,
    /// Whose subscription it is.
    pub user: UserId,
    /// The subscription's state as the event describes it.
    pub entitlement: StoredEntitlement,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// The user's entitlement is now the event's.
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
