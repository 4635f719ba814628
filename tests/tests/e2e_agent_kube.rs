//! The node agent's Kubernetes source against the test control plane: Pods, Namespaces and NetworkPolicies
//! watched with the agent's RBAC (the chart's ClusterRole rules), local pods' interfaces found in a test
//! network's real routing table, the world it builds compiled into the endpoint and rule entries the datapath
//! needs, and followed through pod relabels, namespace relabels and policy deletion.
//!
//! Needs root (the test network) and clang (`plinth-policies` with `bpf`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use plinth_policies::abi::{EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS};
use plinth_policies::agent::{kube_source, local_interfaces};
use plinth_policies::compile::compile;
use plinth_policies::net::Prefix;
use plinth_policies::netns::{self, TestNet};
use plinth_policies::world::World;
use plinth_tests::control_plane::{ControlPlane, eventually, unique_name};
use serde_json::json;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);
const NODE: &str = "node-1";

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object")
}

async fn create_pod(api: &Api<Pod>, name: &str, app: &str, node: &str, ips: &[IpAddr]) {
    let pod: Pod = obj(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "registry.invalid/app:1",
                            "ports": [{"name": "http", "containerPort": 8080}]}]
        }
    }));
    api.create(&PostParams::default(), &pod).await.expect("create pod");
    // No kubelet here: the pod's IPs are set as the kubelet would.
    let pod_ips: Vec<serde_json::Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    let first = ips.first().map(ToString::to_string).unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": first, "podIPs": pod_ips}})),
    )
    .await
    .expect("set pod IP");
}

/// The part of the world in the test's namespaces.
fn ours(w: &World, namespaces: &[&str]) -> World {
    let mut o = w.clone();
    o.namespaces.retain(|n| namespaces.contains(&n.name.as_str()));
    o.pods.retain(|p| namespaces.contains(&p.namespace.as_str()));
    o.policies
        .retain(|p| namespaces.contains(&p.metadata.namespace.as_deref().unwrap_or_default()));
    o
}

/// Waits until the latest world, restricted to `namespaces`, passes `check`.
async fn world_where(
    rx: &watch::Receiver<Option<World>>,
    namespaces: &[&str],
    what: &str,
    check: impl Fn(&World) -> bool,
) {
    eventually(what, WAIT, || {
        let w = rx.borrow().clone();
        let ok = w.is_some_and(|w| check(&ours(&w, namespaces)));
        async move { ok }
    })
    .await;
}

/// Whether the compiled world lets the host prefix of `peer` into the endpoint on `ifname` on TCP `port`.
fn allows(w: &World, ifname: &str, peer: IpAddr, port: u16) -> bool {
    let c = compile(w, None);
    let Some(ep) = c.endpoints.get(ifname) else {
        return false;
    };
    let Some(id) = c.identities.ipcache.get(&Prefix::host(peer)) else {
        return false;
    };
    c.policy
        .keys()
        .any(|k| k.ep_id == ep.ep_id && k.peer_id == *id && k.proto == 6 && u16::from_be(k.dport) == port)
}

/// The agent's identity, with the chart's ClusterRole rules and nothing else: a ServiceAccount `plinth-agent` in
/// `namespace`, bound cluster-wide.
struct AgentIdentity {
    roles: Api<ClusterRole>,
    bindings: Api<ClusterRoleBinding>,
    name: String,
}

impl AgentIdentity {
    async fn create(cp: &ControlPlane, admin: &kube::Client, namespace: &str) -> (kube::Client, AgentIdentity) {
        let name = unique_name("plinth-agent");
        let roles: Api<ClusterRole> = Api::all(admin.clone());
        let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
        roles
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": name},
                    "rules": [
                        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]}
                    ]
                })),
            )
            .await
            .expect("create ClusterRole");
        bindings
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": "plinth-agent", "namespace": namespace}]
                })),
            )
            .await
            .expect("create ClusterRoleBinding");
        let client = cp.client_for_service_account(namespace, "plinth-agent").await;
        (client, AgentIdentity { roles, bindings, name })
    }

    async fn delete(self) {
        let _ = self.bindings.delete(&self.name, &DeleteParams::default()).await;
        let _ = self.roles.delete(&self.name, &DeleteParams::default()).await;
    }
}

/// The agent's interface lookup ([`plinth_policies::agent::local_interfaces`]) run in the node namespace `node`
/// of a test network: its routes, neighbor table and bridges.
fn in_node(node: String) -> impl Fn(&[IpAddr]) -> Vec<Option<String>> {
    move |ips| {
        let ips = ips.to_vec();
        netns::in_netns(&node, move || local_interfaces(&ips)).expect("enter the node namespace")
    }
}

