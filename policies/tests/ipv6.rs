//! IPv6 in the datapath with real BPF: crafted packets through BPF_PROG_TEST_RUN
//! on the model's interfaces (extension headers, fragments, neighbour
//! discovery, SCTP, conntrack, flow events). Real IPv6 connections between
//! pods are in the `ipv6` conformance scenario.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use plinth_policies::abi::{Counter, Ct6Key, CtValue, DIR_INGRESS, FAMILY_IPV6, FlowEvent, VERDICT_DENIED};
use plinth_policies::conformance::Model;
use plinth_policies::testrun::{
    self, Ext, TC_ACT_OK, TC_ACT_SHOT, TCP_ACK, TCP_SYN, icmpv6, ipv6_packet, ipv6_packet_ext, ipv6_packet_flags,
    l4_header,
};

/// Reason codes (`bpf/lib/drop_reasons.h`).
const ALLOW_POLICY: u32 = 1;
const ALLOW_NO_POLICY: u32 = 2;
const ALLOW_REPLY: u32 = 4;
const PASS_ICMP6_ND: u32 = 7;
const DROP_POLICY: u32 = 16;
const DROP_FRAGMENT: u32 = 19;
const DROP_MALFORMED: u32 = 20;

/// The model with `policies` applied; x/a's and y/b's interfaces and IPv6 addresses.
struct Fixture {
    m: Model,
    xa_if: u32,
    yb_if: u32,
    xa: Ipv6Addr,
    yb: Ipv6Addr,
    yc: Ipv6Addr,
}

fn fixture(policies: &[&str]) -> Fixture {
    let mut m = Model::new().expect("model");
    for p in policies {
        m.world
            .policies
            .push(std::sync::Arc::new(serde_saphyr::from_str(p).expect("policy yaml")));
    }
    m.apply().expect("apply");
    let find = |ns: &str, name: &str| {
        m.world
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .expect("model pod")
            .clone()
    };
    let (xa, yb, yc) = (find("x", "a"), find("y", "b"), find("y", "c"));
    let ifindex = |p: &plinth_policies::world::Pod| {
        nix::net::if_::if_nametoindex(p.interface.as_deref().expect("interface")).expect("ifindex")
    };
    Fixture {
        xa_if: ifindex(&xa),
        yb_if: ifindex(&yb),
        xa: xa.ipv6().expect("IPv6"),
        yb: yb.ipv6().expect("IPv6"),
        yc: yc.ipv6().expect("IPv6"),
        m,
    }
}

impl Fixture {
    /// Runs `prog` once on `pkt` as seen on `ifindex`; the verdict.
    fn run(&mut self, prog: &str, ifindex: u32, pkt: &[u8]) -> u32 {
        let dp = self.m.datapath.as_mut().expect("datapath");
        let p: &aya::programs::SchedClassifier = dp
            .ebpf()
            .program(prog)
            .expect("program")
            .try_into()
            .expect("classifier");
        testrun::run(p, ifindex, pkt, 1).expect("test run").0
    }

    /// x/a's ingress.
    fn ingress_xa(&mut self, pkt: &[u8]) -> u32 {
        self.run("plinth_to_pod", self.xa_if, pkt)
    }

    /// x/a's egress.
    fn egress_xa(&mut self, pkt: &[u8]) -> u32 {
        self.run("plinth_from_pod", self.xa_if, pkt)
    }

    /// Total over CPUs of `plinth_metrics[code]`.
    fn metric(&mut self, code: u32) -> u64 {
        let dp = self.m.datapath.as_mut().expect("datapath");
        let metrics: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(dp.ebpf().map("plinth_metrics").expect("metrics")).expect("percpu");
        metrics.get(&code, 0).expect("metric").iter().map(|c| c.packets).sum()
    }
}

/// x/a accepts TCP/80 and SCTP/81 from y/b; everything else towards it is denied.
const ALLOW_YB: &str = "metadata: {name: allow-yb, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: 80}, {protocol: SCTP, port: 81}]";

