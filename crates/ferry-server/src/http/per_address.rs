//! Connections per client address: one address (an IPv6 one by its /64)
//! holds at most so many at once, so that one client cannot take every
//! connection the node has. Loopback (a reverse proxy on the same machine,
//! or the operator) and trusted proxies, through which every client
//! comes, are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::proxy::{TrustedProxies, network};

/// The counts of open connections by address.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    exempt_loopback: bool,
    trusted: TrustedProxies,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address, until dropped.
#[derive(Debug)]
pub struct AddressSlot {
    of: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Whether a new connection may open.
#[derive(Debug)]
pub enum Admission {
    /// Counted against its address until the slot drops.
    Counted(AddressSlot),
    /// Not counted (no cap, loopback, a trusted proxy).
    Exempt,
    /// Its address holds as many as it may.
    Refused,
}

impl PerAddress {
    /// At most `max` connections an address (0: no cap).
    pub fn new(max: usize, exempt_loopback: bool, trusted: TrustedProxies) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max,
            exempt_loopback,
            trusted,
            open: Mutex::default(),
        })
    }

    /// Admits a connection from `peer`, or not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let key = network(peer);
        if self.max == 0 || (self.exempt_loopback && key.is_loopback()) || self.trusted.trusts(key)
        {
            return Admission::Exempt;
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_default();
        if *n >= self.max {
            return Admission::Refused;
        }
        *n += 1;
        Admission::Counted(AddressSlot {
            of: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share() {
        let limits = PerAddress::new(2, true, "10.0.0.1".parse().unwrap());
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let first = limits.admit(a);
        let second = limits.admit(a);
        assert!(matches!(first, Admission::Counted(_)));
        assert!(matches!(second, Admission::Counted(_)));
        assert!(matches!(limits.admit(a), Admission::Refused));
        // Another host of the same IPv6 /64 shares the count; others don't.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let _v6a = limits.admit(v6);
        let _v6b = limits.admit("2001:db8::2".parse().unwrap());
        assert!(matches!(
            limits.admit("2001:db8::3".parse().unwrap()),
            Admission::Refused
        ));
        assert!(matches!(
            limits.admit("2001:db8:1::1".parse().unwrap()),
            Admission::Counted(_)
        ));
        // A closed connection frees its place.
        drop(first);
        assert!(matches!(limits.admit(a), Admission::Counted(_)));
        // Loopback and trusted proxies are not counted.
        for _ in 0..5 {
            assert!(matches!(
                limits.admit("127.0.0.1".parse().unwrap()),
                Admission::Exempt
            ));
            assert!(matches!(
                limits.admit("10.0.0.1".parse().unwrap()),
                Admission::Exempt
            ));
        }
        let off = PerAddress::new(0, false, TrustedProxies::default());
        assert!(matches!(off.admit(a), Admission::Exempt));
    }
}
