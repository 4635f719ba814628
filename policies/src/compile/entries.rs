//! Policy map entries: for each local pod a policy selects, the allowed (peer identity, direction, protocol, port).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::identity::{Identities, selector_matches};
use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, EP_RANGES_EGRESS, EP_RANGES_INGRESS, Endpoint,
    ID_ANY, PolicyKey, PolicyValue,
};
use crate::net::port_blocks;
use crate::world::{Pod, World};

/// Key of a `plinth_polrange` entry: prefix length (bits after it) and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeKey {
    /// 80 fixed bits (endpoint, peer, direction, protocol) plus port bits.
    pub prefixlen: u32,
    /// Endpoint, peer, direction, protocol and the block's first port (network order).
    pub data: PolicyKey,
}

/// IP protocol number of a NetworkPolicy protocol name.
pub fn proto_number(name: &str) -> Option<u8> {
    match name {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// Whether a policy applies to ingress and to egress.
pub fn policy_types(np: &NetworkPolicy) -> (bool, bool) {
    let spec = np.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(t) => (t.iter().any(|t| t == "Ingress"), t.iter().any(|t| t == "Egress")),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref()).is_some_and(|e| !e.is_empty()),
        ),
    }
}

/// Entries under construction.
#[derive(Debug, Default)]
pub(super) struct Builder {
    pub(super) policy: BTreeMap<PolicyKey, PolicyValue>,
    pub(super) ranges: BTreeMap<RangeKey, PolicyValue>,
    pub(super) endpoints: BTreeMap<String, Endpoint>,
    pub(super) warnings: Vec<String>,
}

fn keep_first<K: Ord>(map: &mut BTreeMap<K, PolicyValue>, k: K, v: PolicyValue) {
    map.entry(k)
        .and_modify(|old| {
            if v < *old {
                *old = v;
            }
        })
        .or_insert(v);
}

/// A port of a rule after protocol resolution.
enum PortSpec<'a> {
    /// No ports: every protocol and port.
    All,
    /// Every port of the protocol.
    Proto(u8),
    /// One port.
    Exact(u8, u16),
    /// `port..=endPort`.
    Range(u8, u16, u16),
    /// A named port, resolved against the destination pod.
    Named(u8, &'a str),
}

fn port_specs<'a>(ports: Option<&'a Vec<NetworkPolicyPort>>, warn: &mut Vec<String>, ctx: &str) -> Vec<PortSpec<'a>> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![PortSpec::All];
    };
    let mut out = Vec::new();
    for p in ports {
        let proto_name = p.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = proto_number(proto_name) else {
            warn.push(format!("{ctx}: unknown protocol {proto_name:?}, port ignored"));
            continue;
        };
        out.push(match &p.port {
            None => PortSpec::Proto(proto),
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(n) => match p.end_port.map(u16::try_from) {
                    Some(Ok(e)) if e > n => PortSpec::Range(proto, n, e),
                    _ => PortSpec::Exact(proto, n),
                },
                Err(_) => {
                    warn.push(format!("{ctx}: port {n} out of range, port ignored"));
                    continue;
                }
            },
            Some(IntOrString::String(name)) => PortSpec::Named(proto, name.as_str()),
        });
    }
    out
}

/// Numbers a named port has on the given pods.
fn resolve_named<'p>(pods: impl Iterator<Item = &'p Pod>, name: &str, proto: u8) -> BTreeSet<u16> {
    pods.flat_map(|p| p.ports.iter())
        .filter(|np| np.name == name && proto_number(&np.protocol) == Some(proto))
        .map(|np| np.port)
        .collect()
}

