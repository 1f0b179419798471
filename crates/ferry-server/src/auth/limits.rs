//! Rate limits of sign-in requests, per email and per client address, with
//! governor's keyed limiters (GCRA).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Sign-in mail per email: 3 at once, then one every 5 minutes.
fn per_email() -> Quota {
    Quota::with_period(Duration::from_secs(300))
        .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN))
}

/// Sign-in mail per client address: 20 at once, then one every 30 s.
fn per_address() -> Quota {
    Quota::with_period(Duration::from_secs(30))
        .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
}

/// The limiters of the sign-in endpoints.
#[derive(Debug)]
pub struct SignInLimits {
    email: DefaultKeyedRateLimiter<String>,
    address: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            email: RateLimiter::keyed(per_email()),
            address: RateLimiter::keyed(per_address()),
        }
    }
}

impl SignInLimits {
    /// `429 rate_limited` with `Retry-After` when this address or email has
    /// asked too often. The address is checked first, so one client cannot
    /// use up someone else's email quota without spending its own.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(address) = address.map(crate::http::proxy::network) {
            self.address.check_key(&address).map_err(|not_until| {
                limited(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
        }
        self.email
            .check_key(&email.to_owned())
            .map_err(|not_until| {
                limited(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
        // Keys of limiters that have fully recovered are forgotten, so the
        // maps stay as small as the recent traffic.
        if self.email.len() > 10_000 {
            self.email.retain_recent();
        }
        if self.address.len() > 10_000 {
            self.address.retain_recent();
        }
        Ok(())
    }
}

fn limited(wait: Duration) -> ApiError {
    let secs = wait.as_secs() + 1;
    ApiError::rate_limited(
        format!("too many sign-in requests; try again in {secs} s"),
        secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_of_one_network_share_a_limit() {
        let limits = SignInLimits::default();
        for i in 0..20u16 {
            let address = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i + 1));
            assert!(
                limits
                    .check(&format!("p{i}@example.com"), Some(address))
                    .is_ok()
            );
        }
        let another_host = "2001:db8:0:1:ffff::9".parse().ok();
        assert!(limits.check("q@example.com", another_host).is_err());
        let another_network = "2001:db8:0:2::1".parse().ok();
        assert!(limits.check("r@example.com", another_network).is_ok());
    }
}
