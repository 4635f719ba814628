//! The Kubernetes source: watches all Pods, Namespaces and NetworkPolicies and turns them into a world.
//!
//! All pods count for identities (peers live on other nodes too), with every
//! address of `status.podIPs` (IPv4, IPv6 or both); pods scheduled to this
//! node with a direct /32 or /128 route, or a port on a bridge where their
//! MAC was learned, get an interface and an endpoint. Host-network pods and
//! pods without an IP are left out.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use std::net::IpAddr;
use tokio::sync::watch;

use crate::world::{NAMESPACE_NAME_LABEL, NamedPort, Namespace, Pod, World};

/// The addresses of a pod: `status.podIPs` (one per family), else
/// `status.podIP`; unparsable ones and a second one of a family are left out.
fn pod_ips(p: &K8sPod) -> Vec<IpAddr> {
    let status = p.status.as_ref();
    let listed = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|i| i.ip.as_str());
    let single = status.and_then(|s| s.pod_ip.as_deref());
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in listed.chain(single).filter_map(|ip| ip.parse::<IpAddr>().ok()) {
        if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            out.push(ip);
        }
    }
    out
}

/// The host-side interface of each local pod's address (in order), or none.
pub type Interfaces<'a> = &'a dyn Fn(&[IpAddr]) -> Vec<Option<String>>;

/// Builds the world from the caches; `interfaces` finds the host-side
/// interfaces of the addresses of the pods on `node`, all at once
/// ([`super::local_interfaces`] on a node); a pod's is that of the first of
/// its addresses that has one.
pub fn world_from(
    pods: &[std::sync::Arc<K8sPod>],
    namespaces: &[std::sync::Arc<K8sNamespace>],
    policies: &[std::sync::Arc<NetworkPolicy>],
    node: &str,
    interfaces: Interfaces<'_>,
) -> World {
    let mut w = World::default();
    let mut local = Vec::new();
    for ns in namespaces {
        let Some(name) = ns.metadata.name.clone() else { continue };
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        labels.remove(NAMESPACE_NAME_LABEL);
        w.namespaces.push(Namespace { name, labels });
    }
    for p in pods {
        let spec = p.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            continue;
        }
        let ips = pod_ips(p);
        if ips.is_empty() {
            continue;
        }
        let (Some(namespace), Some(name)) = (p.metadata.namespace.clone(), p.metadata.name.clone()) else {
            continue;
        };
        if w.namespace(&namespace).is_none() {
            continue;
        }
        if spec.and_then(|s| s.node_name.as_deref()) == Some(node) {
            local.push(w.pods.len());
        }
        let ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|cp| {
                Some(NamedPort {
                    name: cp.name.clone()?,
                    port: u16::try_from(cp.container_port).ok()?,
                    protocol: cp.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                })
            })
            .collect();
        w.pods.push(Pod {
            namespace,
            name,
            labels: p.metadata.labels.clone().unwrap_or_default(),
            ips,
            interface: None,
            ports,
        });
    }
    if !local.is_empty() {
        let ips: Vec<Vec<IpAddr>> = local.iter().map(|i| w.pods[*i].ips.clone()).collect();
        for (i, interface) in local.into_iter().zip(super::pod_interfaces(&ips, interfaces)) {
            w.pods[i].interface = interface;
        }
    }
    w.policies = policies.to_vec();
    w
}

/// Watches the API and sends a new world on every change; local pods'
/// interfaces come from this thread's routes, neighbor table and bridges
/// ([`super::local_interfaces`]).
pub async fn run(client: Client, node: String, tx: watch::Sender<Option<World>>) {
    run_with_interfaces(client, node, tx, super::local_interfaces).await;
}

