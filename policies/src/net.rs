//! IP prefixes of both families: parsing, containment and port-range splitting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix with its host bits cleared. Prefixes of different
/// families never contain or cover each other (an IPv4 ipBlock says nothing
/// about IPv6 addresses, as in Kubernetes); IPv4 prefixes sort first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Length in bits, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub len: u8,
}

/// A prefix could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid CIDR {0:?}: expected a.b.c.d/len with len 0..=32 or an IPv6 prefix such as 2001:db8::/32 with len 0..=128"
)]
pub struct PrefixError(pub String);

/// Address width in bits: 32 or 128.
pub fn width(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The address as an integer, left-aligned at its own width.
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v4: bool, b: u128) -> IpAddr {
    if v4 {
        // Only the low 32 bits are ever set for IPv4.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(b & u128::from(u32::MAX)).unwrap_or(0)))
    } else {
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

/// Mask of the top `len` bits of a `width`-bit address.
fn mask(len: u8, width: u8) -> u128 {
    let all = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    if len == 0 { 0 } else { all & (all << (width - len)) }
}

impl Prefix {
    /// Parses `addr/len` of either family (a bare address is a /32 or /128),
    /// clearing host bits.
    pub fn parse(s: &str) -> Result<Self, PrefixError> {
        let err = || PrefixError(s.to_owned());
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let len: u8 = match l {
            Some(l) => l.trim().parse().map_err(|_| err())?,
            None => width(addr),
        };
        if len > width(addr) {
            return Err(err());
        }
        Ok(Self::new(addr, len))
    }

    /// The prefix of `len` bits containing `addr` (`len` clamped to the width).
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let w = width(addr);
        let len = len.min(w);
        Self {
            addr: from_bits(addr.is_ipv4(), bits(addr) & mask(len, w)),
            len,
        }
    }

    /// The host prefix of `addr`: /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        Self::new(addr, width(addr))
    }

    /// The last address inside (the first is `addr`).
    pub fn last(&self) -> IpAddr {
        let w = width(self.addr);
        let all = if w == 128 { u128::MAX } else { (1u128 << w) - 1 };
        from_bits(self.addr.is_ipv4(), bits(self.addr) | (all & !mask(self.len, w)))
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `ip` lies inside (never for an address of the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && bits(ip) & mask(self.len, width(ip)) == bits(self.addr)
    }

    /// Whether `other` lies entirely inside.
    pub fn covers(&self, other: &Self) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Splits the port range `start..=end` into aligned blocks `(base, bits)`:
/// each block covers the ports whose top `bits` bits equal `base`'s.
pub fn port_blocks(start: u16, end: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let mut lo = u32::from(start);
    let hi = u32::from(end);
    while lo <= hi {
        // Largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let bits = 16 - size.trailing_zeros() as u8;
        out.push((lo as u16, bits));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn parse_clears_host_bits_and_rejects_garbage() {
        assert_eq!(Prefix::parse("198.18.1.7/24").unwrap().to_string(), "198.18.1.0/24");
        assert_eq!(Prefix::parse("198.18.1.7").unwrap().len, 32);
        assert!(Prefix::parse("198.18.1.7/33").is_err());
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Prefix::parse("nonsense/8").is_err());
        assert!(Prefix::parse("198.18.1.7/x").is_err());
    }

    #[test]
    fn ipv6_prefixes_parse_and_contain() {
        assert_eq!(
            Prefix::parse("2001:2::ff:1/112").unwrap().to_string(),
            "2001:2::ff:0/112"
        );
        assert_eq!(Prefix::parse("2001:2::10").unwrap().len, 128);
        assert!(Prefix::parse("2001:2::/129").is_err());
        let p = Prefix::parse("2001:2::/48").unwrap();
        assert!(p.contains(ip("2001:2:0:ffff::1")));
        assert!(!p.contains(ip("2001:3::1")));
        assert!(Prefix::parse("::/0").unwrap().contains(ip("fe80::1")));
        assert_eq!(Prefix::host(ip("2001:2::10")).len, 128);
        assert_eq!(Prefix::new(ip("2001:2::10"), 200).len, 128);
    }

    #[test]
    fn families_never_contain_each_other() {
        assert!(!Prefix::parse("0.0.0.0/0").unwrap().contains(ip("2001:2::1")));
        assert!(!Prefix::parse("::/0").unwrap().contains(ip("198.18.0.1")));
        // ::ffff:198.18.0.1 is an IPv6 address, not the IPv4 one.
        assert!(
            !Prefix::parse("198.18.0.0/15")
                .unwrap()
                .contains(ip("::ffff:198.18.0.1"))
        );
        assert!(
            !Prefix::parse("::/0")
                .unwrap()
                .covers(&Prefix::parse("0.0.0.0/0").unwrap())
        );
    }

    /// Containment by a bit-by-bit definition, independent of the masks.
    fn contains_by_bits(net: &[u8], len: u8, ip: &[u8]) -> bool {
        net.len() == ip.len()
            && (0..usize::from(len)).all(|i| (net[i / 8] >> (7 - i % 8)) & 1 == (ip[i / 8] >> (7 - i % 8)) & 1)
    }

    fn octets(a: IpAddr) -> Vec<u8> {
        match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            // Addresses close to each other, so containment is often true.
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(
                0x2001,
                2,
                0,
                0,
                0,
                0,
                u16::from(a),
                u16::from(b)
            ))),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(198, 18, a, b))),
        ]
    }

    proptest! {
        #[test]
        fn prefix_contains_exactly_the_addresses_sharing_its_top_bits(a in any_ip(), len in 0u8..=128, b in any_ip()) {
            let p = Prefix::new(a, len);
            prop_assert!(p.len <= width(a));
            prop_assert!(p.contains(a), "a prefix contains the address it was made from");
            prop_assert_eq!(p.contains(b), contains_by_bits(&octets(p.addr), p.len, &octets(b)));
            prop_assert_eq!(Prefix::parse(&p.to_string()), Ok(p));
        }

        #[test]
        fn prefix_covers_means_every_address_inside(a in any_ip(), la in 0u8..=128, b in any_ip(), lb in 0u8..=128) {
            let (p, q) = (Prefix::new(a, la), Prefix::new(b, lb));
            // q's first address and its last one decide whether p covers all of q.
            let last = {
                let w = width(q.addr);
                from_bits(q.addr.is_ipv4(), bits(q.addr) | (mask(w, w) & !mask(q.len, w)))
            };
            prop_assert_eq!(p.covers(&q), p.len <= q.len && p.contains(q.addr) && p.contains(last));
        }
    }

    #[test]
    fn port_blocks_examples() {
        assert_eq!(port_blocks(80, 81), vec![(80, 15)]);
        assert_eq!(port_blocks(80, 80), vec![(80, 16)]);
        assert_eq!(port_blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(port_blocks(81, 82), vec![(81, 16), (82, 16)]);
    }

    proptest! {
        #[test]
        fn port_blocks_cover_exactly_the_range(a in any::<u16>(), b in any::<u16>(), p in any::<u16>()) {
            let (start, end) = (a.min(b), a.max(b));
            let blocks = port_blocks(start, end);
            let hits = blocks.iter().filter(|(base, bits)| {
                let m = if *bits == 0 { 0 } else { u16::MAX << (16 - bits) };
                p & m == *base
            }).count();
            prop_assert_eq!(hits, usize::from(p >= start && p <= end));
            prop_assert!(blocks.len() <= 30);
        }
    }
}
