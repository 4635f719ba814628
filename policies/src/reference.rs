//! Reference evaluator: NetworkPolicy semantics evaluated directly, per connection.
//!
//! Used only to compute expected verdicts in tests and conformance runs; it
//! shares no code with the compiler (its own selector, CIDR and port logic),
//! so the compiler is never checked against itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::world::{Pod, World};

/// A connection attempt: from an address to a pod address, protocol and port.
/// Both addresses are of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Client address (a pod of the world or any address).
    pub src: IpAddr,
    /// Server address.
    pub dst: IpAddr,
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

/// Whether `ip` is in `cidr` (`addr/len`, or a bare address): the first
/// `len` bits, compared one by one; an address of the other family never is.
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (a, l) = match cidr.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (cidr, None),
    };
    let Ok(net) = a.parse::<IpAddr>() else {
        return false;
    };
    let bytes = |x: IpAddr| match x {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let (net, ip) = (bytes(net), bytes(ip));
    if net.len() != ip.len() {
        return false;
    }
    let len = match l.map(str::parse::<usize>) {
        None => net.len() * 8,
        Some(Ok(l)) if l <= net.len() * 8 => l,
        Some(_) => return false,
    };
    (0..len).all(|i| {
        let bit = |b: &[u8]| (b[i / 8] >> (7 - i % 8)) & 1;
        bit(&net) == bit(&ip)
    })
}

fn ns_labels(world: &World, ns: &str) -> BTreeMap<String, String> {
    world
        .namespace(ns)
        .map(crate::world::Namespace::effective_labels)
        .unwrap_or_default()
}

fn peer_matches(world: &World, peer: &NetworkPolicyPeer, policy_ns: &str, ip: IpAddr, pod: Option<&Pod>) -> bool {
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
    let src_pod = world.pods.iter().find(|p| p.ips.contains(&c.src));
    let dst_pod = world.pods.iter().find(|p| p.ips.contains(&c.dst));
    let egress_ok = src_pod.is_none_or(|sp| {
        let pols: Vec<&NetworkPolicy> = world
            .policies
            .iter()
            .map(|p| &**p)
            .filter(|np| applies(np, sp, true))
            .collect();
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
        let pols: Vec<&NetworkPolicy> = world
            .policies
            .iter()
            .map(|p| &**p)
            .filter(|np| applies(np, dp, false))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::in_cidr;

    #[test]
    fn cidrs_of_both_families() {
        let ip = |s: &str| s.parse().expect("address");
        assert!(in_cidr(ip("198.18.0.10"), "198.18.0.0/24"));
        assert!(!in_cidr(ip("198.18.1.10"), "198.18.0.0/24"));
        assert!(in_cidr(ip("198.18.1.10"), "0.0.0.0/0"));
        assert!(in_cidr(ip("2001:2::10"), "2001:2::/120"));
        assert!(in_cidr(ip("2001:2::10"), "2001:2::10"));
        assert!(!in_cidr(ip("2001:2::1:10"), "2001:2::/120"));
        assert!(in_cidr(ip("2001:2::1:10"), "::/0"));
        assert!(!in_cidr(ip("2001:2::10"), "0.0.0.0/0"), "families never match");
        assert!(!in_cidr(ip("198.18.0.10"), "::/0"), "families never match");
        assert!(!in_cidr(ip("2001:2::10"), "2001:2::/129"));
    }
}