#[test]
fn extension_headers_are_skipped_to_the_ports_and_sctp_is_decided_by_port() {
    let mut f = fixture(&[ALLOW_YB]);
    let (yb, yc, xa) = (f.yb, f.yc, f.xa);
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 6, 40000, 80)),
        TC_ACT_OK,
        "allowed peer and port"
    );
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yc, xa, 6, 40001, 80)),
        TC_ACT_SHOT,
        "other peer"
    );
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 6, 40002, 81)),
        TC_ACT_SHOT,
        "other port"
    );
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 17, 40003, 80)),
        TC_ACT_SHOT,
        "UDP never by a TCP rule"
    );

    // Hop-by-hop, destination options (16 bytes), routing, and a first
    // fragment, in front of the TCP header: the ports are found behind them.
    let exts = [Ext::HopByHop, Ext::DestOpts(2), Ext::Routing, Ext::Fragment(0, true)];
    let behind = |sport: u16, dport: u16| ipv6_packet_ext(yb, xa, 64, &exts, 6, &l4_header(6, sport, dport, TCP_SYN));
    let allowed = f.metric(ALLOW_POLICY);
    assert_eq!(
        f.ingress_xa(&behind(40010, 80)),
        TC_ACT_OK,
        "port 80 behind four extension headers"
    );
    assert_eq!(f.metric(ALLOW_POLICY), allowed + 1, "decided by the rule, not passed");
    assert_eq!(f.ingress_xa(&behind(40011, 81)), TC_ACT_SHOT, "port 81 behind them");

    // Four is the limit: a fifth is malformed, dropped.
    let five = [
        Ext::HopByHop,
        Ext::DestOpts(1),
        Ext::DestOpts(1),
        Ext::DestOpts(1),
        Ext::DestOpts(1),
    ];
    let malformed = f.metric(DROP_MALFORMED);
    let pkt = ipv6_packet_ext(yb, xa, 64, &five, 6, &l4_header(6, 40012, 80, TCP_SYN));
    assert_eq!(f.ingress_xa(&pkt), TC_ACT_SHOT, "five extension headers");
    // Truncated: a TCP header announced, two bytes there; a hop-by-hop
    // header announced, two bytes there. (BPF_PROG_TEST_RUN itself refuses
    // a frame shorter than its IPv6 header.)
    let short = ipv6_packet_ext(yb, xa, 64, &[], 6, &[0x9c, 0x40]);
    assert_eq!(f.ingress_xa(&short), TC_ACT_SHOT, "truncated TCP header");
    let short = ipv6_packet_ext(yb, xa, 64, &[], 0, &[6, 0]);
    assert_eq!(f.ingress_xa(&short), TC_ACT_SHOT, "truncated extension header");
    // Directly behind the fixed header: a UDP header of two bytes, a TCP
    // header without its flags byte, an ICMPv6 header without its type.
    let short = ipv6_packet_ext(yb, xa, 64, &[], 17, &[0x9c, 0x40]);
    assert_eq!(f.ingress_xa(&short), TC_ACT_SHOT, "truncated UDP header");
    let tcp = l4_header(6, 40013, 80, TCP_SYN);
    let short = ipv6_packet_ext(yb, xa, 64, &[], 6, &tcp[..13]);
    assert_eq!(f.ingress_xa(&short), TC_ACT_SHOT, "TCP header without flags");
    let short = ipv6_packet_ext(yb, xa, 64, &[], 58, &[]);
    assert_eq!(f.ingress_xa(&short), TC_ACT_SHOT, "truncated ICMPv6 header");
    assert_eq!(f.metric(DROP_MALFORMED), malformed + 6);

    // Another upper-layer protocol (GRE): no ports, decided by the rules,
    // not malformed.
    let denied = f.metric(DROP_POLICY);
    let gre = ipv6_packet_ext(yb, xa, 64, &[], 47, &[0, 0, 0x86, 0xdd]);
    assert_eq!(f.ingress_xa(&gre), TC_ACT_SHOT, "GRE not allowed");
    assert_eq!(f.metric(DROP_POLICY), denied + 1, "denied by policy");
    assert_eq!(f.metric(DROP_MALFORMED), malformed + 6);

    // SCTP over IPv6, by port.
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 132, 40020, 81)),
        TC_ACT_OK,
        "SCTP/81 allowed"
    );
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 132, 40021, 80)),
        TC_ACT_SHOT,
        "SCTP/80 denied"
    );
    let exts = [Ext::DestOpts(1)];
    let sctp = ipv6_packet_ext(yb, xa, 64, &exts, 132, &l4_header(132, 40022, 81, 0));
    assert_eq!(f.ingress_xa(&sctp), TC_ACT_OK, "SCTP/81 behind destination options");
}

