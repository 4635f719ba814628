//! Crafted packets through BPF_PROG_TEST_RUN: SCTP probes, IPv6 header cases and per-packet benchmarks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};

/// tc verdict: pass.
pub const TC_ACT_OK: u32 = 0;
/// tc verdict: drop.
pub const TC_ACT_SHOT: u32 = 2;

/// TCP flags: SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flags: ACK.
pub const TCP_ACK: u8 = 0x10;

/// An Ethernet + IPv4 frame with a TCP (SYN), UDP or SCTP (INIT) header.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    ipv4_packet_flags(src, dst, proto, sport, dport, TCP_SYN)
}

/// A frame of the addresses' family ([`ipv4_packet`] or [`ipv6_packet`]);
/// `None` when the families differ.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4_packet(s, d, proto, sport, dport)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(ipv6_packet(s, d, proto, sport, dport)),
        _ => None,
    }
}

/// [`ip_packet`] with the given TCP flags.
pub fn ip_packet_flags(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4_packet_flags(s, d, proto, sport, dport, tcp_flags)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(ipv6_packet_flags(s, d, proto, sport, dport, tcp_flags)),
        _ => None,
    }
}

/// The upper-layer header: TCP (with `tcp_flags`), UDP, SCTP (an INIT) or,
/// for other protocols, 8 bytes with the ports in front.
pub fn l4_header(proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
    let l4_len = match proto {
        6 => 20,
        17 => 8,
        132 => 12 + 20, // common header and an INIT chunk
        _ => 8,
    };
    let mut l4 = vec![0u8; l4_len];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    match proto {
        6 => {
            l4[12] = 0x50;
            l4[13] = tcp_flags;
        }
        17 => l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
        132 => {
            l4[12] = 1; // INIT
            l4[14..16].copy_from_slice(&20u16.to_be_bytes());
        }
        _ => {}
    }
    l4
}

/// An IPv6 extension header for [`ipv6_packet_ext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options (8 bytes of padding options).
    HopByHop,
    /// Destination options, `units` of 8 bytes (1 or more).
    DestOpts(u8),
    /// Routing header (type 4, segments left 0), 24 bytes.
    Routing,
    /// Fragment header: offset in 8-byte units, more fragments.
    Fragment(u16, bool),
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::DestOpts(_) => 60,
            Self::Routing => 43,
            Self::Fragment(..) => 44,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop => vec![next, 0, 1, 4, 0, 0, 0, 0],
            Self::DestOpts(units) => {
                let units = units.max(1);
                let mut b = vec![0u8; usize::from(units) * 8];
                b[0] = next;
                b[1] = units - 1;
                // One PadN option over the rest.
                b[2] = 1;
                b[3] = u8::try_from(b.len() - 4).unwrap_or(0);
                b
            }
            Self::Routing => {
                let mut b = vec![0u8; 24];
                b[0] = next;
                b[1] = 2;
                b[2] = 4; // segment routing
                b
            }
            Self::Fragment(offset, more) => {
                let f = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&f.to_be_bytes());
                b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }
        }
    }
}

/// An Ethernet + IPv6 frame with a TCP (SYN), UDP or SCTP (INIT) header.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    ipv6_packet_ext(src, dst, 64, &[], proto, &l4_header(proto, sport, dport, TCP_SYN))
}

/// Like [`ipv6_packet`], with the given TCP flags.
pub fn ipv6_packet_flags(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
    ipv6_packet_ext(src, dst, 64, &[], proto, &l4_header(proto, sport, dport, tcp_flags))
}

/// An Ethernet + IPv6 frame: hop limit, extension headers in order, then
/// `payload` as protocol `proto`.
pub fn ipv6_packet_ext(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, ext: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, e) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, |n| n.number());
        body.extend(e.bytes(next));
    }
    body.extend_from_slice(payload);
    let first = ext.first().map_or(proto, |e| e.number());
    let mut p = Vec::with_capacity(14 + 40 + body.len());
    p.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd]);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.push(first);
    p.push(hop_limit);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend(body);
    p
}

/// An ICMPv6 message of `ty` (code 0): 4 bytes of header, 4 reserved, and
/// for neighbour solicitations and advertisements the target address.
pub fn icmpv6(ty: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0, 0, 0, 0];
    if ty == 135 || ty == 136 {
        m.extend_from_slice(&target.octets());
    }
    m
}

/// Like [`ipv4_packet`], with the given TCP flags.
pub fn ipv4_packet_flags(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
    ipv4_frame(src, dst, proto, &l4_header(proto, sport, dport, tcp_flags))
}

/// An ICMP or ICMPv6 error (`ty`, `code`) quoting `quoted`, a frame from one of this module's builders
/// (its Ethernet header is left out), from `src` to `dst`.
pub fn icmp_error(src: IpAddr, dst: IpAddr, ty: u8, code: u8, quoted: &[u8]) -> Option<Vec<u8>> {
    let mut msg = vec![ty, code, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(quoted.get(14..)?);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4_frame(s, d, 1, &msg)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(ipv6_packet_ext(s, d, 64, &[], 58, &msg)),
        _ => None,
    }
}

/// An Ethernet + IPv4 frame carrying `l4` as protocol `proto`.
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = Vec::with_capacity(14 + total);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(l4);
    p
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A `struct __sk_buff` context naming the interface the packet is on.
pub fn skb_ctx(ifindex: u32) -> [u8; 48] {
    let mut c = [0u8; 48];
    c[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

/// Runs a classifier `repeat` times on `packet` as if seen on `ifindex`;
/// returns the verdict and the kernel's mean time per run.
pub fn run(
    prog: &SchedClassifier,
    ifindex: u32,
    packet: &[u8],
    repeat: u32,
) -> Result<(u32, std::time::Duration), aya::programs::ProgramError> {
    let ctx = skb_ctx(ifindex);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat.max(1);
    let r = prog.test_run(opts)?;
    Ok((r.return_value, r.duration))
}
