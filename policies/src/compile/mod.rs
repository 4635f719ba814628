//! The pure policy compiler: a world in, identities and map entries out.
//!
//! `compile(world, prev)` keeps identities, endpoint ids and policy ids of
//! `prev`, so `diff(prev, next)` holds only the entries that really changed.

pub mod diff;
pub mod entries;
pub mod identity;
pub mod incremental;

use std::collections::{BTreeMap, BTreeSet};

pub use diff::{Diff, MapDiff, diff, map_diff};
pub use entries::RangeKey;
pub use identity::{Block, Identities, IdentityKey};
pub use incremental::Compiler;

use crate::abi::{
    DIR_INGRESS, EP_ANY_PEER_EGRESS, EP_ANY_PEER_INGRESS, EP_WILD_PORT_EGRESS, EP_WILD_PORT_INGRESS, Endpoint, ID_ANY,
    PolicyKey, PolicyValue,
};
use crate::world::World;

/// First endpoint id; 0 is never used.
const EP_FIRST: u32 = 1;
/// First policy id; 0 means "no policy" in counters and events.
const POLICY_FIRST: u32 = 1;

/// Everything the loader writes, and the names behind the numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Identities and ipcache.
    pub identities: Identities,
    /// Endpoint of each local pod, by host-side interface.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Exact and wildcard rules.
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
    /// endPort rules.
    pub ranges: BTreeMap<RangeKey, PolicyValue>,
    /// Endpoint id of each pod (`namespace`, `name`).
    pub endpoint_ids: BTreeMap<(String, String), u32>,
    /// Policy id of each policy (`namespace`, `name`).
    pub policy_ids: BTreeMap<(String, String), u32>,
    /// Next endpoint id to allocate.
    pub next_endpoint: u32,
    /// Next policy id to allocate.
    pub next_policy: u32,
    /// What the compiler could not honour (unknown operators, bad CIDRs).
    pub warnings: Vec<String>,
}

fn alloc<K: Ord + Clone>(prev: Option<&BTreeMap<K, u32>>, key: &K, next: &mut u32, out: &mut BTreeMap<K, u32>) -> u32 {
    if let Some(id) = out.get(key) {
        return *id;
    }
    let id = match prev.and_then(|p| p.get(key)) {
        Some(id) => *id,
        None => {
            let id = *next;
            *next += 1;
            id
        }
    };
    out.insert(key.clone(), id);
    id
}

/// Compiles a world; `prev` keeps ids stable across compilations.
pub fn compile(world: &World, prev: Option<&Compiled>) -> Compiled {
    let mut warnings = Vec::new();
    // Distinct ipBlocks of all policies.
    let mut blocks = BTreeSet::new();
    for np in &world.policies {
        let Some(spec) = &np.spec else { continue };
        let peers = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.from.iter().flatten())
            .chain(spec.egress.iter().flatten().flat_map(|r| r.to.iter().flatten()));
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                match Block::parse(b) {
                    Ok(b) => {
                        blocks.insert(b);
                    }
                    Err(e) => warnings.push(format!(
                        "NetworkPolicy {}/{}: {e}",
                        np.metadata.namespace.as_deref().unwrap_or("default"),
                        np.metadata.name.as_deref().unwrap_or_default()
                    )),
                }
            }
        }
    }
    let blocks: Vec<Block> = blocks.into_iter().collect();
    let identities = Identities::compute(world, &blocks, prev.map(|p| &p.identities));

    let mut next_endpoint = prev.map_or(EP_FIRST, |p| p.next_endpoint.max(EP_FIRST));
    let mut endpoint_ids = BTreeMap::new();
    let mut builder = entries::Builder::default();
    for pod in &world.pods {
        let Some(ifname) = &pod.interface else { continue };
        let key = (pod.namespace.clone(), pod.name.clone());
        let id = alloc(
            prev.map(|p| &p.endpoint_ids),
            &key,
            &mut next_endpoint,
            &mut endpoint_ids,
        );
        builder
            .endpoints
            .insert(ifname.clone(), Endpoint { ep_id: id, flags: 0 });
    }

    let mut next_policy = prev.map_or(POLICY_FIRST, |p| p.next_policy.max(POLICY_FIRST));
    let mut policy_ids = BTreeMap::new();
    for np in &world.policies {
        let key = (
            np.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            np.metadata.name.clone().unwrap_or_default(),
        );
        let id = alloc(prev.map(|p| &p.policy_ids), &key, &mut next_policy, &mut policy_ids);
        builder.add_policy(world, &identities, np, id, &endpoint_ids);
    }
    warnings.extend(builder.warnings);
    // Lookup hints: which optional lookups can find anything.
    let mut hints: BTreeMap<u32, u32> = BTreeMap::new();
    for k in builder.policy.keys().chain(builder.ranges.keys().map(|r| &r.data)) {
        let ingress = k.dir == DIR_INGRESS;
        let mut f = 0;
        if k.peer_id == ID_ANY {
            f |= if ingress {
                EP_ANY_PEER_INGRESS
            } else {
                EP_ANY_PEER_EGRESS
            };
        }
        if k.dport == 0 || k.proto == 0 {
            f |= if ingress {
                EP_WILD_PORT_INGRESS
            } else {
                EP_WILD_PORT_EGRESS
            };
        }
        *hints.entry(k.ep_id).or_default() |= f;
    }
    let mut endpoints = builder.endpoints;
    for ep in endpoints.values_mut() {
        ep.flags |= hints.get(&ep.ep_id).copied().unwrap_or(0);
    }
    Compiled {
        identities,
        endpoints,
        policy: builder.policy,
        ranges: builder.ranges,
        endpoint_ids,
        policy_ids,
        next_endpoint,
        next_policy,
        warnings,
    }
}

#[cfg(test)]
mod tests;