#[test]
fn non_first_fragments_are_dropped_where_enforced_and_passed_elsewhere() {
    let mut f = fixture(&[ALLOW_YB]);
    let (yb, xa) = (f.yb, f.xa);
    // A non-first fragment of an allowed flow: no ports, no state, like IPv4's.
    let frag = ipv6_packet_ext(yb, xa, 64, &[Ext::Fragment(185, false)], 6, &[0u8; 64]);
    let drops = f.metric(DROP_FRAGMENT);
    assert_eq!(f.ingress_xa(&frag), TC_ACT_SHOT, "x/a's ingress is enforced");
    assert_eq!(f.metric(DROP_FRAGMENT), drops + 1);
    // y/b's egress is not: passed.
    let passed = f.metric(ALLOW_NO_POLICY);
    let yb_if = f.yb_if;
    assert_eq!(
        f.run("plinth_from_pod", yb_if, &frag),
        TC_ACT_OK,
        "y/b's egress is not enforced"
    );
    assert_eq!(f.metric(ALLOW_NO_POLICY), passed + 1);
    // The first fragment is decided like an unfragmented packet.
    let first = ipv6_packet_ext(
        yb,
        xa,
        64,
        &[Ext::Fragment(0, true)],
        6,
        &l4_header(6, 40030, 80, TCP_SYN),
    );
    assert_eq!(f.ingress_xa(&first), TC_ACT_OK);
}

#[test]
fn neighbour_discovery_passes_a_pod_that_denies_everything() {
    let mut f = fixture(&[
        "metadata: {name: deny-all, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}",
    ]);
    let (yb, xa) = (f.yb, f.xa);
    let gw: Ipv6Addr = plinth_policies::netns::NODE_GW6;
    let solicited: Ipv6Addr = "ff02::1:ff00:10".parse().expect("address");
    let all_nodes: Ipv6Addr = "ff02::1".parse().expect("address");
    let mld: Ipv6Addr = "ff02::16".parse().expect("address");
    let nd = |src: Ipv6Addr, dst: Ipv6Addr, ty: u8, hops: u8| ipv6_packet_ext(src, dst, hops, &[], 58, &icmpv6(ty, xa));
    let passed = f.metric(PASS_ICMP6_ND);
    // Both directions, as the node and the pod resolve each other.
    assert_eq!(
        f.ingress_xa(&nd(gw, solicited, 135, 255)),
        TC_ACT_OK,
        "neighbour solicitation"
    );
    assert_eq!(f.egress_xa(&nd(xa, gw, 136, 255)), TC_ACT_OK, "neighbour advertisement");
    assert_eq!(
        f.egress_xa(&nd(xa, gw, 135, 255)),
        TC_ACT_OK,
        "the pod solicits its gateway"
    );
    assert_eq!(f.ingress_xa(&nd(gw, xa, 136, 255)), TC_ACT_OK, "the gateway answers");
    assert_eq!(
        f.egress_xa(&nd(xa, all_nodes, 133, 255)),
        TC_ACT_OK,
        "router solicitation"
    );
    assert_eq!(
        f.ingress_xa(&nd(gw, all_nodes, 134, 255)),
        TC_ACT_OK,
        "router advertisement"
    );
    // MLDv2 report: hop limit 1 behind a hop-by-hop router alert.
    let report = ipv6_packet_ext(xa, mld, 1, &[Ext::HopByHop], 58, &icmpv6(143, xa));
    assert_eq!(f.egress_xa(&report), TC_ACT_OK, "MLDv2 report");
    assert_eq!(f.ingress_xa(&nd(gw, all_nodes, 130, 1)), TC_ACT_OK, "MLD query");
    assert_eq!(f.metric(PASS_ICMP6_ND), passed + 8);

    // Not neighbour discovery: decided by the rules (deny all).
    let denied = f.metric(DROP_POLICY);
    assert_eq!(
        f.ingress_xa(&nd(yb, xa, 135, 64)),
        TC_ACT_SHOT,
        "a solicitation that crossed a router"
    );
    assert_eq!(f.ingress_xa(&nd(gw, xa, 137, 255)), TC_ACT_SHOT, "redirect");
    assert_eq!(f.ingress_xa(&nd(yb, xa, 128, 64)), TC_ACT_SHOT, "echo request");
    assert_eq!(f.egress_xa(&nd(xa, yb, 1, 64)), TC_ACT_SHOT, "destination unreachable");
    assert_eq!(
        f.ingress_xa(&nd(gw, all_nodes, 131, 2)),
        TC_ACT_SHOT,
        "MLD with hop limit 2"
    );
    assert_eq!(f.ingress_xa(&ipv6_packet(yb, xa, 6, 40040, 80)), TC_ACT_SHOT, "TCP");
    assert_eq!(f.metric(DROP_POLICY), denied + 6);
}