#[tokio::test]
async fn kube_source_follows_pods_namespaces_and_policies_with_the_agent_rbac() {
    netns::ensure_bpffs().expect("bpffs");
    let cp = ControlPlane::shared().await;
    let admin = cp.client().await;
    let x = cp.namespace("agent-x").await;
    let y = cp.namespace("agent-y").await;
    let (xn, yn) = (x.name().to_owned(), y.name().to_owned());

    let (agent_client, agent_rbac) = AgentIdentity::create(cp, &admin, &xn).await;

    // Two local pods with /32 routes in the node namespace of a test network, one pod on another node.
    let net = TestNet::new(2).expect("test network");
    // a is dual-stack, b IPv6 only (found by its /128 route), c IPv4 on another node.
    let ip_a = net.pods[0].ips();
    let ip_b = vec![IpAddr::V6(net.pods[1].ip6.expect("IPv6 test network"))];
    let ip_c = vec![IpAddr::V4(Ipv4Addr::new(198, 19, 7, 7))];
    let xpods: Api<Pod> = Api::namespaced(admin.clone(), &xn);
    let ypods: Api<Pod> = Api::namespaced(admin.clone(), &yn);
    create_pod(&xpods, "a", "a", NODE, &ip_a).await;
    create_pod(&xpods, "b", "b", NODE, &ip_b).await;
    create_pod(&ypods, "c", "c", "node-2", &ip_c).await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(
            &yn,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}})),
        )
        .await
        .expect("label namespace y");
    // x/a accepts, on its named port, pods labelled app=c from namespaces labelled team=blue.
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &xn);
    policies
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "allow-c"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [{
                        "from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}},
                                  "podSelector": {"matchLabels": {"app": "c"}}}],
                        "ports": [{"port": "http"}]
                    }]
                }
            })),
        )
        .await
        .expect("create NetworkPolicy");

    let (tx, rx) = watch::channel(None);
    let node_ns = net.node.clone();
    let source = tokio::spawn(kube_source::run_with_interfaces(
        agent_client,
        NODE.to_owned(),
        tx,
        in_node(node_ns),
    ));

    let scope = [xn.as_str(), yn.as_str()];
    world_where(&rx, &scope, "the first world: 3 pods, 2 namespaces, 1 policy", |w| {
        w.pods.len() == 3 && w.namespaces.len() == 2 && w.policies.len() == 1
    })
    .await;
    let w = ours(&rx.borrow().clone().expect("world"), &scope);
    let pod = |name: &str| w.pods.iter().find(|p| p.name == name).expect("pod in world").clone();
    assert_eq!(
        (pod("a").ips, pod("a").interface.as_deref()),
        (ip_a.clone(), Some("plh0"))
    );
    assert_eq!(
        (pod("b").ips, pod("b").interface.as_deref()),
        (ip_b.clone(), Some("plh1"))
    );
    assert_eq!(
        (pod("c").ips, pod("c").interface),
        (ip_c.clone(), None),
        "a pod on another node has no endpoint"
    );
    assert_eq!(
        pod("a").ports.first().map(|p| (p.name.as_str(), p.port)),
        Some(("http", 8080))
    );
    let ny = w.namespaces.iter().find(|n| n.name == yn).expect("namespace y");
    assert_eq!(ny.labels.get("team").map(String::as_str), Some("blue"));

    // Compiled: x/a enforces ingress, x/b does not; y/c reaches x/a on 8080 (the named port), x/b does not.
    let c = compile(&w, None);
    assert_eq!(
        c.endpoints["plh0"].flags & (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS),
        EP_ENFORCE_INGRESS
    );
    assert_eq!(c.endpoints["plh1"].flags & (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS), 0);
    assert!(allows(&w, "plh0", ip_c[0], 8080), "y/c -> x/a:8080 allowed");
    assert!(!allows(&w, "plh0", ip_b[0], 8080), "x/b -> x/a:8080 denied");

    // The namespace loses its label: y/c no longer matches.
    namespaces
        .patch(
            &yn,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .expect("unlabel namespace y");
    world_where(&rx, &scope, "namespace y without team=blue", |w| {
        !allows(w, "plh0", ip_c[0], 8080)
    })
    .await;

    // Back, and the pod is relabelled instead.
    namespaces
        .patch(
            &yn,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}})),
        )
        .await
        .expect("label namespace y again");
    world_where(&rx, &scope, "y/c allowed again", |w| allows(w, "plh0", ip_c[0], 8080)).await;
    ypods
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "d"}}})),
        )
        .await
        .expect("relabel y/c");
    world_where(&rx, &scope, "y/c relabelled app=d", |w| {
        w.pods
            .iter()
            .any(|p| p.name == "c" && p.labels.get("app").map(String::as_str) == Some("d"))
            && !allows(w, "plh0", ip_c[0], 8080)
    })
    .await;

    // The policy goes: x/a is no longer enforced.
    policies
        .delete("allow-c", &DeleteParams::default())
        .await
        .expect("delete NetworkPolicy");
    world_where(&rx, &scope, "no policy in x", |w| {
        w.policies.is_empty()
            && compile(w, None)
                .endpoints
                .get("plh0")
                .is_some_and(|e| e.flags & EP_ENFORCE_INGRESS == 0)
    })
    .await;

    // A pod that goes away leaves the world.
    xpods
        .delete("b", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete x/b");
    world_where(&rx, &scope, "x/b gone", |w| !w.pods.iter().any(|p| p.name == "b")).await;

    source.abort();
    agent_rbac.delete().await;
}