/// Like [`run`], finding local pods' interfaces with `interfaces` on every
/// change (tests look in a test network's node namespace).
pub async fn run_with_interfaces(
    client: Client,
    node: String,
    tx: watch::Sender<Option<World>>,
    interfaces: impl Fn(&[IpAddr]) -> Vec<Option<String>>,
) {
    let (pods, pods_w) = reflector::store::<K8sPod>();
    let (nss, nss_w) = reflector::store::<K8sNamespace>();
    let (pols, pols_w) = reflector::store::<NetworkPolicy>();
    let cfg = watcher::Config::default;
    let pod_events = watcher(Api::<K8sPod>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(pods_w)
        .map(|e| e.map(|ev| (0, matches!(ev, watcher::Event::InitDone))))
        .boxed();
    let ns_events = watcher(Api::<K8sNamespace>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(nss_w)
        .map(|e| e.map(|ev| (1, matches!(ev, watcher::Event::InitDone))))
        .boxed();
    let pol_events = watcher(Api::<NetworkPolicy>::all(client), cfg())
        .default_backoff()
        .reflect(pols_w)
        .map(|e| e.map(|ev| (2, matches!(ev, watcher::Event::InitDone))))
        .boxed();
    let mut events = futures::stream::select(futures::stream::select(pod_events, ns_events), pol_events);
    let mut synced = [false; 3];
    while let Some(ev) = events.next().await {
        match ev {
            Err(e) => {
                tracing::warn!(error = %e, "watch error; retrying");
                continue;
            }
            Ok((kind, init_done)) => synced[kind] |= init_done,
        }
        // Never enforce a partial view: missing peers would deny legitimate
        // traffic, missing policies would leave pods open.
        if synced.iter().any(|s| !s) {
            continue;
        }
        let w = world_from(&pods.state(), &nss.state(), &pols.state(), &node, &interfaces);
        let _ = tx.send(Some(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::routes::RouteTables;
    use std::sync::Arc;

    fn obj<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
        Arc::new(serde_saphyr::from_str(yaml).expect("object yaml"))
    }

    #[test]
    fn local_pods_get_interfaces_and_host_network_pods_are_left_out() {
        let ns = vec![obj::<K8sNamespace>(
            "metadata: {name: x, labels: {kubernetes.io/metadata.name: x, team: a}}",
        )];
        let pods = vec![
            obj::<K8sPod>(
                "metadata: {name: a, namespace: x, labels: {app: a}}\nspec:\n  nodeName: n1\n  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]\nstatus: {podIP: 198.18.0.11}",
            ),
            obj::<K8sPod>(
                "metadata: {name: b, namespace: x}\nspec: {nodeName: n2, containers: [{name: c}]}\nstatus: {podIP: 198.18.0.12}",
            ),
            obj::<K8sPod>(
                "metadata: {name: h, namespace: x}\nspec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}\nstatus: {podIP: 198.18.0.13}",
            ),
            obj::<K8sPod>("metadata: {name: pending, namespace: x}\nspec: {nodeName: n1, containers: [{name: c}]}"),
            obj::<K8sPod>(
                "metadata: {name: d, namespace: x}\nspec: {nodeName: n1, containers: [{name: c}]}\nstatus: {podIP: 198.18.0.14, podIPs: [{ip: 198.18.0.14}, {ip: \"2001:2::14\"}]}",
            ),
            obj::<K8sPod>(
                "metadata: {name: e, namespace: x}\nspec: {nodeName: n1, containers: [{name: c}]}\nstatus: {podIP: \"2001:2::15\", podIPs: [{ip: \"2001:2::15\"}]}",
            ),
        ];
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
            cali1\t0B0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\n\
            cali2\t0C0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\n";
        let v6 = "20010002000000000000000000000015 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001 cali5\n";
        let routes = RouteTables {
            v4: table.to_owned(),
            v6: v6.to_owned(),
        };
        let asked = std::cell::RefCell::new(Vec::new());
        let interfaces = |ips: &[IpAddr]| {
            asked.borrow_mut().extend_from_slice(ips);
            ips.iter().map(|ip| routes.interface_for(*ip)).collect()
        };
        let w = world_from(&pods, &ns, &[], "n1", &interfaces);
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(
            *asked.borrow(),
            [ip("198.18.0.11"), ip("198.18.0.14"), ip("2001:2::14"), ip("2001:2::15")],
            "only local pods are looked up, every address, all at once"
        );
        assert_eq!(w.namespaces[0].labels.len(), 1, "the implicit name label is not stored");
        let names: Vec<&str> = w.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d", "e"]);
        assert_eq!(
            w.pods[2].ips,
            [ip("198.18.0.14"), ip("2001:2::14")],
            "dual-stack: status.podIPs"
        );
        assert_eq!(w.pods[2].interface, None, "no route to either address");
        assert_eq!(w.pods[3].ips, [ip("2001:2::15")]);
        assert_eq!(w.pods[3].interface.as_deref(), Some("cali5"), "the /128 route");
        assert_eq!(w.pods[0].interface.as_deref(), Some("cali1"));
        assert_eq!(w.pods[1].interface, None, "pod on another node");
        assert_eq!(
            w.pods[0].ports,
            vec![NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );
    }
}
