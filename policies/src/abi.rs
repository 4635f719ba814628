//! Rust mirrors of the BPF map keys, values and events in `bpf/lib/types.h`.
//!
//! Every struct is `#[repr(C)]`, fixed-width, with the padding spelled out.
//! `tests::layout_matches_c` compares sizes and offsets with the layout the C
//! compiler emits in `bpf/abi_layout.c`.
#![allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait for map keys and values")]

/// Direction seen from the pod: towards it.
pub const DIR_INGRESS: u8 = 1;
/// Direction seen from the pod: from it.
pub const DIR_EGRESS: u8 = 2;

/// Wildcard peer identity in policy keys.
pub const ID_ANY: u32 = 0;
/// Identity of addresses no ipcache prefix covers.
pub const ID_WORLD: u32 = 2;
/// First identity the compiler allocates.
pub const ID_FIRST_ALLOCATED: u32 = 256;

/// Endpoint flag: ingress is enforced (a policy selects the pod for ingress).
pub const EP_ENFORCE_INGRESS: u32 = 1 << 0;
/// Endpoint flag: egress is enforced.
pub const EP_ENFORCE_EGRESS: u32 = 1 << 1;
/// Endpoint flag: a map write for this endpoint failed; drop new flows.
pub const EP_FAIL_CLOSED: u32 = 1 << 2;
/// Endpoint flag: ingress endPort ranges exist in `plinth_polrange`.
pub const EP_RANGES_INGRESS: u32 = 1 << 3;
/// Endpoint flag: egress endPort ranges exist in `plinth_polrange`.
pub const EP_RANGES_EGRESS: u32 = 1 << 4;

/// Endpoint flag: wildcard-peer ingress entries exist.
pub const EP_ANY_PEER_INGRESS: u32 = 1 << 5;
/// Endpoint flag: wildcard-peer egress entries exist.
pub const EP_ANY_PEER_EGRESS: u32 = 1 << 6;
/// Endpoint flag: ingress entries with port 0 or protocol 0 exist.
pub const EP_WILD_PORT_INGRESS: u32 = 1 << 7;
/// Endpoint flag: egress entries with port 0 or protocol 0 exist.
pub const EP_WILD_PORT_EGRESS: u32 = 1 << 8;
/// Set in `plinth_endpts_slots` entries only: the slot holds an endpoint.
pub const EP_PRESENT: u32 = 1 << 31;
/// Slots of `plinth_endpts_slots`: endpoints of ifindexes below this are
/// found by index, larger ones in the endpoint hash (`PLINTH_EP_SLOTS`).
pub const EP_SLOTS: u32 = 65_536;

/// Flow verdict: allowed.
pub const VERDICT_ALLOWED: u8 = 1;
/// Flow verdict: denied.
pub const VERDICT_DENIED: u8 = 2;

/// Size of `plinth_metrics` (reasons in [`crate::flows::Reason`]).
pub const METRICS_MAX: u32 = 64;

/// Key of `plinth_ipcache` (LPM): 0 prefixlen 4 addr (network order); 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// IPv4 address octets, network order.
    pub addr: [u8; 4],
}

/// Key of the IPv6 ipcache (LPM): 0 prefixlen 4 addr (network order); 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipcache6Key {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// IPv6 address octets, network order.
    pub addr: [u8; 16],
}

/// Value of both ipcaches: 0 identity 4 flags; 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcacheValue {
    /// Security identity.
    pub identity: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// Value of `plinth_endpts`, keyed by host-side ifindex: 0 `ep_id` 4 flags; 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Endpoint id used in policy and conntrack keys.
    pub ep_id: u32,
    /// `EP_*` flags.
    pub flags: u32,
}

/// Key of `plinth_policy`: 0 `ep_id` 4 `peer_id` 8 dir 9 proto 10 dport (network order); 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Local endpoint.
    pub ep_id: u32,
    /// Peer identity, [`ID_ANY`] for any peer.
    pub peer_id: u32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub dir: u8,
    /// IP protocol, 0 for any protocol and port.
    pub proto: u8,
    /// Port in network byte order (`u16::to_be`), 0 for any port.
    pub dport: u16,
}

