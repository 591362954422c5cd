//! Which address a request comes from, and which proxies may say so
//! (`--trusted-proxies`, one meaning in the issuer and the sidecar).
//!
//! Behind an ingress or load balancer every request arrives from the proxy, so
//! per-address decisions would lump everyone together. With `--trusted-proxies`,
//! a request from a trusted proxy is attributed to the address it forwarded
//! for: the right-most `X-Forwarded-For` entry that is not itself a trusted
//! proxy (entries further left are client-supplied and could be forged).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

/// An address range such as `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net)), u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= 128 || (net >> shift) == (ip >> shift)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    let peer = canonical(peer);
    trusted.iter().any(|c| c.contains(peer))
}

/// The address to count a request against.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut candidate = canonical(peer);
    if !is_trusted(candidate) {
        return candidate;
    }
    let forwarded: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for entry in forwarded.into_iter().rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // Garbage in the chain: stop at the last hop we could trust.
            return candidate;
        };
        candidate = canonical(ip);
        if !is_trusted(candidate) {
            return candidate;
        }
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().expect("header"));
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.0.0.0/8".parse().expect("v4");
        assert!(c.contains(ip("10.200.1.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "mapped IPv4 matches");
        let c: Cidr = "fd00::/8".parse().expect("v6");
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        let c: Cidr = "192.0.2.7".parse().expect("single");
        assert!(c.contains(ip("192.0.2.7")) && !c.contains(ip("192.0.2.8")));
        assert!("0.0.0.0/0".parse::<Cidr>().expect("all").contains(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "banana", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!("10.0.0.0/8".parse::<Cidr>().expect("v4").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let proxy = ip("10.0.0.5");
        // No trusted proxies configured: the peer, whatever the header says.
        assert_eq!(client_ip(proxy, &xff("198.51.100.1"), &[]), proxy);
        // An untrusted peer cannot choose its address.
        assert_eq!(client_ip(ip("203.0.113.9"), &xff("198.51.100.1"), &trusted), ip("203.0.113.9"));
        // Through the proxy: the right-most untrusted entry; the forged left part is ignored.
        assert_eq!(client_ip(proxy, &xff("1.2.3.4, 198.51.100.1"), &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(proxy, &xff("198.51.100.1, 10.0.0.9"), &trusted), ip("198.51.100.1"));
        // Garbage or nothing: the last trusted hop.
        assert_eq!(client_ip(proxy, &xff("nonsense, 10.0.0.9"), &trusted), ip("10.0.0.9"));
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
