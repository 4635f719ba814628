//! Policy map entries: for each local pod a policy selects, the allowed (peer identity, direction, protocol, port).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::identity::{Block, Identities, selector_matches};
use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, EP_RANGES_EGRESS, EP_RANGES_INGRESS, Endpoint,
    ID_ANY, PolicyKey, PolicyValue,
};
use crate::net::port_blocks;
use crate::world::{NamedPort, Pod, World};

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

/// Every pod with its identities (one per address), for named egress ports.
pub(super) trait PodIdentities {
    /// Calls `f` with each pod and its identities.
    fn each(&self, f: &mut dyn FnMut(&Pod, &[u32]));
}

/// The pods of a world and their identities by index, as [`Identities::compute`] lists them.
pub(super) struct ByIndex<'a>(pub &'a World, pub &'a Identities);

impl PodIdentities for ByIndex<'_> {
    fn each(&self, f: &mut dyn FnMut(&Pod, &[u32])) {
        for (pod, ids) in self.0.pods.iter().zip(&self.1.pod_identity) {
            f(pod, ids);
        }
    }
}

/// One map entry of a rule for one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// A `plinth_policy` key.
    Policy(PolicyKey),
    /// A `plinth_polrange` key.
    Range(RangeKey),
}

/// A rule compiled for any endpoint its policy selects: peers resolved to
/// identities, ports to numbers (except ingress named ports, which name a
/// port of the destination, the endpoint itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RuleOut {
    /// Exact or wildcard entries: peer, protocol, port (host order, 0 = any).
    pub keys: Vec<(u32, u8, u16)>,
    /// endPort blocks: peer, protocol, first port, prefix length of the key.
    pub ranges: Vec<(u32, u8, u16, u32)>,
    /// Ingress named ports: protocol and name, for each peer of `peers`.
    pub named: Vec<(u8, String)>,
    /// The peers of `named`.
    pub peers: Vec<u32>,
    /// Endpoint flags the rule needs (endPort ranges).
    pub flags: u32,
    /// ipBlocks (canonical text) whose identities the rule names.
    pub blocks: Vec<String>,
    /// Whether a peer selects pods by labels.
    pub selects_pods: bool,
    /// Whether an egress named port was resolved over every pod.
    pub named_egress: bool,
    /// What could not be honoured.
    pub warnings: Vec<String>,
}

impl RuleOut {
    /// Compiles a rule of a policy in namespace `ns`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of a rule and the context it resolves in; a struct would only rename them"
    )]
    pub(super) fn new(
        pods: &dyn PodIdentities,
        ids: &Identities,
        ns: &str,
        dir: u8,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        ctx: &str,
    ) -> Self {
        let mut out = Self::default();
        // None: any peer.
        let peer_ids: Option<BTreeSet<u32>> = match peers.filter(|p| !p.is_empty()) {
            None => None,
            Some(peers) => {
                let mut set = BTreeSet::new();
                for (j, peer) in peers.iter().enumerate() {
                    if peer.ip_block.is_none() {
                        out.selects_pods = true;
                    }
                    match ids.select_peer(peer, ns) {
                        Ok(s) => set.extend(s),
                        Err(e) => out.warnings.push(format!("{ctx} peer[{j}]: {e}, peer ignored")),
                    }
                    if let Some(b) = peer.ip_block.as_ref().and_then(|b| Block::parse(b).ok()) {
                        out.blocks.push(b.to_string());
                    }
                }
                Some(set)
            }
        };
        let specs = port_specs(ports, &mut out.warnings, ctx);
        out.peers = peer_ids.clone().map_or(vec![ID_ANY], |s| s.into_iter().collect());
        for spec in &specs {
            match spec {
                PortSpec::All => out.keys.extend(out.peers.iter().map(|&p| (p, 0, 0))),
                PortSpec::Proto(proto) => out.keys.extend(out.peers.iter().map(|&p| (p, *proto, 0))),
                PortSpec::Exact(proto, port) => out.keys.extend(out.peers.iter().map(|&p| (p, *proto, *port))),
                PortSpec::Range(proto, start, end) => {
                    out.flags |= if dir == DIR_INGRESS {
                        EP_RANGES_INGRESS
                    } else {
                        EP_RANGES_EGRESS
                    };
                    for &p in &out.peers {
                        for (base, bits) in port_blocks(*start, *end) {
                            out.ranges.push((p, *proto, base, 80 + u32::from(bits)));
                        }
                    }
                }
                PortSpec::Named(proto, name) => {
                    if dir == DIR_INGRESS {
                        // The destination is the endpoint: resolved per endpoint.
                        out.named.push((*proto, (*name).to_owned()));
                    } else {
                        // The destination is the peer: resolve per peer identity
                        // over the pods that carry it.
                        out.named_egress = true;
                        let keys = &mut out.keys;
                        pods.each(&mut |dst, dst_ids| {
                            for &id in dst_ids {
                                if peer_ids.as_ref().is_some_and(|s| !s.contains(&id)) {
                                    continue;
                                }
                                for port in resolve_named(std::iter::once(dst), name, *proto) {
                                    keys.push((id, *proto, port));
                                }
                            }
                        });
                    }
                }
            }
        }
        out.keys.sort_unstable();
        out.keys.dedup();
        out.ranges.sort_unstable();
        out.ranges.dedup();
        out.blocks.sort_unstable();
        out.blocks.dedup();
        out
    }

    /// Calls `f` with each entry of the rule for endpoint `ep_id` (the pod
    /// `dst`, which ingress named ports resolve against).
    pub(super) fn each_entry(&self, ep_id: u32, dir: u8, dst: &[NamedPort], mut f: impl FnMut(Entry)) {
        let key = |peer_id: u32, proto: u8, port: u16| PolicyKey {
            ep_id,
            peer_id,
            dir,
            proto,
            dport: port.to_be(),
        };
        for &(p, proto, port) in &self.keys {
            f(Entry::Policy(key(p, proto, port)));
        }
        for &(p, proto, base, prefixlen) in &self.ranges {
            f(Entry::Range(RangeKey {
                prefixlen,
                data: key(p, proto, base),
            }));
        }
        for (proto, name) in &self.named {
            let mut ports: Vec<u16> = dst
                .iter()
                .filter(|np| np.name == *name && proto_number(&np.protocol) == Some(*proto))
                .map(|np| np.port)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                for &p in &self.peers {
                    f(Entry::Policy(key(p, *proto, port)));
                }
            }
        }
    }
}

