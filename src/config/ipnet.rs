//! `IpNet`: an IPv4 or IPv6 network in CIDR notation, for `per_ip_exempt` and as the key the
//! per-network limits count under.
//!
//! A network's host bits are always zero. Parsing refuses text with host bits set
//! (`10.0.0.1/8`), naming the network it probably meant (`10.0.0.0/8`): such an entry is
//! ambiguous (one host, or the whole /8?), and silently widening it could exempt far more than
//! the operator meant. Matching treats an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
//! dual-stack `[::]` listener reports for IPv4 peers) as the IPv4 address it carries, so IPv4
//! exemptions keep working there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network such as `10.0.0.0/8` or `2001:db8::/32`; a bare address means one host (/32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// Network address with every bit past `prefix` cleared.
    addr: IpAddr,
    /// Number of leading bits that must match: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

/// Why a string is not a valid [`IpNet`]; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseIpNetError(String);

impl IpNet {
    /// The network containing `addr` with the given prefix length, or `None` if
    /// `prefix` is longer than the address (over 32 for IPv4, over 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & v4_mask(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & v6_mask(prefix)))
            }
            _ => return None,
        };
        Some(IpNet { addr, prefix })
    }

    /// The one-host network of `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> IpNet {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        IpNet { addr: ip, prefix }
    }

    /// The network address (host bits are always zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. `::ffff:a.b.c.d` counts as `a.b.c.d`,
    /// and an IPv4 address matches an IPv6 net that covers its mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & v4_mask(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                ip.to_ipv6_mapped().to_bits() & v6_mask(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & v6_mask(self.prefix) == net.to_bits()
            }
            // to_canonical() turned every mapped address into V4 above, so a
            // remaining V6 address is a real IPv6 peer that no IPv4 net covers.
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    // checked_shl because shifting a u32 by 32 is an overflow, and /0 must mask everything.
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = ParseIpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            ParseIpNetError(format!(
                "'{s}' is not an IP address or network (e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.1)"
            ))
        })?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let Some(prefix_text) = prefix_text else {
            // A bare address is one host; a full-length prefix has no host bits.
            return Ok(IpNet::host(addr));
        };
        // Digits only: u8::from_str would also take "+8", which no CIDR tool writes.
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseIpNetError(format!(
                "'{s}': prefix length '{prefix_text}' is not a number"
            )));
        }
        let net = prefix_text
            .parse::<u8>()
            .ok()
            .and_then(|prefix| IpNet::new(addr, prefix))
            .ok_or_else(|| {
                ParseIpNetError(format!(
                    "'{s}': prefix length /{prefix_text} is too long (at most /{max} for this address family)"
                ))
            })?;
        if net.addr != addr {
            return Err(ParseIpNetError(format!(
                "'{s}' has host bits set past the /{} prefix (did you mean {net}? for one host, write {addr})",
                net.prefix
            )));
        }
        Ok(net)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays_canonical_form() {
        for (input, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("192.0.2.7/32", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ] {
            assert_eq!(net(input).to_string(), shown, "{input}");
        }
        assert_eq!(net("10.0.0.0/8"), IpNet::new(ip("10.9.9.9"), 8).unwrap());
    }

    #[test]
    fn host_bits_are_refused_with_the_network_meant() {
        for (input, suggestion) in [
            (
                "10.0.0.1/8",
                "did you mean 10.0.0.0/8? for one host, write 10.0.0.1)",
            ),
            ("192.0.2.200/25", "did you mean 192.0.2.128/25?"),
            ("2001:db8:ffff::1/32", "did you mean 2001:db8::/32?"),
            ("2001:db8::1/64", "did you mean 2001:db8::/64?"),
            ("::ffff:127.0.0.1/104", "did you mean ::ffff:127.0.0.0/104?"),
            ("1.2.3.4/0", "did you mean 0.0.0.0/0?"),
        ] {
            let err = input.parse::<IpNet>().unwrap_err().to_string();
            assert!(err.contains("has host bits set"), "{input}: {err}");
            assert!(err.contains(suggestion), "{input}: {err}");
        }
    }

    #[test]
    fn host_is_the_full_length_network() {
        assert_eq!(IpNet::host(ip("192.0.2.1")), net("192.0.2.1/32"));
        assert_eq!(IpNet::host(ip("2001:db8::1")), net("2001:db8::1/128"));
    }

    #[test]
    fn rejects_malformed_networks() {
        for (input, needle) in [
            ("", "not an IP address"),
            ("10.0.0/8", "not an IP address"),
            ("example.com/8", "not an IP address"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/x", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("10.0.0.0/33", "too long"),
            ("::/129", "too long"),
            ("::/1000", "too long"),
        ] {
            let err = input.parse::<IpNet>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn contains_matches_prefix_bits() {
        for (n, addr, inside) in [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("192.0.2.128/25", "192.0.2.200", true),
            ("192.0.2.128/25", "192.0.2.127", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::", false),
            ("::1/128", "::1", true),
            ("::1/128", "127.0.0.1", false),
            ("127.0.0.0/8", "::1", false),
        ] {
            assert_eq!(net(n).contains(ip(addr)), inside, "{n} contains {addr}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_ipv4_nets() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.20.30.40")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.0.0.1")));
        // A mapped-form IPv6 net covers plain IPv4 peers too.
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.1.1")));
        assert!(net("::/0").contains(ip("10.1.1.1")));
        // IPv4-compatible (::a.b.c.d, deprecated) is not IPv4-mapped.
        assert!(!net("10.0.0.0/8").contains(ip("::10.0.0.1")));
    }

    #[test]
    fn new_rejects_overlong_prefix() {
        assert!(IpNet::new(ip("10.0.0.0"), 33).is_none());
        assert!(IpNet::new(ip("::"), 129).is_none());
        assert_eq!(
            IpNet::new(ip("10.1.0.0"), 8).map(|n| n.addr()),
            Some(ip("10.0.0.0"))
        );
    }
}
