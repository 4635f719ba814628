//! IPv4 prefixes: parsing, containment and port-range splitting.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Length in bits, 0..=32.
    pub len: u8,
}

/// A prefix could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}: expected a.b.c.d/len with len 0..=32 (IPv6 is not supported)")]
pub struct PrefixError(pub String);

impl Prefix {
    /// Parses `a.b.c.d/len` (a bare address is a /32), clearing host bits.
    pub fn parse(s: &str) -> Result<Self, PrefixError> {
        let err = || PrefixError(s.to_owned());
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| err())?;
        let len: u8 = l.trim().parse().map_err(|_| err())?;
        if len > 32 {
            return Err(err());
        }
        Ok(Self::new(addr, len))
    }

    /// The prefix of `len` bits containing `addr`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
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

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
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

    #[test]
    fn parse_clears_host_bits_and_rejects_garbage() {
        assert_eq!(Prefix::parse("198.18.1.7/24").unwrap().to_string(), "198.18.1.0/24");
        assert_eq!(Prefix::parse("198.18.1.7").unwrap().len, 32);
        assert!(Prefix::parse("198.18.1.7/33").is_err());
        assert!(Prefix::parse("fd00::/8").is_err());
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains(Ipv4Addr::new(1, 2, 3, 4)));
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
