//! Datapath behaviour with real BPF: restarts, incremental updates, map
//! exhaustion, flow events and counters. Each test builds the model in its
//! own network namespaces with its own pin directory.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use plinth_policies::abi::{Counter, EP_FAIL_CLOSED, FlowEvent, VERDICT_DENIED};
use plinth_policies::conformance::{Model, Options};
use plinth_policies::load::{Config, Datapath};
use plinth_policies::netns;
use plinth_policies::scenario::Probe;

fn policy(yaml: &str) -> std::sync::Arc<NetworkPolicy> {
    std::sync::Arc::new(serde_saphyr::from_str(yaml).expect("policy yaml"))
}

fn tcp80() -> Probe {
    Probe {
        protocol: "TCP".into(),
        port: 80,
        ip_family: Default::default(),
    }
}

/// Index of pod `ns/name` in the model.
fn pod(m: &Model, ns: &str, name: &str) -> usize {
    m.world
        .pods
        .iter()
        .position(|p| p.namespace == ns && p.name == name)
        .expect("model pod")
}

/// An echo server on 8080 in pod `i`, for long-lived connections.
fn echo_server(m: &Model, i: usize) {
    let l = netns::in_netns(&m.net.pods[i].netns, || {
        TcpListener::bind(("0.0.0.0", 8080)).expect("bind 8080")
    })
    .expect("enter pod netns");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn echo(s: &mut std::net::TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

#[test]
fn restart_keeps_enforcement_and_established_connections() {
    let mut m = Model::new().expect("model");
    let (xa, xb, ya) = (pod(&m, "x", "a"), pod(&m, "x", "b"), pod(&m, "y", "a"));
    echo_server(&m, xa);
    m.world.policies.push(policy(
        "metadata: {name: only-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    m.apply().expect("apply");
    let mut conn = m.net.connect(xb, xa, 8080).expect("x/b -> x/a:8080 allowed");
    assert!(echo(&mut conn));

    // The agent goes away: its process-side handles are dropped, pins stay.
    drop(m.datapath.take());
    assert!(echo(&mut conn), "established connection survives the agent's exit");
    let t = m.probe(&tcp80(), &Options::default()).expect("probe");
    assert_eq!(t.cells[ya][xa], Some(false), "still enforced without an agent");
    assert_eq!(t.cells[xb][xa], Some(true), "still allowed without an agent");

    // A new agent: reads the pinned maps back; the same world changes nothing.
    let mut dp = Datapath::load(&Config {
        pin_dir: m.pin_dir.clone(),
        ..Config::default()
    })
    .expect("reload");
    let compiled = m.compiled().clone();
    let report = dp.apply(&compiled).expect("apply after restart");
    assert_eq!(report.changes(), 0, "restart rewrote entries: {report:?}");
    m.datapath = Some(dp);
    assert!(echo(&mut conn), "established connection survives the program swap");

    // Tighten: x/b loses access; its established connection keeps working
    // (conntrack), new connections are denied.
    m.world.policies.clear();
    m.world.policies.push(policy(
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}",
    ));
    let report = m.apply().expect("apply deny");
    assert!(report.changes() > 0);
    assert!(echo(&mut conn), "established flow passes on its conntrack entry");
    assert!(m.net.connect(xb, xa, 8080).is_err(), "new connection denied");
}

#[test]
fn one_rule_change_among_ten_thousand_writes_one_entry() {
    let mut m = Model::new().expect("model");
    // 10,000 ports allowed from y/b into x/a, plus one from z/c.
    let ports: String = (0..10_000).map(|i| format!("{{port: {}}},", 1000 + i)).collect();
    let big = |extra: u16| {
        policy(&format!(
            "metadata: {{name: big, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}]\n    ports: [{ports}]\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: z}}}}, podSelector: {{matchLabels: {{pod: c}}}}}}]\n    ports: [{{port: {extra}}}]"
        ))
    };
    m.world.policies.push(big(80));
    let first = m.apply().expect("apply");
    assert!(
        first.writes.get("plinth_policy").copied().unwrap_or(0) >= 10_001,
        "{first:?}"
    );
    let (xa, zc) = (pod(&m, "x", "a"), pod(&m, "z", "c"));
    let t = m.probe(&tcp80(), &Options::default()).expect("probe");
    assert_eq!(t.cells[zc][xa], Some(true));

    m.world.policies[0] = big(81);
    let report = m.apply().expect("apply change");
    assert_eq!(report.writes.get("plinth_policy"), Some(&1), "{report:?}");
    assert_eq!(report.deletes.get("plinth_policy"), Some(&1), "{report:?}");
    assert_eq!(report.changes(), 2, "{report:?}");
    let t = m.probe(&tcp80(), &Options::default()).expect("probe");
    assert_eq!(t.cells[zc][xa], Some(false));
}

#[test]
fn a_diff_that_does_not_start_from_the_maps_is_applied_whole() {
    let mut m = Model::new().expect("model");
    let only = |ns: &str, pod: &str, port: u16| {
        policy(&format!(
            "metadata: {{name: only, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: {ns}}}}}, podSelector: {{matchLabels: {{pod: {pod}}}}}}}], ports: [{{port: {port}}}]}}]"
        ))
    };
    m.world.policies.push(only("y", "b", 80));
    m.apply().expect("apply");
    let (xa, yb, zc) = (pod(&m, "x", "a"), pod(&m, "y", "b"), pod(&m, "z", "c"));
    // Another compiler's change of rules only (z/c on 81, then on 80): its deletions are not in the maps.
    let mut other = plinth_policies::compile::Compiler::new();
    let mut w = m.world.clone();
    w.policies = vec![only("z", "c", 81)];
    other.update(w.clone());
    w.policies = vec![only("z", "c", 80)];
    let d = other.update(w);
    assert!(
        d.ipcache.is_empty() && d.endpoints.is_empty() && d.policy.len() == 2,
        "{d:?}"
    );
    let dp = m.datapath.as_mut().expect("datapath");
    dp.apply_diff(other.compiled(), &d).expect("apply diff");
    // Written as the diff, y/b's entry would stay and z/c's port 81 entry (never written) would be "deleted".
    assert_eq!(dp.state().policy, other.compiled().policy);
    let t = m.probe(&tcp80(), &Options::default()).expect("probe");
    assert_eq!(t.cells[zc][xa], Some(true), "{t:?}");
    assert_eq!(t.cells[yb][xa], Some(false), "{t:?}");
}

#[test]
fn full_policy_map_fails_closed_and_names_the_map() {
    netns::ensure_bpffs().expect("bpffs");
    let mut m = Model::new().expect("model");
    // Replace the datapath with one whose policy map holds 4 entries.
    if let Some(dp) = m.datapath.take() {
        dp.teardown().expect("teardown");
    }
    let cfg = Config {
        pin_dir: m.pin_dir.clone(),
        policy_max_entries: Some(4),
        ..Config::default()
    };
    m.datapath = Some(Datapath::load(&cfg).expect("load small"));
    m.world.policies.push(policy(
        "metadata: {name: many, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80}, {port: 81}, {port: 82}, {port: 83}, {port: 84}]}]",
    ));
    let report = m.apply().expect("apply");
    assert!(report.full_maps.contains("plinth_policy"), "{report:?}");
    assert!(!report.fail_closed.is_empty());
    let dp = m.datapath.as_ref().expect("datapath");
    let closed = dp
        .state()
        .endpoints
        .values()
        .filter(|e| e.flags & EP_FAIL_CLOSED != 0)
        .count();
    assert!(closed >= 1, "no endpoint fails closed");
    // Every x pod is either fully written or failing closed: nothing into x
    // is allowed that the policy would not allow, and the closed ones drop all.
    let t = m.probe(&tcp80(), &Options::default()).expect("probe");
    let closed_pods: Vec<usize> = (0..9)
        .filter(|&i| {
            let ifname = m.world.pods[i].interface.clone().unwrap_or_default();
            m.compiled()
                .endpoints
                .get(&ifname)
                .is_some_and(|e| report.fail_closed.contains(&e.ep_id))
        })
        .collect();
    assert!(!closed_pods.is_empty());
    for &j in &closed_pods {
        for i in (0..9).filter(|i| *i != j) {
            assert_eq!(
                t.cells[i][j],
                Some(false),
                "{} -> {} passes a failed-closed endpoint",
                t.pods[i],
                t.pods[j]
            );
        }
    }
}

#[test]
fn flow_events_name_the_verdict_and_are_rate_limited_per_flow() {
    let mut m = Model::new().expect("model");
    m.world.policies.push(policy(
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let dp = m.datapath.as_mut().expect("datapath");
    let mut ring = RingBuf::try_from(dp.ebpf().take_map("plinth_events").expect("events map")).expect("ringbuf");
    while ring.next().is_some() {}

    // One denied flow, sent 500 times through the real program.
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let pkt = plinth_policies::testrun::ipv4_packet(
        m.world.pods[yb].ipv4().expect("IPv4"),
        m.world.pods[xa].ipv4().expect("IPv4"),
        6,
        41000,
        80,
    );
    let prog: &aya::programs::SchedClassifier = dp
        .ebpf()
        .program("plinth_to_pod")
        .expect("prog")
        .try_into()
        .expect("classifier");
    for _ in 0..500 {
        let (v, _) = plinth_policies::testrun::run(prog, ifindex, &pkt, 1).expect("test run");
        assert_eq!(v, plinth_policies::testrun::TC_ACT_SHOT);
    }
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(FlowEvent::from_bytes(&item).expect("event"));
    }
    let ours: Vec<&FlowEvent> = events.iter().filter(|e| e.sport == 41000u16.to_be()).collect();
    assert_eq!(
        ours.len(),
        1,
        "500 packets of one flow within a second make one event: {events:?}"
    );
    let e = ours[0];
    assert_eq!(e.verdict, VERDICT_DENIED);
    assert_eq!(e.reason, 16, "policy-denied");
    assert_eq!(e.source(), std::net::IpAddr::V4(m.world.pods[yb].ipv4().expect("IPv4")));
    assert_eq!(u16::from_be(e.dport), 80);

    // Counters: 500 drops under PLINTH_DROP_POLICY.
    let dp = m.datapath.as_mut().expect("datapath");
    let metrics: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(dp.ebpf().map("plinth_metrics").expect("metrics")).expect("percpu");
    let drops: u64 = metrics.get(&16, 0).expect("reason 16").iter().map(|c| c.packets).sum();
    assert!(drops >= 500, "policy drops counted: {drops}");
}

#[test]
fn a_syn_on_a_known_tuple_is_decided_by_the_rules_in_force() {
    use plinth_policies::testrun::{self, TC_ACT_OK, TC_ACT_SHOT, TCP_ACK, TCP_SYN};
    let mut m = Model::new().expect("model");
    m.world.policies.push(policy(
        "metadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let (src, dst) = (
        m.world.pods[yb].ipv4().expect("IPv4"),
        m.world.pods[xa].ipv4().expect("IPv4"),
    );
    let syn = testrun::ipv4_packet_flags(src, dst, 6, 42000, 80, TCP_SYN);
    let ack = testrun::ipv4_packet_flags(src, dst, 6, 42000, 80, TCP_ACK);
    let run = |m: &mut Model, pkt: &[u8]| run_to_pod(m, ifindex, pkt);
    assert_eq!(run(&mut m, &syn), TC_ACT_OK, "allowed SYN");
    assert_eq!(run(&mut m, &ack), TC_ACT_OK, "established ACK");

    m.world.policies.clear();
    m.world.policies.push(policy(
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}",
    ));
    m.apply().expect("apply deny");
    assert_eq!(run(&mut m, &ack), TC_ACT_OK, "the established flow keeps passing");
    assert_eq!(
        run(&mut m, &syn),
        TC_ACT_SHOT,
        "a new connection on the same tuple is denied"
    );
}

#[test]
fn repeated_syns_of_an_allowed_flow_keep_one_entry_and_send_one_event() {
    use plinth_policies::abi::{CtKey, CtValue, DIR_INGRESS, VERDICT_ALLOWED};
    use plinth_policies::load::ct_gc::CT4;
    use plinth_policies::testrun::{self, TC_ACT_OK, TCP_ACK, TCP_SYN};
    let mut m = Model::new().expect("model");
    m.world.policies.push(policy(
        "metadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let iface = m.world.pods[xa].interface.clone().expect("iface");
    let ifindex = nix::net::if_::if_nametoindex(iface.as_str()).expect("ifindex");
    let (src, dst) = (
        m.world.pods[yb].ipv4().expect("IPv4"),
        m.world.pods[xa].ipv4().expect("IPv4"),
    );
    let dp = m.datapath.as_mut().expect("datapath");
    let mut ring = RingBuf::try_from(dp.ebpf().take_map("plinth_events").expect("events map")).expect("ringbuf");
    while ring.next().is_some() {}

    // The first SYN inserts the flow's entry; its retransmissions find it
    // (the insert says it exists) and rewrite it in place.
    let syn = testrun::ipv4_packet_flags(src, dst, 6, 42500, 80, TCP_SYN);
    for i in 0..5 {
        assert_eq!(run_to_pod(&mut m, ifindex, &syn), TC_ACT_OK, "SYN {i}");
    }
    let ack = testrun::ipv4_packet_flags(src, dst, 6, 42500, 80, TCP_ACK);
    assert_eq!(run_to_pod(&mut m, ifindex, &ack), TC_ACT_OK, "established ACK");

    let ep_id = m.compiled().endpoints[&iface].ep_id;
    let dp = m.datapath.as_mut().expect("datapath");
    let ct: aya::maps::HashMap<&MapData, CtKey, CtValue> =
        aya::maps::HashMap::try_from(dp.ebpf().map(CT4).expect("ct map")).expect("hash");
    let ours: Vec<CtKey> = ct
        .keys()
        .map(|k| k.expect("key"))
        .filter(|k| k.ep_id == ep_id && k.sport == 42500u16.to_be())
        .collect();
    assert_eq!(
        ours,
        vec![CtKey {
            ep_id,
            saddr: src.octets(),
            daddr: dst.octets(),
            sport: 42500u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            dir: DIR_INGRESS,
            pad: 0,
        }],
        "one entry for the flow"
    );
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(FlowEvent::from_bytes(&item).expect("event"));
    }
    let allowed = events
        .iter()
        .filter(|e| e.verdict == VERDICT_ALLOWED && e.sport == 42500u16.to_be())
        .count();
    assert_eq!(allowed, 1, "five SYNs within a second make one event: {events:?}");
}

#[test]
fn a_bare_syn_is_never_a_reply_but_a_syn_ack_is() {
    use plinth_policies::testrun::{self, TC_ACT_OK, TC_ACT_SHOT, TCP_ACK, TCP_SYN};
    // x/a accepts nothing; its egress is not enforced.
    let mut m = Model::new().expect("model");
    m.world.policies.push(policy(
        "metadata: {name: deny-in, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let (a, b) = (
        m.world.pods[xa].ipv4().expect("IPv4"),
        m.world.pods[yb].ipv4().expect("IPv4"),
    );
    let run = |m: &mut Model, prog: &str, pkt: &[u8]| run_prog(m, prog, ifindex, pkt);
    // x/a opens a connection to y/b: its egress is open, the flow enters conntrack.
    let out = testrun::ipv4_packet_flags(a, b, 6, 43100, 80, TCP_SYN);
    assert_eq!(run(&mut m, "plinth_from_pod", &out), TC_ACT_OK, "a -> b SYN");
    // A bare SYN back on the reversed tuple opens a connection into x/a: its ingress rules decide.
    let syn_back = testrun::ipv4_packet_flags(b, a, 6, 80, 43100, TCP_SYN);
    assert_eq!(
        run(&mut m, "plinth_to_pod", &syn_back),
        TC_ACT_SHOT,
        "a bare SYN is not a reply"
    );
    // The SYN-ACK of the connection x/a opened is its reply.
    let syn_ack = testrun::ipv4_packet_flags(b, a, 6, 80, 43100, TCP_SYN | TCP_ACK);
    assert_eq!(
        run(&mut m, "plinth_to_pod", &syn_ack),
        TC_ACT_OK,
        "the SYN-ACK is a reply"
    );
    let ack = testrun::ipv4_packet_flags(b, a, 6, 80, 43100, TCP_ACK);
    assert_eq!(run(&mut m, "plinth_to_pod", &ack), TC_ACT_OK, "and so are its ACKs");
}

#[test]
fn icmp_errors_about_a_tracked_flow_pass_and_others_are_decided_by_the_rules() {
    use std::net::IpAddr;

    use plinth_policies::testrun::{self, TC_ACT_OK, TC_ACT_SHOT, TCP_ACK, TCP_SYN};
    // x/a serves y/b on TCP 80 and may send nothing new.
    let mut m = Model::new().expect("model");
    m.world.policies.push(policy(
        "metadata: {name: serve-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let run = |m: &mut Model, prog: &str, pkt: &[u8]| run_prog(m, prog, ifindex, pkt);
    for (family, router) in [
        ("IPv4", "198.18.200.1".parse::<IpAddr>().expect("address")),
        ("IPv6", "2001:2::c8:1".parse::<IpAddr>().expect("address")),
    ] {
        let v6 = router.is_ipv6();
        let ip = |i: usize| {
            m.world.pods[i]
                .ips
                .iter()
                .copied()
                .find(|a| a.is_ipv6() == v6)
                .expect("address of the family")
        };
        let (a, b) = (ip(xa), ip(yb));
        let pkt = |s, d, sport, dport, flags| testrun::ip_packet_flags(s, d, 6, sport, dport, flags).expect("packet");
        let err = |s, d, ty, code, quoted: &[u8]| testrun::icmp_error(s, d, ty, code, quoted).expect("error");
        let (unreachable, too_big, port_unreachable) = if v6 { (1, 2, 4) } else { (3, 3, 3) };
        let too_big_code = if v6 { 0 } else { 4 };
        // y/b connects to x/a:80: allowed, tracked.
        assert_eq!(
            run(&mut m, "plinth_to_pod", &pkt(b, a, 43100, 80, TCP_SYN)),
            TC_ACT_OK,
            "{family}: b -> a SYN"
        );
        // A router on the path says x/a's reply is too big: the quoted packet is the flow's reply.
        let reply = pkt(a, b, 80, 43100, TCP_SYN | TCP_ACK);
        assert_eq!(
            run(&mut m, "plinth_to_pod", &err(router, a, too_big, too_big_code, &reply)),
            TC_ACT_OK,
            "{family}: too big, about the reply"
        );
        // x/a refuses a segment of the flow: the quoted packet is the flow's first direction; x/a's egress
        // allows nothing new.
        let segment = pkt(b, a, 43100, 80, TCP_ACK);
        assert_eq!(
            run(
                &mut m,
                "plinth_from_pod",
                &err(a, b, unreachable, port_unreachable, &segment)
            ),
            TC_ACT_OK,
            "{family}: unreachable, about the flow"
        );
        // An error goes back to the sender of the packet it quotes: x/a cannot send one elsewhere (past its
        // egress policy) by quoting a flow it has.
        assert_eq!(
            run(
                &mut m,
                "plinth_from_pod",
                &err(a, router, unreachable, port_unreachable, &segment)
            ),
            TC_ACT_SHOT,
            "{family}: an error to someone else than the quoted sender"
        );
        // The same errors about flows conntrack does not hold are decided by the rules: dropped.
        let other_reply = pkt(a, b, 80, 43101, TCP_SYN | TCP_ACK);
        assert_eq!(
            run(
                &mut m,
                "plinth_to_pod",
                &err(router, a, too_big, too_big_code, &other_reply)
            ),
            TC_ACT_SHOT,
            "{family}: too big, about an unknown flow"
        );
        let other_segment = pkt(b, a, 43101, 80, TCP_ACK);
        assert_eq!(
            run(
                &mut m,
                "plinth_from_pod",
                &err(a, b, unreachable, port_unreachable, &other_segment)
            ),
            TC_ACT_SHOT,
            "{family}: unreachable, about an unknown flow"
        );
        // An echo request is not an error, whatever it carries.
        let echo = if v6 { 128 } else { 8 };
        assert_eq!(
            run(&mut m, "plinth_to_pod", &err(router, a, echo, 0, &reply)),
            TC_ACT_SHOT,
            "{family}: an echo request is not related"
        );
    }
}

/// Probes that run the real ingress program of x/a on SYNs from several peers
/// while `change` is applied, and the verdicts each gives before and after.
struct MixedStateProbe {
    /// (peer name, packet) for each probe.
    probes: Vec<(String, Vec<u8>)>,
    ifindex: u32,
}

/// Verdicts of every probe under the maps as they are.
fn verdicts(dp: &Datapath, p: &MixedStateProbe) -> Vec<u32> {
    let prog: &aya::programs::SchedClassifier = dp
        .ebpf_ref()
        .program("plinth_to_pod")
        .expect("prog")
        .try_into()
        .expect("classifier");
    p.probes
        .iter()
        .map(|(_, pkt)| {
            plinth_policies::testrun::run(prog, p.ifindex, pkt, 1)
                .expect("test run")
                .0
        })
        .collect()
}

/// The old world: `big` lets y/c into x/a on port 80 and `ports` more ports,
/// y/b is labelled `pod: b`. The new world: `big` lets y/a in instead, and y/b
/// is relabelled `pod: c`, taking the identity y/c had. The change rewrites
/// more than 2 × `ports` rule entries and one ipcache entry.
///
/// y/b -> x/a:80 is denied by the old policy (y/b is not `pod: c` then) and by
/// the new one (it allows `pod: a` only), but written entry by entry there is
/// a moment where y/b already has y/c's identity and y/c's old rule is still
/// there: allowed, a verdict neither policy gives.
fn mixed_state_worlds(
    m: &mut Model,
    ports: u16,
) -> (
    Vec<std::sync::Arc<NetworkPolicy>>,
    Vec<std::sync::Arc<NetworkPolicy>>,
    usize,
    MixedStateProbe,
) {
    let list: String = std::iter::once(80)
        .chain((0..ports).map(|i| 1000 + i))
        .map(|p| format!("{{port: {p}}},"))
        .collect();
    let big = |peer: &str| {
        vec![policy(&format!(
            "metadata: {{name: big, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: {peer}}}}}}}]\n    ports: [{list}]"
        ))]
    };
    let (xa, yb) = (pod(m, "x", "a"), pod(m, "y", "b"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let dst = m.world.pods[xa].ipv4().expect("IPv4");
    let probes = ["y/a", "y/b", "y/c", "z/a"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (ns, p) = name.split_once('/').expect("ns/pod");
            let src = m.world.pods[pod(m, ns, p)].ipv4().expect("IPv4");
            let sport = 43000 + i as u16;
            (
                name.to_string(),
                plinth_policies::testrun::ipv4_packet(src, dst, 6, sport, 80),
            )
        })
        .collect();
    (big("c"), big("a"), yb, MixedStateProbe { probes, ifindex })
}

/// Applies the new world while another thread probes continuously through a
/// second instance of the programs on the same pinned maps. Returns the
/// verdicts seen during the apply, the apply report, and the old and new verdicts.
fn apply_while_probing(
    m: &mut Model,
    old: &[std::sync::Arc<NetworkPolicy>],
    new: &[std::sync::Arc<NetworkPolicy>],
    yb: usize,
    p: &MixedStateProbe,
    update: plinth_policies::load::UpdateMode,
) -> (Vec<Vec<u32>>, plinth_policies::load::ApplyReport, Vec<u32>, Vec<u32>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    let cfg = Config {
        pin_dir: m.pin_dir.clone(),
        update,
        ..Config::default()
    };
    // The old world, written whole.
    if let Some(dp) = m.datapath.take() {
        dp.teardown().expect("teardown");
    }
    m.datapath = Some(Datapath::load(&cfg).expect("load"));
    m.compiler = plinth_policies::compile::Compiler::new();
    m.world.policies = old.to_vec();
    m.world.pods[yb].labels = [("pod".to_owned(), "b".to_owned())].into_iter().collect();
    m.apply().expect("apply old world");
    let before = verdicts(m.datapath.as_ref().expect("datapath"), p);

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<Vec<u32>>>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let probes = MixedStateProbe {
        probes: p.probes.clone(),
        ifindex: p.ifindex,
    };
    let stop2 = Arc::clone(&stop);
    let hammer = std::thread::spawn(move || {
        let dp = Datapath::load(&cfg).expect("second instance of the programs");
        let mut seen = Vec::new();
        let _ = ready_tx.send(());
        while !stop2.load(Ordering::Relaxed) {
            seen.push(verdicts(&dp, &probes));
        }
        let _ = tx.send(seen);
    });
    ready_rx.recv().expect("prober ready");
    std::thread::sleep(Duration::from_millis(20));
    m.world.policies = new.to_vec();
    m.world.pods[yb].labels = [("pod".to_owned(), "c".to_owned())].into_iter().collect();
    let report = m.apply().expect("apply new world");
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let seen = rx.recv().expect("probe results");
    hammer.join().expect("prober");
    let after = verdicts(m.datapath.as_ref().expect("datapath"), p);
    (seen, report, before, after)
}

/// Probe rounds with a verdict that neither the old nor the new maps give.
fn mixed(seen: &[Vec<u32>], before: &[u32], after: &[u32], p: &MixedStateProbe) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for round in seen {
        for (i, v) in round.iter().enumerate() {
            if *v != before[i] && *v != after[i] {
                out.insert(format!("{} -> x/a:80 gave {v}", p.probes[i].0));
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn a_large_change_swaps_a_generation_so_every_packet_sees_the_old_or_the_new_policy() {
    use plinth_policies::load::UpdateMode;
    use plinth_policies::testrun::{TC_ACT_OK, TC_ACT_SHOT};
    let mut m = Model::new().expect("model");
    let (old, new, yb, p) = mixed_state_worlds(&mut m, 15_000);
    let (seen, report, before, after) = apply_while_probing(&mut m, &old, &new, yb, &p, UpdateMode::Auto);
    assert!(
        report.swapped,
        "identities changed: the change is swapped in: {report:?}"
    );
    // y/a, y/b, y/c, z/a -> x/a:80, before and after.
    assert_eq!(before, vec![TC_ACT_SHOT, TC_ACT_SHOT, TC_ACT_OK, TC_ACT_SHOT]);
    assert_eq!(after, vec![TC_ACT_OK, TC_ACT_SHOT, TC_ACT_SHOT, TC_ACT_SHOT]);
    assert!(
        seen.len() >= 50,
        "only {} probe rounds ran during the change: the test saw too little",
        seen.len()
    );
    let bad = mixed(&seen, &before, &after, &p);
    assert!(bad.is_empty(), "verdicts of neither policy during the swap: {bad:?}");
    // The policy is the new one, with every entry and nothing else.
    let dp = m.datapath.as_ref().expect("datapath");
    let compiled = m.compiled();
    assert_eq!(dp.state().policy, compiled.policy);
    assert_eq!(dp.state().ipcache, compiled.identities.ipcache);
}

#[test]
fn written_entry_by_entry_the_same_change_shows_packets_a_mixed_state() {
    // Why large and identity changes are swapped: in place, the mixed state is visible.
    use plinth_policies::load::UpdateMode;
    let mut m = Model::new().expect("model");
    let (old, new, yb, p) = mixed_state_worlds(&mut m, 15_000);
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let (seen, report, before, after) = apply_while_probing(&mut m, &old, &new, yb, &p, UpdateMode::InPlace);
        assert!(!report.swapped);
        let bad = mixed(&seen, &before, &after, &p);
        if bad.iter().any(|b| b.starts_with("y/b ")) {
            return;
        }
        attempts.push(seen.len());
    }
    panic!("no mixed state seen in 5 in-place applies (probe rounds per apply: {attempts:?})");
}

/// Runs x/a's ingress program on `pkt` once; the verdict.
fn run_to_pod(m: &mut Model, ifindex: u32, pkt: &[u8]) -> u32 {
    run_prog(m, "plinth_to_pod", ifindex, pkt)
}

/// Runs program `prog` once on `pkt` seen on `ifindex`; the verdict.
fn run_prog(m: &mut Model, prog: &str, ifindex: u32, pkt: &[u8]) -> u32 {
    let dp = m.datapath.as_mut().expect("datapath");
    let p: &aya::programs::SchedClassifier = dp.ebpf().program(prog).expect("prog").try_into().expect("classifier");
    plinth_policies::testrun::run(p, ifindex, pkt, 1).expect("test run").0
}

/// Total over CPUs of `plinth_metrics[code]`.
fn metric(m: &mut Model, code: u32) -> u64 {
    let dp = m.datapath.as_mut().expect("datapath");
    let metrics: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(dp.ebpf().map("plinth_metrics").expect("metrics")).expect("percpu");
    metrics.get(&code, 0).expect("metric").iter().map(|c| c.packets).sum()
}

/// Replaces the model's datapath with one loaded with `cfg` (same pin directory).
fn reload(m: &mut Model, cfg: Config) {
    if let Some(dp) = m.datapath.take() {
        dp.teardown().expect("teardown");
    }
    m.datapath = Some(
        Datapath::load(&Config {
            pin_dir: m.pin_dir.clone(),
            ..cfg
        })
        .expect("load"),
    );
}

#[test]
fn expired_conntrack_entries_are_collected_by_the_agent_and_live_ones_kept() {
    use plinth_policies::abi::{CtKey, CtValue, DIR_INGRESS};
    use plinth_policies::load::ct_gc::{CT4, monotonic_ns};
    use plinth_policies::testrun::{self, TC_ACT_OK, TCP_SYN};
    netns::ensure_bpffs().expect("bpffs");
    let mut m = Model::new().expect("model");
    reload(
        &mut m,
        Config {
            ct_lifetime_tcp: Duration::from_secs(1),
            ct_lifetime_other: Duration::from_secs(3600),
            ..Config::default()
        },
    );
    m.world.policies.push(policy(
        "metadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    ));
    m.apply().expect("apply");
    let (xa, yb) = (pod(&m, "x", "a"), pod(&m, "y", "b"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let (src, dst) = (
        m.world.pods[yb].ipv4().expect("IPv4"),
        m.world.pods[xa].ipv4().expect("IPv4"),
    );
    // A TCP flow (lifetime 1 s) and a UDP flow (1 h).
    let tcp = testrun::ipv4_packet_flags(src, dst, 6, 43000, 80, TCP_SYN);
    let udp = testrun::ipv4_packet(src, dst, 17, 43001, 80);
    assert_eq!(run_to_pod(&mut m, ifindex, &tcp), TC_ACT_OK);
    assert_eq!(run_to_pod(&mut m, ifindex, &udp), TC_ACT_OK);
    let key = |proto: u8, sport: u16| CtKey {
        ep_id: m.compiled().endpoints[m.world.pods[xa].interface.as_deref().expect("iface")].ep_id,
        saddr: src.octets(),
        daddr: dst.octets(),
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto,
        dir: DIR_INGRESS,
        pad: 0,
    };
    let (tcp_key, udp_key) = (key(6, 43000), key(17, 43001));
    let present = |m: &mut Model, k: &CtKey| {
        let dp = m.datapath.as_mut().expect("datapath");
        let ct: aya::maps::HashMap<&MapData, CtKey, CtValue> =
            aya::maps::HashMap::try_from(dp.ebpf().map(CT4).expect("ct map")).expect("hash");
        ct.get(k, 0).is_ok()
    };
    assert!(present(&mut m, &tcp_key) && present(&mut m, &udp_key));

    // Both live: nothing collected.
    let dp = m.datapath.as_mut().expect("datapath");
    let r = dp.ct_gc().expect("gc").ct4;
    assert_eq!((r.scanned, r.deleted), (2, 0), "{r:?}");
    assert_eq!(r.capacity, 262_144);

    // The TCP entry expires after 1 s and goes; the UDP entry stays.
    std::thread::sleep(Duration::from_millis(1100));
    let r = m.datapath.as_mut().expect("datapath").ct_gc().expect("gc").ct4;
    assert_eq!((r.scanned, r.deleted), (2, 1), "{r:?}");
    assert!(!present(&mut m, &tcp_key), "expired TCP entry collected");
    assert!(present(&mut m, &udp_key), "live UDP entry kept");

    // An hour later by the collector's clock, the UDP entry goes too.
    let later = monotonic_ns() + 3_601_000_000_000;
    let r = m.datapath.as_mut().expect("datapath").ct_gc_at(later).expect("gc").ct4;
    assert_eq!((r.scanned, r.deleted, r.remaining()), (1, 1, 0), "{r:?}");
}

#[test]
fn a_full_conntrack_table_still_decides_new_flows_with_a_counter_and_an_untracked_event() {
    use plinth_policies::abi::{EVENT_UNTRACKED, VERDICT_ALLOWED};
    use plinth_policies::testrun::{self, TC_ACT_OK, TC_ACT_SHOT};
    const CT_FULL: u32 = 34;
    netns::ensure_bpffs().expect("bpffs");
    let mut m = Model::new().expect("model");
    reload(
        &mut m,
        Config {
            ct_max_entries: Some(4),
            ..Config::default()
        },
    );
    m.world.policies.push(policy(
        "metadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    ));
    m.apply().expect("apply");
    let (xa, yb, zc) = (pod(&m, "x", "a"), pod(&m, "y", "b"), pod(&m, "z", "c"));
    let ifindex =
        nix::net::if_::if_nametoindex(m.world.pods[xa].interface.as_deref().expect("iface")).expect("ifindex");
    let dp = m.datapath.as_mut().expect("datapath");
    let mut ring = RingBuf::try_from(dp.ebpf().take_map("plinth_events").expect("events map")).expect("ringbuf");
    while ring.next().is_some() {}

    // Ten allowed flows into a table of four: all pass (decided by the
    // rules), the ones that find no room are counted and flagged.
    let (src, dst) = (
        m.world.pods[yb].ipv4().expect("IPv4"),
        m.world.pods[xa].ipv4().expect("IPv4"),
    );
    for i in 0..10 {
        let pkt = testrun::ipv4_packet(src, dst, 6, 44000 + i, 80);
        assert_eq!(
            run_to_pod(&mut m, ifindex, &pkt),
            TC_ACT_OK,
            "allowed flow {i} with the table full"
        );
    }
    let full = metric(&mut m, CT_FULL);
    assert!(full >= 6, "ct-full counted for the flows without room: {full}");
    // Still enforced: a peer the policy does not allow is denied.
    let denied = testrun::ipv4_packet(m.world.pods[zc].ipv4().expect("IPv4"), dst, 6, 44100, 80);
    assert_eq!(
        run_to_pod(&mut m, ifindex, &denied),
        TC_ACT_SHOT,
        "denied with the table full"
    );

    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(FlowEvent::from_bytes(&item).expect("event"));
    }
    let allowed: Vec<&FlowEvent> = events
        .iter()
        .filter(|e| e.verdict == VERDICT_ALLOWED && (44000..44010).contains(&u16::from_be(e.sport)))
        .collect();
    assert_eq!(allowed.len(), 10, "one event per allowed flow: {events:?}");
    let untracked = allowed.iter().filter(|e| e.flags & EVENT_UNTRACKED != 0).count();
    assert_eq!(
        u64::try_from(untracked).expect("count"),
        full,
        "untracked events = ct-full count"
    );
    assert!(allowed.iter().all(|e| e.reason == 1), "reason allowed-by-policy");

    // Collected (as if hours later), the table takes new flows again.
    let later = plinth_policies::load::ct_gc::monotonic_ns() + 7 * 3600 * 1_000_000_000;
    let r = m.datapath.as_mut().expect("datapath").ct_gc_at(later).expect("gc").ct4;
    assert_eq!((r.scanned, r.deleted, r.capacity), (4, 4, 4), "{r:?}");
    let pkt = testrun::ipv4_packet(src, dst, 6, 44200, 80);
    assert_eq!(run_to_pod(&mut m, ifindex, &pkt), TC_ACT_OK);
    assert_eq!(metric(&mut m, CT_FULL), full, "room again after the collection");
}
