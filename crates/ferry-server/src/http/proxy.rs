//! The address a request came from, for per-address rate limits: the
//! peer's, or, when the peer is a proxy the operator trusts (a load
//! balancer in front of Ferry), the client's as that proxy saw it.
//!
//! `X-Forwarded-For` is read right to left, past the trusted proxies: each
//! proxy appends the address it was reached from, so the rightmost entry
//! not of a trusted proxy is the first one a client could not have forged.
//! Without trusted proxies the header is ignored, since anyone can send it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` Ferry believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Addresses and networks, comma-separated: `10.0.0.0/8, 127.0.0.1`.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                IpNet::from_str(s)
                    .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                    .map_err(|_| {
                        format!("{s:?} is neither an IP address nor a network (10.0.0.0/8)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, unless `peer` is trusted and the
    /// request says, through trusted proxies, whom they forwarded it for.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().map(|h| h.trim()).rev() {
            if hop.is_empty() {
                continue;
            }
            let Some(ip) = address(hop) else {
                // Garbage where an address should be: stop at the last
                // address known good.
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, or with a
/// port, `1.2.3.4:5678` and `[2001:db8::1]:443`.
fn address(hop: &str) -> Option<IpAddr> {
    IpAddr::from_str(hop)
        .ok()
        .or_else(|| SocketAddr::from_str(hop).ok().map(|a| a.ip()))
        .or_else(|| IpAddr::from_str(hop.strip_prefix('[')?.strip_suffix(']')?).ok())
}

/// What one client's address is for limits: an IPv4 address, or the /64
/// an IPv6 one belongs to (one host is usually given a whole /64, and
/// could otherwise take a fresh address for every request).
pub fn network(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

/// IPv4 addresses mapped into IPv6 (a dual-stack socket's) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let none = TrustedProxies::default();
        let forged = headers(&["1.2.3.4"]);
        assert_eq!(none.client(peer("9.9.9.9"), &forged), peer("9.9.9.9").ip());

        let lb: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        // From the load balancer: the client it saw.
        let via_lb = headers(&["6.6.6.6, 5.5.5.5"]);
        assert_eq!(
            lb.client(peer("10.1.2.3"), &via_lb),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        // Past a chain of trusted proxies, over several header lines.
        let chain = headers(&["6.6.6.6", "5.5.5.5, 10.0.0.7"]);
        assert_eq!(
            lb.client(peer("127.0.0.1"), &chain),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        // Not from the load balancer: the header is the sender's to forge.
        assert_eq!(lb.client(peer("8.8.8.8"), &via_lb), peer("8.8.8.8").ip());
        // Garbage stops the walk at the last good address.
        let garbage = headers(&["5.5.5.5, not-an-ip"]);
        assert_eq!(lb.client(peer("10.0.0.1"), &garbage), peer("10.0.0.1").ip());
        // Ports and empty entries, as some proxies write them.
        let ported = headers(&["[2001:db8::7]:443, , 5.5.5.5:5678"]);
        assert_eq!(
            lb.client(peer("10.0.0.1"), &ported),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        let v6 = headers(&["[2001:db8::7]:443"]);
        assert_eq!(
            lb.client(peer("10.0.0.1"), &v6),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // A mapped IPv4 peer is the IPv4 address.
        assert_eq!(
            lb.client(peer("::ffff:10.0.0.1"), &via_lb),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
    }
}