impl Builder {
    /// Adds the entries of one policy.
    pub(super) fn add_policy(
        &mut self,
        world: &World,
        ids: &Identities,
        np: &NetworkPolicy,
        policy_id: u32,
        ep_ids: &BTreeMap<(String, String), u32>,
    ) {
        let ns = np.metadata.namespace.as_deref().unwrap_or("default");
        let name = np.metadata.name.as_deref().unwrap_or_default();
        let ctx = format!("NetworkPolicy {ns}/{name}");
        let Some(spec) = &np.spec else { return };
        let (ingress, egress) = policy_types(np);
        let selector = spec.pod_selector.clone().unwrap_or_default();
        for pod in world.pods.iter().filter(|p| p.namespace == ns) {
            let Some(ifname) = &pod.interface else { continue };
            let Some(ep_id) = ep_ids.get(&(pod.namespace.clone(), pod.name.clone())) else {
                continue;
            };
            match selector_matches(&selector, &pod.labels) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    // A policy we cannot read still isolates every pod of its
                    // namespace: fail closed.
                    self.warnings.push(format!("{ctx}: podSelector: {e}"));
                }
            }
            let mut flags = 0;
            if ingress {
                flags |= EP_ENFORCE_INGRESS;
                for (i, rule) in spec.ingress.iter().flatten().enumerate() {
                    let value = PolicyValue {
                        policy_id,
                        rule: i as u16,
                        flags: 0,
                    };
                    flags |= self.add_rule(
                        world,
                        ids,
                        ns,
                        *ep_id,
                        pod,
                        DIR_INGRESS,
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                        value,
                        &format!("{ctx} ingress[{i}]"),
                    );
                }
            }
            if egress {
                flags |= EP_ENFORCE_EGRESS;
                for (i, rule) in spec.egress.iter().flatten().enumerate() {
                    let value = PolicyValue {
                        policy_id,
                        rule: i as u16,
                        flags: 0,
                    };
                    flags |= self.add_rule(
                        world,
                        ids,
                        ns,
                        *ep_id,
                        pod,
                        DIR_EGRESS,
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                        value,
                        &format!("{ctx} egress[{i}]"),
                    );
                }
            }
            let ep = self.endpoints.entry(ifname.clone()).or_insert(Endpoint {
                ep_id: *ep_id,
                flags: 0,
            });
            ep.flags |= flags;
        }
    }

    /// Adds one rule's entries; returns endpoint flags it needs (ranges).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename the arguments"
    )]
    fn add_rule(
        &mut self,
        world: &World,
        ids: &Identities,
        ns: &str,
        ep_id: u32,
        pod: &Pod,
        dir: u8,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        value: PolicyValue,
        ctx: &str,
    ) -> u32 {
        let mut flags = 0;
        // None: any peer.
        let peer_ids: Option<BTreeSet<u32>> = match peers.filter(|p| !p.is_empty()) {
            None => None,
            Some(peers) => {
                let mut set = BTreeSet::new();
                for (j, peer) in peers.iter().enumerate() {
                    match ids.select_peer(peer, ns) {
                        Ok(s) => set.extend(s),
                        Err(e) => self.warnings.push(format!("{ctx} peer[{j}]: {e}, peer ignored")),
                    }
                }
                Some(set)
            }
        };
        let mut warnings = Vec::new();
        let specs = port_specs(ports, &mut warnings, ctx);
        self.warnings.extend(warnings);
        let peer_list: Vec<u32> = peer_ids.clone().map_or(vec![ID_ANY], |s| s.into_iter().collect());
        let key = |peer_id: u32, proto: u8, port: u16| PolicyKey {
            ep_id,
            peer_id,
            dir,
            proto,
            dport: port.to_be(),
        };
        for spec in &specs {
            match spec {
                PortSpec::All => {
                    for &p in &peer_list {
                        keep_first(&mut self.policy, key(p, 0, 0), value);
                    }
                }
                PortSpec::Proto(proto) => {
                    for &p in &peer_list {
                        keep_first(&mut self.policy, key(p, *proto, 0), value);
                    }
                }
                PortSpec::Exact(proto, port) => {
                    for &p in &peer_list {
                        keep_first(&mut self.policy, key(p, *proto, *port), value);
                    }
                }
                PortSpec::Range(proto, start, end) => {
                    flags |= if dir == DIR_INGRESS {
                        EP_RANGES_INGRESS
                    } else {
                        EP_RANGES_EGRESS
                    };
                    for &p in &peer_list {
                        for (base, bits) in port_blocks(*start, *end) {
                            let rk = RangeKey {
                                prefixlen: 80 + u32::from(bits),
                                data: key(p, *proto, base),
                            };
                            keep_first(&mut self.ranges, rk, value);
                        }
                    }
                }
                PortSpec::Named(proto, name) => {
                    if dir == DIR_INGRESS {
                        // The destination is this pod.
                        for port in resolve_named(std::iter::once(pod), name, *proto) {
                            for &p in &peer_list {
                                keep_first(&mut self.policy, key(p, *proto, port), value);
                            }
                        }
                    } else {
                        // The destination is the peer: resolve per peer identity
                        // over the pods that carry it.
                        for (idx, dst) in world.pods.iter().enumerate() {
                            let Some(dst_ids) = ids.pod_identity.get(idx) else {
                                continue;
                            };
                            for &id in dst_ids {
                                if peer_ids.as_ref().is_some_and(|s| !s.contains(&id)) {
                                    continue;
                                }
                                for port in resolve_named(std::iter::once(dst), name, *proto) {
                                    keep_first(&mut self.policy, key(id, *proto, port), value);
                                }
                            }
                        }
                    }
                }
            }
        }
        flags
    }
}
