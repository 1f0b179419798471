//! What one user may create: spaces they own and people they invite, both
//! in total and per unit of time, so that one account cannot fill the
//! database with spaces or user rows.

use std::num::NonZeroU32;
use std::time::Duration;

use ferry_core::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The quotas; the defaults suit people, not scripts gone wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceQuotas {
    /// The most spaces one user may create (their personal space not
    /// counted).
    pub max_owned_spaces: usize,
    /// The most members one space may have.
    pub max_members: usize,
    /// Spaces one user may create at once; then one per `refill`.
    pub burst: u32,
    /// How often one more creation (space or invite) is allowed after the
    /// burst.
    pub refill: Duration,
}

impl Default for SpaceQuotas {
    fn default() -> Self {
        SpaceQuotas {
            max_owned_spaces: 1_000,
            max_members: 1_000,
            burst: 50,
            refill: Duration::from_secs(10),
        }
    }
}

/// The per-user limiters of space creation and of invites.
#[derive(Debug)]
pub struct CreationLimits {
    spaces: DefaultKeyedRateLimiter<UserId>,
    invites: DefaultKeyedRateLimiter<UserId>,
}

impl CreationLimits {
    /// The limiters of `quotas`.
    pub fn new(quotas: &SpaceQuotas) -> Self {
        let quota = Quota::with_period(quotas.refill)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(quotas.burst).unwrap_or(NonZeroU32::MIN));
        CreationLimits {
            spaces: RateLimiter::keyed(quota),
            invites: RateLimiter::keyed(quota),
        }
    }

    /// `429 rate_limited` when `user` has created spaces too fast.
    pub fn space(&self, user: &UserId) -> Result<(), ApiError> {
        check(&self.spaces, user, "spaces created")
    }

    /// `429 rate_limited` when `user` has invited people too fast.
    pub fn invite(&self, user: &UserId) -> Result<(), ApiError> {
        check(&self.invites, user, "invites sent")
    }
}

fn check(
    limiter: &DefaultKeyedRateLimiter<UserId>,
    user: &UserId,
    what: &str,
) -> Result<(), ApiError> {
    let checked = limiter.check_key(user).map_err(|not_until| {
        let secs = not_until
            .wait_time_from(DefaultClock::default().now())
            .as_secs()
            + 1;
        ApiError::rate_limited(format!("too many {what}; try again in {secs} s"), secs)
    });
    if limiter.len() > 10_000 {
        limiter.retain_recent();
    }
    checked
}
