//! Security identities: one per distinct (namespace labels, pod labels, ipBlocks containing the address), and the ipcache prefixes of both families.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::abi::{ID_FIRST_ALLOCATED, ID_WORLD};
use crate::net::Prefix;
use crate::world::{Labels, World};

/// An ipBlock in canonical form (except sorted and deduplicated).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// The block.
    pub cidr: Prefix,
    /// Carved out of it.
    pub except: Vec<Prefix>,
}

impl Block {
    /// Parses an ipBlock.
    pub fn parse(b: &IPBlock) -> Result<Self, crate::net::PrefixError> {
        let cidr = Prefix::parse(&b.cidr)?;
        let mut except = b
            .except
            .iter()
            .flatten()
            .map(|e| Prefix::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        except.sort();
        except.dedup();
        Ok(Self { cidr, except })
    }

    /// Whether every address of `p` is in the block, assuming `p` is not
    /// split by any prefix of the block (true for ipcache prefixes).
    pub(super) fn covers_region(&self, p: &Prefix) -> bool {
        self.cidr.covers(p) && !self.except.iter().any(|e| e.covers(p))
    }

    /// Whether `ip` is in the block (never for the other family's addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        for e in &self.except {
            write!(f, "!{e}")?;
        }
        Ok(())
    }
}

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityKey {
    /// Namespace labels of a pod identity; `None` for addresses outside pods.
    pub namespace_labels: Option<Labels>,
    /// Pod labels (empty outside pods).
    pub pod_labels: Labels,
    /// ipBlocks (canonical text) that contain the addresses.
    pub blocks: BTreeSet<String>,
}

/// Matches a label selector against labels; `Err` names an unknown operator.
pub fn selector_matches(sel: &LabelSelector, labels: &Labels) -> Result<bool, String> {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        let has = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => !has.is_some_and(|v| values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            other => return Err(format!("unknown label selector operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The error `selector_matches` gives for some labels, whatever the labels: an unknown operator.
pub fn selector_error(sel: &LabelSelector) -> Option<String> {
    sel.match_expressions
        .iter()
        .flatten()
        .map(|req| req.operator.as_str())
        .find(|op| !matches!(*op, "In" | "NotIn" | "Exists" | "DoesNotExist"))
        .map(|other| format!("unknown label selector operator {other:?}"))
}

/// Identities and the ipcache of a world.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identities {
    /// Allocated identities.
    pub by_key: BTreeMap<IdentityKey, u32>,
    /// ipcache entries of both families: prefix to identity.
    pub ipcache: BTreeMap<Prefix, u32>,
    /// Identities of each pod, by index in `World::pods`: one per address,
    /// in the order of `Pod::ips`. The addresses of a dual-stack pod share an
    /// identity unless ipBlocks tell them apart.
    pub pod_identity: Vec<Vec<u32>>,
    /// The identities whose addresses each ipBlock (canonical text) contains.
    pub by_block: BTreeMap<String, BTreeSet<u32>>,
    /// Next identity to allocate: never reused within a run of the agent.
    pub next_id: u32,
}

impl Identities {
    /// Allocates identities for `world`, keeping those of `prev`.
    pub fn compute(world: &World, blocks: &[Block], prev: Option<&Self>) -> Self {
        let mut next_id = prev.map_or(ID_FIRST_ALLOCATED, |p| p.next_id.max(ID_FIRST_ALLOCATED));
        let mut by_key = BTreeMap::new();
        let mut alloc = |key: IdentityKey, by_key: &mut BTreeMap<IdentityKey, u32>| -> u32 {
            if key.namespace_labels.is_none() && key.blocks.is_empty() {
                return ID_WORLD;
            }
            if let Some(id) = by_key.get(&key) {
                return *id;
            }
            let id = match prev.and_then(|p| p.by_key.get(&key)) {
                Some(id) => *id,
                None => {
                    let id = next_id;
                    next_id += 1;
                    id
                }
            };
            by_key.insert(key, id);
            id
        };
        // Blocks by their cidr: the blocks around a region or an address are found through its at most 33
        // (IPv4) or 129 (IPv6) enclosing prefixes, not by trying every block (a world of 10,000 ipBlocks would
        // take a second).
        let names: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        let mut by_cidr: HashMap<Prefix, Vec<usize>> = HashMap::new();
        for (i, b) in blocks.iter().enumerate() {
            by_cidr.entry(b.cidr).or_default().push(i);
        }
        let around = |addr: IpAddr, len: u8, f: &dyn Fn(&Block) -> bool| -> BTreeSet<String> {
            (0..=len)
                .filter_map(|l| by_cidr.get(&Prefix::new(addr, l)))
                .flatten()
                .filter(|i| f(&blocks[**i]))
                .map(|i| names[*i].clone())
                .collect()
        };

        let mut pod_identity = Vec::with_capacity(world.pods.len());
        let mut ipcache = BTreeMap::new();
        // Prefixes of every cidr and except, and the whole space of each family.
        let mut prefixes: BTreeSet<Prefix> = BTreeSet::new();
        prefixes.insert(Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        prefixes.insert(Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        for b in blocks {
            prefixes.insert(b.cidr);
            prefixes.extend(b.except.iter().copied());
        }
        for p in prefixes {
            let key = IdentityKey {
                namespace_labels: None,
                pod_labels: Labels::new(),
                blocks: around(p.addr, p.len, &|b: &Block| b.covers_region(&p)),
            };
            let id = alloc(key, &mut by_key);
            ipcache.insert(p, id);
        }
        for pod in &world.pods {
            let ns_labels = world
                .namespace(&pod.namespace)
                .map(crate::world::Namespace::effective_labels)
                .unwrap_or_default();
            let mut ids = Vec::with_capacity(pod.ips.len());
            for &ip in &pod.ips {
                let key = IdentityKey {
                    namespace_labels: Some(ns_labels.clone()),
                    pod_labels: pod.labels.clone(),
                    blocks: around(ip, crate::net::width(ip), &|b: &Block| b.contains(ip)),
                };
                let id = alloc(key, &mut by_key);
                ids.push(id);
                ipcache.insert(Prefix::host(ip), id);
            }
            pod_identity.push(ids);
        }
        let mut by_block: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (key, id) in &by_key {
            for b in &key.blocks {
                by_block.entry(b.clone()).or_default().insert(*id);
            }
        }
        // Keep prev ids of keys that vanished out of by_key; they are not reused
        // because next_id only grows.
        Self {
            by_key,
            ipcache,
            pod_identity,
            by_block,
            next_id,
        }
    }

    /// Identities a policy peer selects; `policy_ns` is the policy's namespace.
    pub fn select_peer(&self, peer: &NetworkPolicyPeer, policy_ns: &str) -> Result<BTreeSet<u32>, String> {
        if let Some(ip_block) = &peer.ip_block {
            let b = Block::parse(ip_block).map_err(|e| e.to_string())?.to_string();
            return Ok(self.by_block.get(&b).cloned().unwrap_or_default());
        }
        let mut out = BTreeSet::new();
        for (key, id) in &self.by_key {
            let Some(ns_labels) = &key.namespace_labels else {
                continue;
            };
            let ns_ok = match &peer.namespace_selector {
                Some(sel) => selector_matches(sel, ns_labels)?,
                None => ns_labels.get(crate::world::NAMESPACE_NAME_LABEL).map(String::as_str) == Some(policy_ns),
            };
            let pod_ok = match &peer.pod_selector {
                Some(sel) => selector_matches(sel, &key.pod_labels)?,
                None => true,
            };
            if ns_ok && pod_ok {
                out.insert(*id);
            }
        }
        Ok(out)
    }
}
