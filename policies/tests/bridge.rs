//! Pods on a Linux bridge (bridge-based CNIs): no /32 route per pod; the agent
//! finds each host-side veth from the neighbor table and the bridge's
//! forwarding database, and enforces policy on pod-to-pod traffic switched by
//! the bridge.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use plinth_policies::agent::{resolve_local_interfaces, routes};
use plinth_policies::compile::compile;
use plinth_policies::load::{Config, Datapath};
use plinth_policies::netns::{self, PodNet, TestNet};
use plinth_policies::world::{Namespace, Pod, World};

#[test]
fn pods_on_a_bridge_get_their_ports_as_interfaces_and_policy_is_enforced_between_them() {
    netns::ensure_bpffs().expect("bpffs");
    let mut net = TestNet::new_bridged(3).expect("bridged test network");
    net.serve(&[80], |i| format!("pod{i}")).expect("servers");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", net.node));
    let _pins = netns::PinDirGuard(pin_dir.clone());

    // What kubelet's probes do: the node talks to each pod once, which fills
    // its neighbor table (and the bridge learns each pod's MAC on its port).
    for p in &net.pods {
        let dst = SocketAddr::from((p.ip, 80));
        netns::in_netns(&net.node, move || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .expect("enter node")
        .expect("node reaches the pod");
    }

    let world = only_p1_into_p0(&net, PodNet::ips);

    let ips: Vec<_> = net.pods.iter().map(|p| p.ip).collect();
    netns::in_netns(&net.node, move || {
        let table = std::fs::read_to_string("/proc/thread-self/net/route").expect("routes");
        for ip in &ips {
            assert_eq!(routes::interface_for(&table, *ip), None, "no /32 route on a bridge");
        }
    })
    .expect("enter node");
    let dp = resolve_and_load(&net, world, pin_dir);

    // Switched by the bridge, still through each pod's veth programs.
    assert!(net.connect(1, 0, 80).is_ok(), "p1 -> p0 allowed by the policy");
    assert!(net.connect(2, 0, 80).is_err(), "p2 -> p0 denied");
    assert!(net.connect(0, 2, 80).is_ok(), "p0 -> p2: p2 is not selected");
    assert!(net.connect(2, 1, 80).is_ok(), "p2 -> p1: p1 is not selected");
    dp.teardown().expect("teardown");
}

#[test]
fn ipv6_pods_on_a_bridge_are_found_from_the_ipv6_neighbor_table() {
    netns::ensure_bpffs().expect("bpffs");
    let mut net = TestNet::new_bridged_dual(3).expect("bridged test network");
    net.serve(&[80], |i| format!("pod{i}")).expect("servers");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", net.node));
    let _pins = netns::PinDirGuard(pin_dir.clone());

    // The node talks to each pod over IPv6 only: neighbor entries of that family.
    for p in &net.pods {
        let dst = SocketAddr::from((p.ip6.expect("IPv6"), 80));
        netns::in_netns(&net.node, move || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .expect("enter node")
        .expect("node reaches the pod over IPv6");
    }

    // Pods known by their IPv6 address only: the ARP table cannot name them.
    let world = only_p1_into_p0(&net, |p| vec![std::net::IpAddr::V6(p.ip6.expect("IPv6"))]);
    let dp = resolve_and_load(&net, world, pin_dir);

    assert!(net.connect6(1, 0, 80).is_ok(), "p1 -> p0 allowed by the policy");
    assert!(net.connect6(2, 0, 80).is_err(), "p2 -> p0 denied");
    assert!(net.connect6(0, 2, 80).is_ok(), "p0 -> p2: p2 is not selected");
    dp.teardown().expect("teardown");
}

/// Namespace x with a pod p<i> (label pod=p<i>, addresses from `ips`) per test pod, and a policy letting only p1
/// into p0.
fn only_p1_into_p0(net: &TestNet, ips: impl Fn(&PodNet) -> Vec<std::net::IpAddr>) -> World {
    let mut world = World {
        namespaces: vec![Namespace {
            name: "x".into(),
            labels: BTreeMap::new(),
        }],
        ..World::default()
    };
    for (i, p) in net.pods.iter().enumerate() {
        world.pods.push(Pod {
            namespace: "x".into(),
            name: format!("p{i}"),
            labels: [("pod".to_owned(), format!("p{i}"))].into(),
            ips: ips(p),
            interface: None,
            ports: Vec::new(),
        });
    }
    world.policies.push(std::sync::Arc::new(
        serde_saphyr::from_str(
            "metadata: {name: only-p1, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: p0}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: p1}}}]}]",
        )
        .expect("policy"),
    ));
    world
}

/// Resolves the pods' interfaces in the node namespace as the agent does, checks each is the pod's bridge port,
/// and loads the compiled world there.
fn resolve_and_load(net: &TestNet, world: World, pin_dir: PathBuf) -> Datapath {
    let (world, dp) = netns::in_netns(&net.node, move || {
        let mut world = world;
        resolve_local_interfaces(&mut world);
        let mut dp = Datapath::load(&Config {
            pin_dir,
            ..Config::default()
        })
        .expect("load");
        let report = dp.apply(&compile(&world, None)).expect("apply");
        assert!(report.missing_interfaces.is_empty(), "{report:?}");
        (world, dp)
    })
    .expect("enter node");
    let found: Vec<Option<&str>> = world.pods.iter().map(|p| p.interface.as_deref()).collect();
    let want: Vec<Option<&str>> = net.pods.iter().map(|p| Some(p.host_if.as_str())).collect();
    assert_eq!(found, want, "each pod's bridge port");
    dp
}
