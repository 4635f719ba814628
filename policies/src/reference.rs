//! Reference evaluator: NetworkPolicy semantics evaluated directly, per connection.
//!
//! Used only to compute expected verdicts in tests and conformance runs; it
//! shares no code with the compiler (its own selector, CIDR and port logic),
//! so the compiler is never checked against itself.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::world::{Pod, World};

/// A connection attempt: from an address to a pod address, protocol and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Client address (a pod of the world or any address).
    pub src: Ipv4Addr,
    /// Server address.
    pub dst: Ipv4Addr,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Destination port.
    pub port: u16,
}

fn labels_match(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = sel.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let vals = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let Some((a, l)) = cidr.split_once('/') else {
        return cidr.parse::<Ipv4Addr>().is_ok_and(|c| c == ip);
    };
    let (Ok(a), Ok(l)) = (a.parse::<Ipv4Addr>(), l.parse::<u32>()) else {
        return false;
    };
    if l > 32 {
        return false;
    }
    let shift = 32 - l;
    (u64::from(u32::from(ip)) >> shift) == (u64::from(u32::from(a)) >> shift)
}

fn ns_labels(world: &World, ns: &str) -> BTreeMap<String, String> {
    world
        .namespace(ns)
        .map(crate::world::Namespace::effective_labels)
        .unwrap_or_default()
}

fn peer_matches(world: &World, peer: &NetworkPolicyPeer, policy_ns: &str, ip: Ipv4Addr, pod: Option<&Pod>) -> bool {
    if let Some(b) = &peer.ip_block {
        return in_cidr(ip, &b.cidr) && !b.except.iter().flatten().any(|e| in_cidr(ip, e));
    }
    let Some(pod) = pod else { return false };
    let ns_ok = match &peer.namespace_selector {
        Some(sel) => labels_match(sel, &ns_labels(world, &pod.namespace)),
        None => pod.namespace == policy_ns,
    };
    ns_ok && peer.pod_selector.as_ref().is_none_or(|s| labels_match(s, &pod.labels))
}

fn port_matches(p: &NetworkPolicyPort, protocol: &str, port: u16, dst: Option<&Pod>) -> bool {
    if p.protocol.as_deref().unwrap_or("TCP") != protocol {
        return false;
    }
    match &p.port {
        None => true,
        Some(IntOrString::Int(n)) => match p.end_port {
            Some(end) if end >= *n => i32::from(port) >= *n && i32::from(port) <= end,
            _ => i32::from(port) == *n,
        },
        Some(IntOrString::String(name)) => dst.is_some_and(|d| {
            d.ports
                .iter()
                .any(|cp| &cp.name == name && cp.protocol == protocol && cp.port == port)
        }),
    }
}

fn ports_match(ports: Option<&Vec<NetworkPolicyPort>>, protocol: &str, port: u16, dst: Option<&Pod>) -> bool {
    match ports {
        None => true,
        Some(v) if v.is_empty() => true,
        Some(v) => v.iter().any(|p| port_matches(p, protocol, port, dst)),
    }
}

fn applies(np: &NetworkPolicy, pod: &Pod, egress: bool) -> bool {
    if np.metadata.namespace.as_deref().unwrap_or("default") != pod.namespace {
        return false;
    }
    let Some(spec) = &np.spec else { return false };
    if !spec.pod_selector.as_ref().is_none_or(|s| labels_match(s, &pod.labels)) {
        return false;
    }
    let types: Vec<String> = spec.policy_types.clone().unwrap_or_else(|| {
        let mut t = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            t.push("Egress".to_owned());
        }
        t
    });
    types.iter().any(|t| t == if egress { "Egress" } else { "Ingress" })
}

/// Whether the policies of `world` allow the connection: the client's egress
/// and the server's ingress must both allow it.
pub fn allowed(world: &World, c: &Connection) -> bool {
    let src_pod = world.pods.iter().find(|p| p.ip == c.src);
    let dst_pod = world.pods.iter().find(|p| p.ip == c.dst);
    let egress_ok = src_pod.is_none_or(|sp| {
        let pols: Vec<&NetworkPolicy> = world.policies.iter().filter(|np| applies(np, sp, true)).collect();
        pols.is_empty()
            || pols.iter().any(|np| {
                np.spec.iter().flat_map(|s| s.egress.iter().flatten()).any(|rule| {
                    let peer_ok = match &rule.to {
                        None => true,
                        Some(v) if v.is_empty() => true,
                        Some(v) => v
                            .iter()
                            .any(|peer| peer_matches(world, peer, &sp.namespace, c.dst, dst_pod)),
                    };
                    peer_ok && ports_match(rule.ports.as_ref(), &c.protocol, c.port, dst_pod)
                })
            })
    });
    let ingress_ok = dst_pod.is_none_or(|dp| {
        let pols: Vec<&NetworkPolicy> = world.policies.iter().filter(|np| applies(np, dp, false)).collect();
        pols.is_empty()
            || pols.iter().any(|np| {
                np.spec.iter().flat_map(|s| s.ingress.iter().flatten()).any(|rule| {
                    let peer_ok = match &rule.from {
                        None => true,
                        Some(v) if v.is_empty() => true,
                        Some(v) => v
                            .iter()
                            .any(|peer| peer_matches(world, peer, &dp.namespace, c.src, src_pod)),
                    };
                    peer_ok && ports_match(rule.ports.as_ref(), &c.protocol, c.port, Some(dp))
                })
            })
    });
    egress_ok && ingress_ok
}
