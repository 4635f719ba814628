//! The Kubernetes source: watches all Pods, Namespaces and NetworkPolicies and turns them into a world.
//!
//! All pods count for identities (peers live on other nodes too); pods
//! scheduled to this node with a direct /32 route, or a port on a bridge
//! where their MAC was learned, get an interface and an endpoint. Host-network pods and pods without an IP are left out.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use std::net::Ipv4Addr;
use tokio::sync::watch;

use crate::world::{NAMESPACE_NAME_LABEL, NamedPort, Namespace, Pod, World};

/// The host-side interface of each local pod's address (in order), or none.
pub type Interfaces<'a> = &'a dyn Fn(&[Ipv4Addr]) -> Vec<Option<String>>;

/// Builds the world from the caches; `interfaces` finds the host-side
/// interfaces of the pods on `node`, all at once ([`super::local_interfaces`]
/// on a node).
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
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
        else {
            continue;
        };
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
            ip,
            interface: None,
            ports,
        });
    }
    if !local.is_empty() {
        let ips: Vec<Ipv4Addr> = local.iter().map(|i| w.pods[*i].ip).collect();
        for (i, interface) in local.into_iter().zip(interfaces(&ips)) {
            w.pods[i].interface = interface;
        }
    }
    w.policies = policies.iter().map(|p| (**p).clone()).collect();
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
    interfaces: impl Fn(&[Ipv4Addr]) -> Vec<Option<String>>,
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
        ];
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
            cali1\t0B0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\n\
            cali2\t0C0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\n";
        let asked = std::cell::RefCell::new(Vec::new());
        let interfaces = |ips: &[Ipv4Addr]| {
            asked.borrow_mut().extend_from_slice(ips);
            ips.iter()
                .map(|ip| crate::agent::routes::interface_for(table, *ip))
                .collect()
        };
        let w = world_from(&pods, &ns, &[], "n1", &interfaces);
        assert_eq!(
            *asked.borrow(),
            [Ipv4Addr::new(198, 18, 0, 11)],
            "only local pods are looked up, all at once"
        );
        assert_eq!(w.namespaces[0].labels.len(), 1, "the implicit name label is not stored");
        let names: Vec<&str> = w.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
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