/// Value of `plinth_policy` and `plinth_polrange`: 0 `policy_id` 4 rule 6 flags; 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    /// Deciding policy.
    pub policy_id: u32,
    /// Rule index within the policy's ingress or egress list.
    pub rule: u16,
    /// Reserved, 0.
    pub flags: u16,
}

/// Data of the `plinth_polrange` LPM key (after the prefix length):
/// 0 `ep_id` 4 `peer_id` 8 dir 9 proto 10 dport (network order); 12 bytes.
/// The full C key, with its leading prefix length, is 16 bytes.
pub type RangeKeyData = PolicyKey;

/// Key of `plinth_ct4`: 0 `ep_id` 4 saddr 8 daddr 12 sport 14 dport 16 proto 17 dir 18 pad; 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Local endpoint.
    pub ep_id: u32,
    /// Source address octets.
    pub saddr: [u8; 4],
    /// Destination address octets.
    pub daddr: [u8; 4],
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Direction.
    pub dir: u8,
    /// Padding, 0.
    pub pad: u16,
}

/// Key of `plinth_ct6`: 0 `ep_id` 4 saddr 20 daddr 36 sport 38 dport 40 proto 41 dir 42 pad; 44 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ct6Key {
    /// Local endpoint.
    pub ep_id: u32,
    /// Source address octets.
    pub saddr: [u8; 16],
    /// Destination address octets.
    pub daddr: [u8; 16],
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol (the upper layer after extension headers).
    pub proto: u8,
    /// Direction.
    pub dir: u8,
    /// Padding, 0.
    pub pad: u16,
}

/// Value of `plinth_ct4` and `plinth_ct6`: 0 `expires_ns` 8 `last_event_ns` 16 `policy_id` 20 rule 22 flags 23 pad; 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// Monotonic expiry time (`CLOCK_MONOTONIC`, as `bpf_ktime_get_ns`).
    pub expires_ns: u64,
    /// Time of the flow's last event (its event rate limit).
    pub last_event_ns: u64,
    /// Policy that allowed the flow.
    pub policy_id: u32,
    /// Rule that allowed the flow.
    pub rule: u16,
    /// Reserved.
    pub flags: u8,
    /// Padding.
    pub pad: u8,
}

/// `plinth_clock`: 0 `tick_ns` 8 `offset_ns`; 16 bytes. The datapath's clock
/// is `jiffies * tick_ns + offset_ns`, CLOCK_MONOTONIC ns (`tick_ns` 0: not set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Clock {
    /// ns per jiffy.
    pub tick_ns: u64,
    /// CLOCK_MONOTONIC ns at jiffy 0.
    pub offset_ns: u64,
}

/// `plinth_clock_sample`: 0 jiffies 8 `coarse_ns`; 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClockSample {
    /// `bpf_jiffies64()`.
    pub jiffies: u64,
    /// `bpf_ktime_get_coarse_ns()`, read right after.
    pub coarse_ns: u64,
}

/// Per-CPU counter in `plinth_metrics` and `plinth_polstats`: 0 packets 8 bytes; 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    /// Packets (flows in `plinth_polstats`).
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Flow event family: IPv4.
pub const FAMILY_IPV4: u8 = 4;
/// Flow event family: IPv6.
pub const FAMILY_IPV6: u8 = 6;

/// Ring buffer record, either family; layout in `bpf/lib/types.h`; 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowEvent {
    /// Monotonic time of the packet.
    pub ts_ns: u64,
    /// Source address octets (IPv4: the first 4, the rest 0).
    pub saddr: [u8; 16],
    /// Destination address octets (IPv4: the first 4, the rest 0).
    pub daddr: [u8; 16],
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// Local endpoint.
    pub ep_id: u32,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    /// Identity of the remote address (0 when not looked up).
    pub peer_id: u32,
    /// Deciding policy (0: none).
    pub policy_id: u32,
    /// Deciding rule.
    pub rule: u16,
    /// IP protocol.
    pub proto: u8,
    /// Direction.
    pub dir: u8,
    /// [`VERDICT_ALLOWED`] or [`VERDICT_DENIED`].
    pub verdict: u8,
    /// Reason code.
    pub reason: u8,
    /// [`EVENT_UNTRACKED`] or 0.
    pub flags: u8,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Padding.
    pub pad: [u8; 4],
}

