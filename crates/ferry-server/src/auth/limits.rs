//! Rate limits of sign-in requests, per email and per client address, with
//! governor's keyed limiters (GCRA).
//!
//! The limit per email protects people's mailboxes (and the sender's name)
//! from a flood of sign-in mail. When no mail is sent, because links are
//! printed on the operator's terminal (Ferry's default, for trying it on
//! one machine), there is no mailbox to protect and only the limit per
//! client address applies: someone trying Ferry signs in as often as they
//! like with one email, and nobody can flood the terminal faster than the
//! address limit allows.

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
    /// None when links are only printed.
    email: Option<DefaultKeyedRateLimiter<String>>,
    address: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits::new(true)
    }
}

impl SignInLimits {
    /// The limits for a server that sends mail (`mails`), or only prints
    /// links, which are limited per client address alone.
    pub fn new(mails: bool) -> Self {
        SignInLimits {
            email: mails.then(|| RateLimiter::keyed(per_email())),
            address: RateLimiter::keyed(per_address()),
        }
    }

    /// `429 rate_limited` with `Retry-After` when this address or email has
    /// asked too often. The address is checked first, so one client cannot
    /// use up someone else's email quota without spending its own.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(address) = address.map(crate::http::proxy::network) {
            self.address.check_key(&address).map_err(|not_until| {
                limited(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
        }
        if let Some(limit) = &self.email {
            limit.check_key(&email.to_owned()).map_err(|not_until| {
                limited(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
            // Keys of limiters that have fully recovered are forgotten, so
            // the maps stay as small as the recent traffic.
            if limit.len() > 10_000 {
                limit.retain_recent();
            }
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
    fn printed_links_are_limited_per_address_only() {
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let mailing = SignInLimits::new(true);
        for _ in 0..3 {
            assert!(mailing.check("ada@example.com", local).is_ok());
        }
        assert!(mailing.check("ada@example.com", local).is_err());

        let printing = SignInLimits::new(false);
        for _ in 0..20 {
            assert!(printing.check("ada@example.com", local).is_ok());
        }
        // The address limit still holds.
        assert!(printing.check("ada@example.com", local).is_err());
    }

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