/// The rules of one direction of a policy, compiled once for every endpoint it selects.
pub(super) fn compile_rules(pods: &dyn PodIdentities, ids: &Identities, np: &NetworkPolicy, dir: u8) -> Vec<RuleOut> {
    let ns = np.metadata.namespace.as_deref().unwrap_or("default");
    let name = np.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = &np.spec else { return Vec::new() };
    (0..rule_count(np, dir))
        .map(|i| {
            let (peers, ports) = rule_parts(spec, dir, i);
            RuleOut::new(pods, ids, ns, dir, peers, ports, &rule_context(ns, name, dir, i))
        })
        .collect()
}

/// How warnings name rule `i` of a direction of policy `ns/name`.
pub(super) fn rule_context(ns: &str, name: &str, dir: u8, i: usize) -> String {
    format!(
        "NetworkPolicy {ns}/{name} {}[{i}]",
        if dir == DIR_INGRESS { "ingress" } else { "egress" }
    )
}

/// Number of rules of a direction.
pub(super) fn rule_count(np: &NetworkPolicy, dir: u8) -> usize {
    let Some(spec) = &np.spec else { return 0 };
    if dir == DIR_INGRESS {
        spec.ingress.as_ref().map_or(0, Vec::len)
    } else {
        spec.egress.as_ref().map_or(0, Vec::len)
    }
}

/// Peers and ports of rule `i` of a direction (both `None` past the end).
pub(super) fn rule_parts(
    spec: &NetworkPolicySpec,
    dir: u8,
    i: usize,
) -> (Option<&Vec<NetworkPolicyPeer>>, Option<&Vec<NetworkPolicyPort>>) {
    if dir == DIR_INGRESS {
        match spec.ingress.as_ref().and_then(|r| r.get(i)) {
            Some(r) => (r.from.as_ref(), r.ports.as_ref()),
            None => (None, None),
        }
    } else {
        match spec.egress.as_ref().and_then(|r| r.get(i)) {
            Some(r) => (r.to.as_ref(), r.ports.as_ref()),
            None => (None, None),
        }
    }
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
        let pods = ByIndex(world, ids);
        let mut rules = Vec::new();
        for (on, dir) in [(ingress, DIR_INGRESS), (egress, DIR_EGRESS)] {
            if on {
                let compiled = compile_rules(&pods, ids, np, dir);
                for r in &compiled {
                    self.warnings.extend(r.warnings.iter().cloned());
                }
                rules.push((dir, compiled));
            }
        }
        let mut selector_warned = false;
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
                    if !selector_warned {
                        self.warnings.push(format!("{ctx}: podSelector: {e}"));
                        selector_warned = true;
                    }
                }
            }
            let mut flags = 0;
            for (dir, compiled) in &rules {
                flags |= if *dir == DIR_INGRESS {
                    EP_ENFORCE_INGRESS
                } else {
                    EP_ENFORCE_EGRESS
                };
                for (i, rule) in compiled.iter().enumerate() {
                    let value = PolicyValue {
                        policy_id,
                        rule: i as u16,
                        flags: 0,
                    };
                    flags |= rule.flags;
                    rule.each_entry(*ep_id, *dir, &pod.ports, |e| match e {
                        Entry::Policy(k) => keep_first(&mut self.policy, k, value),
                        Entry::Range(k) => keep_first(&mut self.ranges, k, value),
                    });
                }
            }
            let ep = self.endpoints.entry(ifname.clone()).or_insert(Endpoint {
                ep_id: *ep_id,
                flags: 0,
            });
            ep.flags |= flags;
        }
    }
}