/// Flow event flag: allowed, but not remembered (conntrack is full).
pub const EVENT_UNTRACKED: u8 = 1;

impl FlowEvent {
    /// Size of one ring buffer record.
    pub const SIZE: usize = std::mem::size_of::<Self>();

    /// Decodes a ring buffer record, `None` when it is too short or of an
    /// unknown family.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        let u16n = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u32n = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let a16 = |o: usize| -> [u8; 16] {
            let mut a = [0; 16];
            a.copy_from_slice(&b[o..o + 16]);
            a
        };
        let family = b[67];
        if family != FAMILY_IPV4 && family != FAMILY_IPV6 {
            return None;
        }
        Some(Self {
            ts_ns: u64::from(u32n(0)) | (u64::from(u32n(4)) << 32),
            saddr: a16(8),
            daddr: a16(24),
            sport: u16n(40),
            dport: u16n(42),
            ep_id: u32n(44),
            ifindex: u32n(48),
            peer_id: u32n(52),
            policy_id: u32n(56),
            rule: u16n(60),
            proto: b[62],
            dir: b[63],
            verdict: b[64],
            reason: b[65],
            flags: b[66],
            family,
            pad: [0; 4],
        })
    }

    fn addr(&self, a: [u8; 16]) -> std::net::IpAddr {
        if self.family == FAMILY_IPV6 {
            std::net::IpAddr::from(a)
        } else {
            std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        }
    }

    /// The source address, of the event's family.
    pub fn source(&self) -> std::net::IpAddr {
        self.addr(self.saddr)
    }

    /// The destination address, of the event's family.
    pub fn destination(&self) -> std::net::IpAddr {
        self.addr(self.daddr)
    }
}

#[cfg(feature = "bpf")]
mod pod {
    use super::{
        Clock, ClockSample, Counter, Ct6Key, CtKey, CtValue, Endpoint, Ipcache6Key, IpcacheKey, IpcacheValue,
        PolicyKey, PolicyValue,
    };
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made of integers with explicit
    // padding fields, so every byte pattern is a valid value.
    unsafe impl aya::Pod for IpcacheKey {}
    unsafe impl aya::Pod for Ipcache6Key {}
    unsafe impl aya::Pod for IpcacheValue {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for Ct6Key {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Clock {}
    unsafe impl aya::Pod for ClockSample {}
}

/// Bytes of the compiled datapath object.
#[cfg(feature = "bpf")]
pub static DATAPATH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/plinth.bpf.o"));

#[cfg(all(test, feature = "bpf"))]
mod tests {
    use super::*;
    use object::{Object as _, ObjectSection as _};
    use std::mem::{offset_of, size_of};

    static LAYOUT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/abi_layout.o"));