/// Pods behind a Linux bridge (bridge CNIs: no /32 route per pod) found from the Kubernetes source through the
/// node's neighbor table and the bridge's forwarding database, and the policy of the world it builds enforced on
/// their bridge ports with real packets.
#[tokio::test]
async fn kube_source_finds_pods_on_a_bridge_and_their_policy_is_enforced() {
    netns::ensure_bpffs().expect("bpffs");
    let cp = ControlPlane::shared().await;
    let admin = cp.client().await;
    let x = cp.namespace("agent-br").await;
    let xn = x.name().to_owned();
    let (agent_client, agent_rbac) = AgentIdentity::create(cp, &admin, &xn).await;

    let mut net = TestNet::new_bridged(3).expect("bridged test network");
    net.serve(&[80], |i| format!("pod{i}")).expect("servers");
    // What kubelet's probes do: the node talks to each pod once, which fills its neighbor table.
    for p in &net.pods {
        let dst = std::net::SocketAddr::from((p.ip, 80));
        netns::in_netns(&net.node, move || {
            std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .expect("enter node")
        .expect("the node reaches the pod");
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &xn);
    for (i, p) in net.pods.iter().enumerate() {
        create_pod(&pods, &format!("p{i}"), &format!("p{i}"), NODE, &[IpAddr::V4(p.ip)]).await;
    }
    // p0 accepts only p1.
    Api::<NetworkPolicy>::namespaced(admin.clone(), &xn)
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "only-p1"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "p0"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "p1"}}}]}]
                }
            })),
        )
        .await
        .expect("create NetworkPolicy");

    let (tx, rx) = watch::channel(None);
    let source = tokio::spawn(kube_source::run_with_interfaces(
        agent_client,
        NODE.to_owned(),
        tx,
        in_node(net.node.clone()),
    ));
    let scope = [xn.as_str()];
    world_where(&rx, &scope, "3 pods on the bridge with their ports and 1 policy", |w| {
        w.pods.len() == 3 && w.pods.iter().all(|p| p.interface.is_some()) && w.policies.len() == 1
    })
    .await;
    source.abort();
    let world = ours(&rx.borrow().clone().expect("world"), &scope);
    for (i, p) in net.pods.iter().enumerate() {
        let found = world.pods.iter().find(|w| w.name == format!("p{i}")).expect("pod");
        assert_eq!(
            found.interface.as_deref(),
            Some(p.host_if.as_str()),
            "p{i}: its bridge port"
        );
        assert_eq!(
            netns::in_netns(&net.node, {
                let ip = p.ip;
                move || {
                    let table = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
                    plinth_policies::agent::routes::interface_for(&table, ip)
                }
            })
            .expect("enter node"),
            None,
            "no /32 route: found through the bridge"
        );
    }

    // The world as compiled and loaded by the agent on that node, probed with real connections.
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", net.node));
    let _pins = netns::PinDirGuard(pin_dir.clone());
    let compiled = compile(&world, None);
    let dp = netns::in_netns(&net.node, move || {
        let mut dp = plinth_policies::load::Datapath::load(&plinth_policies::load::Config {
            pin_dir,
            ..plinth_policies::load::Config::default()
        })
        .expect("load the datapath");
        let report = dp.apply(&compiled).expect("apply");
        assert!(report.missing_interfaces.is_empty(), "{report:?}");
        dp
    })
    .expect("enter node");
    assert!(net.connect(1, 0, 80).is_ok(), "p1 -> p0 allowed by the policy");
    assert!(net.connect(2, 0, 80).is_err(), "p2 -> p0 denied");
    assert!(net.connect(0, 2, 80).is_ok(), "p0 -> p2: p2 is not selected");
    dp.teardown().expect("teardown");
    agent_rbac.delete().await;
}