#[test]
fn ipv6_conntrack_passes_replies_is_collected_and_events_carry_ipv6_addresses() {
    // x/a: ingress from y/b on 80, egress nowhere.
    let mut f = fixture(&[&format!("{ALLOW_YB}\n  policyTypes: [Ingress, Egress]")]);
    let (yb, yc, xa) = (f.yb, f.yc, f.xa);
    let mut ring = {
        let dp = f.m.datapath.as_mut().expect("datapath");
        RingBuf::try_from(dp.ebpf().take_map("plinth_events").expect("events map")).expect("ringbuf")
    };
    while ring.next().is_some() {}

    assert_eq!(
        f.ingress_xa(&ipv6_packet(yb, xa, 6, 40100, 80)),
        TC_ACT_OK,
        "SYN allowed"
    );
    let replies = f.metric(ALLOW_REPLY);
    let syn_ack = ipv6_packet_flags(xa, yb, 6, 80, 40100, TCP_SYN | TCP_ACK);
    assert_eq!(f.egress_xa(&syn_ack), TC_ACT_OK, "the reply passes x/a's denied egress");
    assert_eq!(f.metric(ALLOW_REPLY), replies + 1);
    assert_eq!(
        f.egress_xa(&ipv6_packet(xa, yb, 6, 40101, 80)),
        TC_ACT_SHOT,
        "a new flow out of x/a is denied"
    );
    assert_eq!(
        f.ingress_xa(&ipv6_packet(yc, xa, 6, 40102, 80)),
        TC_ACT_SHOT,
        "y/c denied"
    );

    // The entry is in plinth_ct6, in the flow's orientation.
    let key = Ct6Key {
        ep_id: f.m.compiled().endpoint_ids[&("x".to_owned(), "a".to_owned())],
        saddr: yb.octets(),
        daddr: xa.octets(),
        sport: 40100u16.to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        dir: DIR_INGRESS,
        pad: 0,
    };
    {
        let dp = f.m.datapath.as_mut().expect("datapath");
        let ct: aya::maps::HashMap<&MapData, Ct6Key, CtValue> =
            aya::maps::HashMap::try_from(dp.ebpf().map("plinth_ct6").expect("plinth_ct6")).expect("hash");
        assert!(ct.get(&key, 0).is_ok(), "flow in plinth_ct6");
    }

    // Events: the allowed flow and the denied ones, with their IPv6 addresses.
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(FlowEvent::from_bytes(&item).expect("event"));
    }
    let ours: Vec<&FlowEvent> = events
        .iter()
        .filter(|e| (40100..40103).contains(&u16::from_be(e.sport)))
        .collect();
    assert_eq!(ours.len(), 3, "one event per new flow: {events:?}");
    assert!(ours.iter().all(|e| e.family == FAMILY_IPV6));
    assert_eq!(
        (ours[0].source(), ours[0].destination(), ours[0].reason),
        (IpAddr::V6(yb), IpAddr::V6(xa), 1)
    );
    assert_eq!((ours[1].source(), ours[1].verdict), (IpAddr::V6(xa), VERDICT_DENIED));
    assert_eq!((ours[2].source(), ours[2].verdict), (IpAddr::V6(yc), VERDICT_DENIED));

    // The agent's collection walks plinth_ct6 too: hours later the entry goes.
    let later = plinth_policies::load::ct_gc::monotonic_ns() + 7 * 3600 * 1_000_000_000;
    let r = f.m.datapath.as_mut().expect("datapath").ct_gc_at(later).expect("gc");
    assert!(r.ct6.deleted >= 1 && r.ct6.remaining() == 0, "{r:?}");
    assert_eq!(r.ct6.capacity, 262_144);
}