    #[test]
    fn layout_matches_c() {
        let file = object::File::parse(LAYOUT_OBJECT).expect("parse abi_layout.o");
        let section = file.section_by_name(".plinth_abi").expect(".plinth_abi section");
        let data = section.data().expect("section data");
        let c: Vec<usize> = data
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
            .collect();
        let rust = vec![
            size_of::<IpcacheKey>(),
            offset_of!(IpcacheKey, prefixlen),
            offset_of!(IpcacheKey, addr),
            size_of::<Ipcache6Key>(),
            offset_of!(Ipcache6Key, prefixlen),
            offset_of!(Ipcache6Key, addr),
            size_of::<IpcacheValue>(),
            offset_of!(IpcacheValue, identity),
            offset_of!(IpcacheValue, flags),
            size_of::<Endpoint>(),
            offset_of!(Endpoint, ep_id),
            offset_of!(Endpoint, flags),
            size_of::<PolicyKey>(),
            offset_of!(PolicyKey, ep_id),
            offset_of!(PolicyKey, peer_id),
            offset_of!(PolicyKey, dir),
            offset_of!(PolicyKey, proto),
            offset_of!(PolicyKey, dport),
            size_of::<PolicyValue>(),
            offset_of!(PolicyValue, policy_id),
            offset_of!(PolicyValue, rule),
            offset_of!(PolicyValue, flags),
            // range key: prefixlen (u32) then the policy key data.
            4 + size_of::<RangeKeyData>(),
            0,
            4 + offset_of!(RangeKeyData, ep_id),
            4 + offset_of!(RangeKeyData, peer_id),
            4 + offset_of!(RangeKeyData, dir),
            4 + offset_of!(RangeKeyData, proto),
            4 + offset_of!(RangeKeyData, dport),
            size_of::<CtKey>(),
            offset_of!(CtKey, ep_id),
            offset_of!(CtKey, saddr),
            offset_of!(CtKey, daddr),
            offset_of!(CtKey, sport),
            offset_of!(CtKey, dport),
            offset_of!(CtKey, proto),
            offset_of!(CtKey, dir),
            offset_of!(CtKey, pad),
            size_of::<Ct6Key>(),
            offset_of!(Ct6Key, ep_id),
            offset_of!(Ct6Key, saddr),
            offset_of!(Ct6Key, daddr),
            offset_of!(Ct6Key, sport),
            offset_of!(Ct6Key, dport),
            offset_of!(Ct6Key, proto),
            offset_of!(Ct6Key, dir),
            offset_of!(Ct6Key, pad),
            size_of::<CtValue>(),
            offset_of!(CtValue, expires_ns),
            offset_of!(CtValue, last_event_ns),
            offset_of!(CtValue, policy_id),
            offset_of!(CtValue, rule),
            offset_of!(CtValue, flags),
            offset_of!(CtValue, pad),
            size_of::<Counter>(),
            offset_of!(Counter, packets),
            offset_of!(Counter, bytes),
            size_of::<Clock>(),
            offset_of!(Clock, tick_ns),
            offset_of!(Clock, offset_ns),
            size_of::<ClockSample>(),
            offset_of!(ClockSample, jiffies),
            offset_of!(ClockSample, coarse_ns),
            size_of::<FlowEvent>(),
            offset_of!(FlowEvent, ts_ns),
            offset_of!(FlowEvent, saddr),
            offset_of!(FlowEvent, daddr),
            offset_of!(FlowEvent, sport),
            offset_of!(FlowEvent, dport),
            offset_of!(FlowEvent, ep_id),
            offset_of!(FlowEvent, ifindex),
            offset_of!(FlowEvent, peer_id),
            offset_of!(FlowEvent, policy_id),
            offset_of!(FlowEvent, rule),
            offset_of!(FlowEvent, proto),
            offset_of!(FlowEvent, dir),
            offset_of!(FlowEvent, verdict),
            offset_of!(FlowEvent, reason),
            offset_of!(FlowEvent, flags),
            offset_of!(FlowEvent, family),
            offset_of!(FlowEvent, pad),
        ];
        assert_eq!(rust, c, "Rust mirror differs from bpf/lib/types.h");
    }

    #[test]
    fn flow_event_decodes_its_own_bytes() {
        let mut b = [0u8; 72];
        b[8..12].copy_from_slice(&[198, 18, 0, 1]);
        b[42..44].copy_from_slice(&80u16.to_be_bytes());
        b[62] = 6;
        b[64] = VERDICT_DENIED;
        b[67] = FAMILY_IPV4;
        let e = FlowEvent::from_bytes(&b).expect("decode");
        assert_eq!(e.source(), std::net::IpAddr::from([198, 18, 0, 1]));
        assert_eq!(e.destination(), std::net::IpAddr::from([0, 0, 0, 0]));
        assert_eq!(u16::from_be(e.dport), 80);
        assert_eq!((e.proto, e.verdict), (6, VERDICT_DENIED));
        assert!(FlowEvent::from_bytes(&b[..71]).is_none());

        let v6: std::net::Ipv6Addr = "2001:2::10".parse().expect("address");
        b[24..40].copy_from_slice(&v6.octets());
        b[67] = FAMILY_IPV6;
        let e = FlowEvent::from_bytes(&b).expect("decode");
        assert_eq!(e.destination(), std::net::IpAddr::V6(v6));
        b[67] = 0;
        assert!(FlowEvent::from_bytes(&b).is_none(), "unknown family");
    }
}
