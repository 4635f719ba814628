//! Crafted packets through BPF_PROG_TEST_RUN: SCTP probes and per-packet benchmarks.

use std::net::Ipv4Addr;

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

/// Like [`ipv4_packet`], with the given TCP flags.
pub fn ipv4_packet_flags(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
    let l4_len = match proto {
        6 => 20,
        17 => 8,
        132 => 12 + 20, // common header and an INIT chunk
        _ => 8,
    };
    let total = 20 + l4_len;
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
    p.extend_from_slice(&l4);
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
