//! The incremental compiler: recompiles only what a change touches.
//!
//! [`Compiler`] keeps the last world and what it compiled from it, down to
//! each rule, and counts who contributes each map entry. Given the next world
//! it finds what changed (namespaces, pods, policies, single rules), follows
//! the dependencies (an ipBlock added or removed changes the identities of
//! the prefixes and pods inside it, a new or vanished identity changes the
//! rules whose peers select it, a pod's labels change which policies select
//! it) and returns only the map entries that changed. Changing one rule among
//! 10,000 recompiles that rule, not the policy nor the world.
//!
//! Its output equals [`super::compile`]'s on the same world up to the numbers
//! it allocates (identities, endpoints, policies; the property test
//! `incremental_equals_full` checks it on random sequences of worlds), and
//! lists warnings by policy name rather than in the world's order. Where a
//! world is inconsistent it decides by name, not by the world's order: when
//! two pods share an address, the ipcache gives it the identity of the pod
//! that sorts last by namespace and name; when two local pods claim one
//! interface, its entry is the endpoint of the one that sorts last, and stays
//! while either lives. World files refuse both (`World::check`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::diff::{Diff, MapDiff};
use super::entries::{Entry, PodIdentities, RangeKey, RuleOut, policy_types, rule_count, rule_parts};
use super::identity::{Block, Identities, IdentityKey, selector_matches};
use super::{Compiled, EP_FIRST, POLICY_FIRST};
use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_ANY_PEER_EGRESS, EP_ANY_PEER_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS,
    EP_WILD_PORT_EGRESS, EP_WILD_PORT_INGRESS, Endpoint, ID_ANY, ID_FIRST_ALLOCATED, ID_WORLD, PolicyKey, PolicyValue,
};
use crate::net::{Prefix, width};
use crate::world::{Labels, NAMESPACE_NAME_LABEL, NamedPort, Pod, World};

/// A pod or a policy: namespace and name.
type Name = (String, String);
/// A rule: policy id, direction index (0 ingress, 1 egress), rule index.
type RuleRef = (u32, usize, usize);
/// The parsed ipBlocks of rules to compile (by policy name, direction, index), and what did not parse.
type Pending = HashMap<(Name, usize, usize), (Vec<Block>, Vec<String>)>;

const DIRS: [u8; 2] = [DIR_INGRESS, DIR_EGRESS];

/// One rule of a policy.
#[derive(Debug, Default)]
struct Rule {
    /// ipBlocks of its peers, counted whether or not the direction is enforced.
    blocks: Vec<Block>,
    /// ipBlocks that do not parse.
    block_warnings: Vec<String>,
    /// Compiled, when the policy enforces the direction.
    out: Option<RuleOut>,
    /// Its peers that select pods by labels, when compiled.
    selectors: Vec<NetworkPolicyPeer>,
}

/// One policy.
#[derive(Debug)]
struct Policy {
    name: Name,
    /// Whether the object has a spec (without one it selects nothing).
    has_spec: bool,
    /// Ingress, egress.
    enforces: [bool; 2],
    selector: LabelSelector,
    /// An unknown operator in the pod selector: every local pod of the namespace is selected.
    selector_error: Option<String>,
    /// Local pods selected.
    selected: BTreeSet<Name>,
    rules: [Vec<Rule>; 2],
    /// Endpoint flags the rules of each direction need.
    rule_flags: [u32; 2],
}

/// A local pod: an endpoint.
#[derive(Debug)]
struct Local {
    ep_id: u32,
    ifname: String,
    labels: Labels,
    ports: Vec<NamedPort>,
}

/// The changes of one update, gathered as they happen.
#[derive(Default)]
struct Pass {
    /// Policy keys written, with their value before the update.
    policy: HashMap<PolicyKey, Option<PolicyValue>>,
    ranges: HashMap<RangeKey, Option<PolicyValue>>,
    prefixes: BTreeSet<Prefix>,
    /// ipBlocks whose identities changed.
    blocks: BTreeSet<String>,
    /// Identities created or destroyed.
    keys: Vec<IdentityKey>,
    /// Whether a pod's identities changed.
    pod_ids: bool,
    /// Endpoints whose flags may have changed.
    endpoints: BTreeSet<Name>,
    /// Interfaces whose endpoint entry may have changed.
    ifnames: BTreeSet<String>,
}

/// What an update recompiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Policies compiled whole (new, removed, or with a new selector or types).
    pub policies: usize,
    /// Rules compiled, those of whole policies included.
    pub rules: usize,
    /// Pods whose identity or endpoint was recomputed.
    pub pods: usize,
    /// Whether the compilation's warnings changed.
    pub warnings_changed: bool,
}

/// What the last world compiled to, and how, so that the next compiles by difference.
#[derive(Debug, Default)]
pub struct Compiler {
    world: World,
    /// The world before the last, until taken or replaced.
    retired: Option<World>,
    stats: Stats,
    out: Compiled,
    policies: BTreeMap<u32, Policy>,
    policies_by_ns: BTreeMap<String, BTreeSet<u32>>,
    local: BTreeMap<Name, Local>,
    local_by_ns: BTreeMap<String, BTreeSet<Name>>,
    /// Local pods by interface: normally one each; when two claim one interface, its entry is the endpoint of
    /// the one that sorts last, and stays while either lives.
    by_ifname: BTreeMap<String, BTreeSet<Name>>,
    by_ep: HashMap<u32, Name>,
    /// Policies selecting each local pod.
    ep_policies: BTreeMap<Name, BTreeSet<u32>>,
    /// Contributions to each entry; the entry holds the least.
    contrib: HashMap<PolicyKey, Vec<PolicyValue>>,
    range_contrib: HashMap<RangeKey, Vec<PolicyValue>>,
    /// Per endpoint id: entries with a wildcard peer, ingress and egress; with a wildcard port or protocol.
    hints: HashMap<u32, [u32; 4]>,
    /// Rules whose peers select pods by labels; by ipBlock; with egress named ports.
    selector_rules: BTreeSet<RuleRef>,
    block_rules: HashMap<String, BTreeSet<RuleRef>>,
    named_egress_rules: BTreeSet<RuleRef>,
    /// Warnings of the policies that have any.
    warnings: BTreeMap<Name, Vec<String>>,
    // Identities.
    blocks: BTreeMap<Block, usize>,
    by_cidr: HashMap<Prefix, Vec<(Block, String)>>,
    prefix_refs: BTreeMap<Prefix, usize>,
    region_id: BTreeMap<Prefix, u32>,
    pod_ids: BTreeMap<Name, Vec<(IpAddr, u32)>>,
    hosts: BTreeMap<IpAddr, BTreeSet<Name>>,
    key_refs: HashMap<u32, (IdentityKey, usize)>,
}

fn name_of(np: &NetworkPolicy) -> Name {
    (
        np.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        np.metadata.name.clone().unwrap_or_default(),
    )
}

fn pod_name(p: &Pod) -> Name {
    (p.namespace.clone(), p.name.clone())
}

/// ipBlocks of a rule's peers, and what does not parse.
fn rule_blocks(peers: Option<&Vec<NetworkPolicyPeer>>, name: &Name) -> (Vec<Block>, Vec<String>) {
    let (mut blocks, mut warnings) = (Vec::new(), Vec::new());
    for b in peers.into_iter().flatten().filter_map(|p| p.ip_block.as_ref()) {
        match Block::parse(b) {
            Ok(b) => blocks.push(b),
            Err(e) => warnings.push(format!("NetworkPolicy {}/{}: {e}", name.0, name.1)),
        }
    }
    (blocks, warnings)
}

/// Whether a pod peer of a policy in `ns` may select the identity `key` (an
/// unreadable selector counts as yes: the rule is recompiled and warns).
fn peer_may_select(peer: &NetworkPolicyPeer, ns: &str, key: &IdentityKey) -> bool {
    if peer.ip_block.is_some() {
        return false;
    }
    let Some(ns_labels) = &key.namespace_labels else {
        return false;
    };
    let ns_ok = match &peer.namespace_selector {
        Some(sel) => selector_matches(sel, ns_labels).unwrap_or(true),
        None => ns_labels.get(NAMESPACE_NAME_LABEL).map(String::as_str) == Some(ns),
    };
    let pod_ok = match &peer.pod_selector {
        Some(sel) => selector_matches(sel, &key.pod_labels).unwrap_or(true),
        None => true,
    };
    ns_ok && pod_ok
}

/// Hint bits of an entry key: wildcard peer, wildcard port (indices into `Compiler::hints`).
fn hint_slots(k: &PolicyKey) -> [Option<usize>; 2] {
    let d = usize::from(k.dir != DIR_INGRESS);
    [
        (k.peer_id == ID_ANY).then_some(d),
        (k.dport == 0 || k.proto == 0).then_some(2 + d),
    ]
}

/// Pods of the world with their identities from the compiler's table.
struct ByName<'a>(&'a World, &'a BTreeMap<Name, Vec<(IpAddr, u32)>>);

impl PodIdentities for ByName<'_> {
    fn each(&self, f: &mut dyn FnMut(&Pod, &[u32])) {
        for pod in &self.0.pods {
            let ids: Vec<u32> = self
                .1
                .get(&pod_name(pod))
                .map(|v| v.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default();
            f(pod, &ids);
        }
    }
}

/// Adds or removes one contribution; records the entry's value before the pass.
fn contribute<K: std::hash::Hash + Eq + Copy>(
    contrib: &mut HashMap<K, Vec<PolicyValue>>,
    current: Option<PolicyValue>,
    touched: &mut HashMap<K, Option<PolicyValue>>,
    k: K,
    v: PolicyValue,
    add: bool,
) {
    touched.entry(k).or_insert(current);
    if add {
        contrib.entry(k).or_default().push(v);
    } else if let Some(vs) = contrib.get_mut(&k) {
        if let Some(i) = vs.iter().position(|x| *x == v) {
            vs.swap_remove(i);
        }
        if vs.is_empty() {
            contrib.remove(&k);
        }
    }
}

impl Compiler {
    /// A compiler that has compiled nothing (its first update compiles the whole world).
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last world compiled to. `identities.pod_identity` is left empty.
    pub fn compiled(&self) -> &Compiled {
        &self.out
    }

    /// The last world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// What the last update recompiled.
    pub fn last_stats(&self) -> Stats {
        self.stats
    }

    /// The world the last update replaced. Freeing a world costs time in
    /// proportion to its size, not to the change: a caller that needs the
    /// update's latency to follow the change frees it elsewhere (the agent
    /// does so on a blocking thread). Otherwise the next update frees it.
    pub fn take_retired(&mut self) -> Option<World> {
        self.retired.take()
    }

    /// Compiles `world` by difference with the last one; returns the map
    /// entries that changed (keys in order), which the compilation now holds.
    pub fn update(&mut self, world: World) -> Diff {
        let old = std::mem::take(&mut self.world);
        let mut pass = Pass::default();
        let o = &mut self.out;
        o.next_endpoint = o.next_endpoint.max(EP_FIRST);
        o.next_policy = o.next_policy.max(POLICY_FIRST);
        o.identities.next_id = o.identities.next_id.max(ID_FIRST_ALLOCATED);

        // 1. What changed in the input.
        let dirty_pods = changed_pods(&old, &world);
        let (whole, rule_changes, new_policies) = changed_policies(&old, &world);

        // 2. ipBlocks: counts of the rules that go and of those that come.
        let mut block_delta: BTreeMap<Block, isize> = BTreeMap::new();
        let mut pending: Pending = HashMap::new();
        for name in &whole {
            if let Some(pid) = self.out.policy_ids.get(name)
                && let Some(p) = self.policies.get(pid)
            {
                for r in p.rules.iter().flatten() {
                    for b in &r.blocks {
                        *block_delta.entry(b.clone()).or_default() -= 1;
                    }
                }
            }
            if let Some(np) = new_policies.get(name)
                && let Some(spec) = &np.spec
            {
                for (d, &dir) in DIRS.iter().enumerate() {
                    for i in 0..rule_count(np, dir) {
                        let parsed = rule_blocks(rule_parts(spec, dir, i).0, name);
                        for b in &parsed.0 {
                            *block_delta.entry(b.clone()).or_default() += 1;
                        }
                        pending.insert((name.clone(), d, i), parsed);
                    }
                }
            }
        }
        for (name, d, i) in &rule_changes {
            let Some(pid) = self.out.policy_ids.get(name) else {
                continue;
            };
            if let Some(r) = self.policies.get(pid).and_then(|p| p.rules[*d].get(*i)) {
                for b in &r.blocks {
                    *block_delta.entry(b.clone()).or_default() -= 1;
                }
            }
            if let Some(spec) = new_policies.get(name).and_then(|np| np.spec.as_ref())
                && new_policies.get(name).is_some_and(|np| *i < rule_count(np, DIRS[*d]))
            {
                let parsed = rule_blocks(rule_parts(spec, DIRS[*d], *i).0, name);
                for b in &parsed.0 {
                    *block_delta.entry(b.clone()).or_default() += 1;
                }
                pending.insert((name.clone(), *d, *i), parsed);
            }
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (b, delta) in block_delta {
            let before = self.blocks.get(&b).copied().unwrap_or(0);
            let after = before.saturating_add_signed(delta);
            if after == 0 {
                self.blocks.remove(&b);
            } else {
                self.blocks.insert(b.clone(), after);
            }
            match (before, after) {
                (0, a) if a > 0 => added.push(b),
                (b0, 0) if b0 > 0 => removed.push(b),
                _ => {}
            }
        }

        // 3. Identities.
        let index: HashMap<Name, usize> = if dirty_pods.is_empty() && added.is_empty() && removed.is_empty() {
            HashMap::new()
        } else {
            world.pods.iter().enumerate().map(|(i, p)| (pod_name(p), i)).collect()
        };
        self.update_identities(&mut pass, &world, &index, &added, &removed, &dirty_pods);

        // 4. Rules whose peers' identities changed.
        let whole_ids: BTreeSet<u32> = whole
            .iter()
            .filter_map(|n| self.out.policy_ids.get(n).copied())
            .collect();
        let mut dirty_rules: BTreeSet<RuleRef> = BTreeSet::new();
        for (name, d, i) in &rule_changes {
            if let Some(pid) = self.out.policy_ids.get(name) {
                dirty_rules.insert((*pid, *d, *i));
            }
        }
        let pod_keys: Vec<&IdentityKey> = pass.keys.iter().filter(|k| k.namespace_labels.is_some()).collect();
        if !pod_keys.is_empty() {
            for &(pid, d, i) in &self.selector_rules {
                let Some(p) = self.policies.get(&pid) else { continue };
                let Some(r) = p.rules[d].get(i) else { continue };
                if r.selectors
                    .iter()
                    .any(|peer| pod_keys.iter().any(|k| peer_may_select(peer, &p.name.0, k)))
                {
                    dirty_rules.insert((pid, d, i));
                }
            }
        }
        for b in &pass.blocks {
            dirty_rules.extend(self.block_rules.get(b).into_iter().flatten().copied());
        }
        if !dirty_pods.is_empty() || pass.pod_ids || !pass.keys.is_empty() {
            dirty_rules.extend(self.named_egress_rules.iter().copied());
        }
        dirty_rules.retain(|(pid, _, _)| !whole_ids.contains(pid));
        // Pairs of a policy and a local pod whose selection or endpoint may change.
        let mut pairs: BTreeSet<(u32, Name)> = BTreeSet::new();
        for pk in &dirty_pods {
            for pid in self.policies_by_ns.get(&pk.0).into_iter().flatten() {
                if !whole_ids.contains(pid) {
                    pairs.insert((*pid, pk.clone()));
                }
            }
        }

        // 5. Old contributions out.
        for pid in &whole_ids {
            self.policy_everywhere(&mut pass, *pid, false);
        }
        for (pid, pk) in &pairs {
            if self.policies.get(pid).is_some_and(|p| p.selected.contains(pk)) {
                self.pair(&mut pass, *pid, pk, false);
            }
        }
        for &(pid, d, i) in &dirty_rules {
            self.rule_everywhere(&mut pass, (pid, d, i), &pairs, false);
        }

        // 6. The new state.
        for name in &whole {
            if let Some(pid) = self.out.policy_ids.get(name).copied() {
                self.drop_policy(&mut pass, pid, new_policies.get(name).is_some());
            }
        }
        for pk in &dirty_pods {
            self.update_local(&mut pass, &world, &index, pk);
        }
        let by_name = ByName(&world, &self.pod_ids);
        let mut rebuilt: Vec<Policy> = Vec::new();
        for name in &whole {
            let Some(np) = new_policies.get(name) else { continue };
            rebuilt.push(build_policy(np, name, &by_name, &self.out.identities, &mut pending));
        }
        self.stats = Stats {
            policies: whole.len(),
            rules: rebuilt
                .iter()
                .flat_map(|p| p.rules.iter().flatten())
                .filter(|r| r.out.is_some())
                .count(),
            pods: dirty_pods.len(),
            warnings_changed: false,
        };
        let mut changed_rules: BTreeMap<u32, Vec<(usize, usize, Rule)>> = BTreeMap::new();
        for &(pid, _, _) in &dirty_rules {
            changed_rules.entry(pid).or_default();
        }
        for &(pid, d, i) in &dirty_rules {
            let Some(p) = self.policies.get(&pid) else { continue };
            let Some(np) = new_policies.get(&p.name) else { continue };
            let Some(spec) = &np.spec else { continue };
            if i >= rule_count(np, DIRS[d]) {
                continue;
            }
            let (blocks, block_warnings) = match pending.remove(&(p.name.clone(), d, i)) {
                Some(parsed) => parsed,
                None => p.rules[d]
                    .get(i)
                    .map(|r| (r.blocks.clone(), r.block_warnings.clone()))
                    .unwrap_or_default(),
            };
            let out = p.enforces[d].then(|| {
                let (peers, ports) = rule_parts(spec, DIRS[d], i);
                let ctx = super::entries::rule_context(&p.name.0, &p.name.1, DIRS[d], i);
                RuleOut::new(&by_name, &self.out.identities, &p.name.0, DIRS[d], peers, ports, &ctx)
            });
            self.stats.rules += usize::from(out.is_some());
            let selectors = selector_peers(out.as_ref(), rule_parts(spec, DIRS[d], i).0);
            changed_rules.entry(pid).or_default().push((
                d,
                i,
                Rule {
                    blocks,
                    block_warnings,
                    out,
                    selectors,
                },
            ));
        }
        for (pid, rules) in changed_rules {
            let counts = self
                .policies
                .get(&pid)
                .and_then(|p| new_policies.get(&p.name))
                .map(|np| [rule_count(np, DIR_INGRESS), rule_count(np, DIR_EGRESS)]);
            self.replace_rules(&mut pass, pid, rules, counts.unwrap_or([0, 0]));
        }
        for p in rebuilt {
            self.insert_policy(&mut pass, p);
        }
        for (pid, pk) in &pairs {
            self.reselect(&mut pass, *pid, pk);
        }

        // 7. New contributions in.
        for name in &whole {
            let Some(pid) = self.out.policy_ids.get(name).copied() else {
                continue;
            };
            self.policy_everywhere(&mut pass, pid, true);
        }
        for (pid, pk) in &pairs {
            if self.policies.get(pid).is_some_and(|p| p.selected.contains(pk)) {
                self.pair(&mut pass, *pid, pk, true);
            }
        }
        for &(pid, d, i) in &dirty_rules {
            self.rule_everywhere(&mut pass, (pid, d, i), &pairs, true);
        }

        // 8. The changed entries.
        let mut touched: BTreeSet<Name> = whole.clone();
        for (pid, _, _) in &dirty_rules {
            touched.extend(self.policies.get(pid).map(|p| p.name.clone()));
        }
        for (pid, _) in &pairs {
            touched.extend(self.policies.get(pid).map(|p| p.name.clone()));
        }
        self.world = world;
        self.retired = Some(old);
        let diff = self.finish(pass);
        self.update_warnings(&touched);
        diff
    }

    /// Updates identities for ipBlocks that appeared or vanished and for changed pods.
    fn update_identities(
        &mut self,
        pass: &mut Pass,
        world: &World,
        index: &HashMap<Name, usize>,
        added: &[Block],
        removed: &[Block],
        pods: &BTreeSet<Name>,
    ) {
        let mut regions: BTreeSet<Prefix> = BTreeSet::new();
        let mut pod_owners: BTreeSet<Name> = pods.clone();
        if self.prefix_refs.is_empty() {
            // The whole space of each family is always in the ipcache.
            for p in [
                Prefix::new(IpAddr::V4(0.into()), 0),
                Prefix::new(IpAddr::V6(0u128.into()), 0),
            ] {
                self.prefix_refs.insert(p, 1);
                regions.insert(p);
            }
        }
        let prefixes_of =
            |b: &Block| -> BTreeSet<Prefix> { std::iter::once(b.cidr).chain(b.except.iter().copied()).collect() };
        for b in removed {
            if let Some(v) = self.by_cidr.get_mut(&b.cidr) {
                v.retain(|(x, _)| x != b);
                if v.is_empty() {
                    self.by_cidr.remove(&b.cidr);
                }
            }
            for p in prefixes_of(b) {
                if let Some(n) = self.prefix_refs.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.prefix_refs.remove(&p);
                    }
                }
                regions.insert(p);
            }
        }
        for b in added {
            let name = b.to_string();
            self.by_cidr.entry(b.cidr).or_default().push((b.clone(), name));
            for p in prefixes_of(b) {
                *self.prefix_refs.entry(p).or_default() += 1;
                regions.insert(p);
            }
        }
        for b in added.iter().chain(removed) {
            let (first, last) = (b.cidr.addr, b.cidr.last());
            let lo = Prefix { addr: first, len: 0 };
            let hi = Prefix {
                addr: last,
                len: u8::MAX,
            };
            regions.extend(
                self.prefix_refs
                    .range(lo..=hi)
                    .map(|(p, _)| *p)
                    .filter(|p| b.cidr.covers(p)),
            );
            for names in self.hosts.range(first..=last).map(|(_, n)| n) {
                pod_owners.extend(names.iter().cloned());
            }
        }

        // Every owner takes its new identity before any gives up its old one,
        // so an identity two owners swap keeps its number.
        let mut releases: Vec<u32> = Vec::new();
        for p in &regions {
            let new = self.prefix_refs.contains_key(p).then(|| IdentityKey {
                namespace_labels: None,
                pod_labels: Labels::new(),
                blocks: self.around(p.addr, p.len, &|b: &Block| b.covers_region(p)),
            });
            let old = match new {
                Some(k) => {
                    let id = self.acquire(pass, k);
                    self.region_id.insert(*p, id)
                }
                None => self.region_id.remove(p),
            };
            releases.extend(old);
            pass.prefixes.insert(*p);
        }
        for pk in &pod_owners {
            let pod = index.get(pk).map(|i| &world.pods[*i]);
            let mut ids = Vec::new();
            if let Some(pod) = pod {
                let ns_labels = world
                    .namespace(&pod.namespace)
                    .map(crate::world::Namespace::effective_labels)
                    .unwrap_or_default();
                for &ip in &pod.ips {
                    let key = IdentityKey {
                        namespace_labels: Some(ns_labels.clone()),
                        pod_labels: pod.labels.clone(),
                        blocks: self.around(ip, width(ip), &|b: &Block| b.contains(ip)),
                    };
                    ids.push((ip, self.acquire(pass, key)));
                }
            }
            let old = if ids.is_empty() {
                self.pod_ids.remove(pk).unwrap_or_default()
            } else {
                self.pod_ids.insert(pk.clone(), ids.clone()).unwrap_or_default()
            };
            pass.pod_ids |= old != ids;
            for (ip, id) in &old {
                releases.push(*id);
                if let Some(set) = self.hosts.get_mut(ip) {
                    set.remove(pk);
                    if set.is_empty() {
                        self.hosts.remove(ip);
                    }
                }
                pass.prefixes.insert(Prefix::host(*ip));
            }
            for (ip, _) in &ids {
                self.hosts.entry(*ip).or_default().insert(pk.clone());
                pass.prefixes.insert(Prefix::host(*ip));
            }
        }
        for id in releases {
            self.release(pass, id);
        }
    }

    /// Names of the blocks around `addr/len` that `f` accepts.
    fn around(&self, addr: IpAddr, len: u8, f: &dyn Fn(&Block) -> bool) -> BTreeSet<String> {
        (0..=len)
            .filter_map(|l| self.by_cidr.get(&Prefix::new(addr, l)))
            .flatten()
            .filter(|(b, _)| f(b))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// One more owner of `key`: its identity, allocated when new.
    fn acquire(&mut self, pass: &mut Pass, key: IdentityKey) -> u32 {
        if key.namespace_labels.is_none() && key.blocks.is_empty() {
            return ID_WORLD;
        }
        let ids = &mut self.out.identities;
        if let Some(id) = ids.by_key.get(&key).copied() {
            if let Some(r) = self.key_refs.get_mut(&id) {
                r.1 += 1;
            }
            return id;
        }
        let id = ids.next_id;
        ids.next_id += 1;
        for b in &key.blocks {
            ids.by_block.entry(b.clone()).or_default().insert(id);
            pass.blocks.insert(b.clone());
        }
        ids.by_key.insert(key.clone(), id);
        pass.keys.push(key.clone());
        self.key_refs.insert(id, (key, 1));
        id
    }

    /// One owner fewer of identity `id`: gone with the last.
    fn release(&mut self, pass: &mut Pass, id: u32) {
        let Some(r) = self.key_refs.get_mut(&id) else { return };
        r.1 -= 1;
        if r.1 > 0 {
            return;
        }
        let Some((key, _)) = self.key_refs.remove(&id) else {
            return;
        };
        let ids = &mut self.out.identities;
        ids.by_key.remove(&key);
        for b in &key.blocks {
            if let Some(set) = ids.by_block.get_mut(b) {
                set.remove(&id);
                if set.is_empty() {
                    ids.by_block.remove(b);
                }
            }
            pass.blocks.insert(b.clone());
        }
        pass.keys.push(key);
    }

    /// The endpoint of a pod after a change of the pod (or of its namespace).
    fn update_local(&mut self, pass: &mut Pass, world: &World, index: &HashMap<Name, usize>, pk: &Name) {
        let pod = index.get(pk).map(|i| &world.pods[*i]);
        pass.endpoints.insert(pk.clone());
        if let Some(old) = self.local.get(pk) {
            pass.ifnames.insert(old.ifname.clone());
        }
        match pod.and_then(|p| p.interface.clone().map(|i| (p, i))) {
            Some((pod, ifname)) => {
                let ep_id = match self.out.endpoint_ids.get(pk) {
                    Some(id) => *id,
                    None => {
                        let id = self.out.next_endpoint;
                        self.out.next_endpoint += 1;
                        self.out.endpoint_ids.insert(pk.clone(), id);
                        id
                    }
                };
                if let Some(old) = self.local.get(pk).map(|l| l.ifname.clone()) {
                    self.unclaim(&old, pk);
                }
                pass.ifnames.insert(ifname.clone());
                self.by_ifname.entry(ifname.clone()).or_default().insert(pk.clone());
                self.by_ep.insert(ep_id, pk.clone());
                self.local_by_ns.entry(pk.0.clone()).or_default().insert(pk.clone());
                self.local.insert(
                    pk.clone(),
                    Local {
                        ep_id,
                        ifname,
                        labels: pod.labels.clone(),
                        ports: pod.ports.clone(),
                    },
                );
            }
            None => {
                if let Some(old) = self.local.remove(pk) {
                    self.unclaim(&old.ifname, pk);
                    self.by_ep.remove(&old.ep_id);
                }
                self.out.endpoint_ids.remove(pk);
                if let Some(set) = self.local_by_ns.get_mut(&pk.0) {
                    set.remove(pk);
                    if set.is_empty() {
                        self.local_by_ns.remove(&pk.0);
                    }
                }
            }
        }
    }

    /// Pod `pk` no longer holds interface `ifname`.
    fn unclaim(&mut self, ifname: &str, pk: &Name) {
        if let Some(set) = self.by_ifname.get_mut(ifname) {
            set.remove(pk);
            if set.is_empty() {
                self.by_ifname.remove(ifname);
            }
        }
    }

    /// Adds or removes every contribution of policy `pid` to local pod `pk`.
    fn pair(&mut self, pass: &mut Pass, pid: u32, pk: &Name, add: bool) {
        let n = self
            .policies
            .get(&pid)
            .map_or([0, 0], |p| [p.rules[0].len(), p.rules[1].len()]);
        for (d, count) in n.into_iter().enumerate() {
            for i in 0..count {
                self.rule_at(pass, (pid, d, i), pk, add);
            }
        }
        pass.endpoints.insert(pk.clone());
    }

    /// Adds or removes every contribution of policy `pid` on every endpoint it selects.
    fn policy_everywhere(&mut self, pass: &mut Pass, pid: u32, add: bool) {
        let selected: Vec<Name> = self
            .policies
            .get(&pid)
            .map(|p| p.selected.iter().cloned().collect())
            .unwrap_or_default();
        for pk in selected {
            self.pair(pass, pid, &pk, add);
        }
    }

    /// Adds or removes one rule's contributions on every endpoint its policy selects, except `skip`'s pairs.
    fn rule_everywhere(&mut self, pass: &mut Pass, r: RuleRef, skip: &BTreeSet<(u32, Name)>, add: bool) {
        let selected: Vec<Name> = self
            .policies
            .get(&r.0)
            .map(|p| {
                p.selected
                    .iter()
                    .filter(|pk| !skip.contains(&(r.0, (*pk).clone())))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for pk in selected {
            self.rule_at(pass, r, &pk, add);
        }
    }

    /// Adds or removes one rule's contributions on one endpoint.
    fn rule_at(&mut self, pass: &mut Pass, (pid, d, i): RuleRef, pk: &Name, add: bool) {
        let Some(local) = self.local.get(pk) else { return };
        let Some(out) = self
            .policies
            .get(&pid)
            .and_then(|p| p.rules[d].get(i))
            .and_then(|r| r.out.as_ref())
        else {
            return;
        };
        let value = PolicyValue {
            policy_id: pid,
            rule: i as u16,
            flags: 0,
        };
        let (contrib, range_contrib) = (&mut self.contrib, &mut self.range_contrib);
        let (policy, ranges) = (&self.out.policy, &self.out.ranges);
        out.each_entry(local.ep_id, DIRS[d], &local.ports, |e| match e {
            Entry::Policy(k) => contribute(contrib, policy.get(&k).copied(), &mut pass.policy, k, value, add),
            Entry::Range(k) => contribute(range_contrib, ranges.get(&k).copied(), &mut pass.ranges, k, value, add),
        });
    }

    /// Forgets a policy (its contributions are already out); `keep_id` when it is compiled again.
    fn drop_policy(&mut self, pass: &mut Pass, pid: u32, keep_id: bool) {
        let Some(p) = self.policies.remove(&pid) else { return };
        for pk in &p.selected {
            remove_from(&mut self.ep_policies, pk, &pid);
            pass.endpoints.insert(pk.clone());
        }
        for (d, rules) in p.rules.iter().enumerate() {
            for (i, r) in rules.iter().enumerate() {
                self.unindex_rule((pid, d, i), r);
            }
        }
        remove_from(&mut self.policies_by_ns, &p.name.0, &pid);
        if !keep_id {
            self.out.policy_ids.remove(&p.name);
        }
    }

    /// Adds a compiled policy: its id (kept when it had one), indexes and selection.
    fn insert_policy(&mut self, pass: &mut Pass, mut p: Policy) {
        let pid = match self.out.policy_ids.get(&p.name) {
            Some(id) => *id,
            None => {
                let id = self.out.next_policy;
                self.out.next_policy += 1;
                id
            }
        };
        self.out.policy_ids.insert(p.name.clone(), pid);
        self.policies_by_ns.entry(p.name.0.clone()).or_default().insert(pid);
        for (d, rules) in p.rules.iter().enumerate() {
            for (i, r) in rules.iter().enumerate() {
                self.index_rule((pid, d, i), r);
            }
        }
        if p.has_spec {
            for pk in self.local_by_ns.get(&p.name.0).into_iter().flatten() {
                let Some(l) = self.local.get(pk) else { continue };
                if selector_matches(&p.selector, &l.labels).unwrap_or(true) {
                    p.selected.insert(pk.clone());
                }
            }
        }
        for pk in &p.selected {
            self.ep_policies.entry(pk.clone()).or_default().insert(pid);
            pass.endpoints.insert(pk.clone());
        }
        self.policies.insert(pid, p);
    }

    /// Replaces changed rules of a policy; `counts` are its new numbers of rules per direction.
    fn replace_rules(&mut self, pass: &mut Pass, pid: u32, rules: Vec<(usize, usize, Rule)>, counts: [usize; 2]) {
        let Some(mut p) = self.policies.remove(&pid) else {
            return;
        };
        for (d, i, rule) in rules {
            if let Some(old) = p.rules[d].get(i) {
                self.unindex_rule((pid, d, i), old);
            }
            self.index_rule((pid, d, i), &rule);
            if i < p.rules[d].len() {
                p.rules[d][i] = rule;
            } else {
                p.rules[d].resize_with(i, Rule::default);
                p.rules[d].push(rule);
            }
        }
        for (d, count) in counts.into_iter().enumerate() {
            for i in count..p.rules[d].len() {
                self.unindex_rule((pid, d, i), &p.rules[d][i]);
            }
            p.rules[d].truncate(count);
        }
        let flags = rule_flags(&p.rules);
        if flags != p.rule_flags {
            p.rule_flags = flags;
            pass.endpoints.extend(p.selected.iter().cloned());
        }
        self.policies.insert(pid, p);
    }

    /// Whether policy `pid` selects local pod `pk` now.
    fn reselect(&mut self, pass: &mut Pass, pid: u32, pk: &Name) {
        let Some(p) = self.policies.get_mut(&pid) else { return };
        let now = p.has_spec
            && self
                .local
                .get(pk)
                .is_some_and(|l| selector_matches(&p.selector, &l.labels).unwrap_or(true));
        let was = p.selected.contains(pk);
        if now && !was {
            p.selected.insert(pk.clone());
            self.ep_policies.entry(pk.clone()).or_default().insert(pid);
        } else if was && !now {
            p.selected.remove(pk);
            remove_from(&mut self.ep_policies, pk, &pid);
        }
        pass.endpoints.insert(pk.clone());
    }

    fn index_rule(&mut self, r: RuleRef, rule: &Rule) {
        let Some(out) = &rule.out else { return };
        if out.selects_pods {
            self.selector_rules.insert(r);
        }
        if out.named_egress {
            self.named_egress_rules.insert(r);
        }
        for b in &out.blocks {
            self.block_rules.entry(b.clone()).or_default().insert(r);
        }
    }

    fn unindex_rule(&mut self, r: RuleRef, rule: &Rule) {
        let Some(out) = &rule.out else { return };
        self.selector_rules.remove(&r);
        self.named_egress_rules.remove(&r);
        for b in &out.blocks {
            if let Some(set) = self.block_rules.get_mut(b) {
                set.remove(&r);
                if set.is_empty() {
                    self.block_rules.remove(b);
                }
            }
        }
    }

    /// Settles the entries the pass touched and returns what changed.
    fn finish(&mut self, mut pass: Pass) -> Diff {
        let mut diff = Diff::default();
        let touched: Vec<(PolicyKey, Option<PolicyValue>)> = pass.policy.drain().collect();
        for (k, before) in touched {
            let now = self.contrib.get(&k).and_then(|v| v.iter().min().copied());
            if settle(&mut self.out.policy, &mut diff.policy, &k, now) {
                self.hint(&mut pass, &k, before.is_some(), now.is_some());
            }
        }
        let touched: Vec<(RangeKey, Option<PolicyValue>)> = pass.ranges.drain().collect();
        for (k, before) in touched {
            let now = self.range_contrib.get(&k).and_then(|v| v.iter().min().copied());
            if settle(&mut self.out.ranges, &mut diff.ranges, &k, now) {
                self.hint(&mut pass, &k.data, before.is_some(), now.is_some());
            }
        }
        sort(&mut diff.policy);
        sort(&mut diff.ranges);

        for pk in &pass.endpoints {
            if let Some(l) = self.local.get(pk) {
                pass.ifnames.insert(l.ifname.clone());
            }
        }
        for ifname in &pass.ifnames {
            let now = self.by_ifname.get(ifname).and_then(BTreeSet::last).and_then(|pk| {
                let l = self.local.get(pk)?;
                Some(Endpoint {
                    ep_id: l.ep_id,
                    flags: self.flags(pk, l.ep_id),
                })
            });
            settle(&mut self.out.endpoints, &mut diff.endpoints, ifname, now);
        }

        for p in &pass.prefixes {
            let now = self.ipcache_value(p);
            settle(&mut self.out.identities.ipcache, &mut diff.ipcache, p, now);
        }
        diff
    }

    /// Counts an entry that appeared or vanished in its endpoint's lookup hints.
    fn hint(&mut self, pass: &mut Pass, k: &PolicyKey, before: bool, now: bool) {
        if before == now {
            return;
        }
        let h = self.hints.entry(k.ep_id).or_default();
        for slot in hint_slots(k).into_iter().flatten() {
            if now {
                h[slot] += 1;
            } else {
                h[slot] = h[slot].saturating_sub(1);
            }
        }
        if *h == [0; 4] {
            self.hints.remove(&k.ep_id);
        }
        if let Some(pk) = self.by_ep.get(&k.ep_id) {
            pass.endpoints.insert(pk.clone());
        }
    }

    /// Flags of a local pod's endpoint.
    fn flags(&self, pk: &Name, ep_id: u32) -> u32 {
        let mut f = 0;
        for pid in self.ep_policies.get(pk).into_iter().flatten() {
            let Some(p) = self.policies.get(pid) else { continue };
            if p.enforces[0] {
                f |= EP_ENFORCE_INGRESS | p.rule_flags[0];
            }
            if p.enforces[1] {
                f |= EP_ENFORCE_EGRESS | p.rule_flags[1];
            }
        }
        if let Some(h) = self.hints.get(&ep_id) {
            let bits = [
                EP_ANY_PEER_INGRESS,
                EP_ANY_PEER_EGRESS,
                EP_WILD_PORT_INGRESS,
                EP_WILD_PORT_EGRESS,
            ];
            for (n, bit) in h.iter().zip(bits) {
                if *n > 0 {
                    f |= bit;
                }
            }
        }
        f
    }

    /// The identity the ipcache gives a prefix: a pod's for its address, else the region's.
    fn ipcache_value(&self, p: &Prefix) -> Option<u32> {
        if p.len == width(p.addr)
            && let Some(pk) = self.hosts.get(&p.addr).and_then(|s| s.last())
            && let Some(id) = self
                .pod_ids
                .get(pk)
                .and_then(|v| v.iter().find(|(ip, _)| *ip == p.addr))
        {
            return Some(id.1);
        }
        self.region_id.get(p).copied()
    }

    /// Refreshes the warnings of the policies `touched`; the compilation's list
    /// is rebuilt, in the order of policy names, only when one changed.
    fn update_warnings(&mut self, touched: &BTreeSet<Name>) {
        let mut changed = false;
        for name in touched {
            let now = self
                .out
                .policy_ids
                .get(name)
                .and_then(|pid| self.policies.get(pid))
                .map(Policy::warnings)
                .unwrap_or_default();
            let before = self.warnings.get(name);
            if before.map_or(now.is_empty(), |b| *b == now) {
                continue;
            }
            changed = true;
            if now.is_empty() {
                self.warnings.remove(name);
            } else {
                self.warnings.insert(name.clone(), now);
            }
        }
        if changed {
            self.out.warnings = self.warnings.values().flatten().cloned().collect();
        }
        self.stats.warnings_changed = changed;
    }
}

impl Policy {
    /// What the compiler could not honour in this policy.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.rules.iter().flatten() {
            out.extend(r.block_warnings.iter().cloned());
            out.extend(r.out.iter().flat_map(|o| o.warnings.iter().cloned()));
        }
        if let Some(e) = &self.selector_error
            && !self.selected.is_empty()
        {
            out.push(format!(
                "NetworkPolicy {}/{}: podSelector: {e}",
                self.name.0, self.name.1
            ));
        }
        out
    }
}

/// Removes `v` from the set at `k`, and the set when it empties.
fn remove_from<K: Ord, V: Ord>(m: &mut BTreeMap<K, BTreeSet<V>>, k: &K, v: &V) {
    if let Some(set) = m.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            m.remove(k);
        }
    }
}

/// The peers of a compiled rule that select pods by labels (what a new or vanished identity may change).
fn selector_peers(out: Option<&RuleOut>, peers: Option<&Vec<NetworkPolicyPeer>>) -> Vec<NetworkPolicyPeer> {
    if !out.is_some_and(|o| o.selects_pods) {
        return Vec::new();
    }
    peers
        .into_iter()
        .flatten()
        .filter(|p| p.ip_block.is_none())
        .cloned()
        .collect()
}

/// Sets the entry `k` of `map` to `now` (`None`: removed) and records it in `d`; whether it changed.
fn settle<K: Ord + Clone, V: PartialEq + Copy>(
    map: &mut BTreeMap<K, V>,
    d: &mut MapDiff<K, V>,
    k: &K,
    now: Option<V>,
) -> bool {
    if map.get(k).copied() == now {
        return false;
    }
    match now {
        Some(v) => {
            map.insert(k.clone(), v);
            d.upsert.push((k.clone(), v));
        }
        None => {
            map.remove(k);
            d.delete.push(k.clone());
        }
    }
    true
}

/// Endpoint flags the compiled rules of each direction need.
fn rule_flags(rules: &[Vec<Rule>; 2]) -> [u32; 2] {
    [0, 1].map(|d| {
        rules[d]
            .iter()
            .filter_map(|r| r.out.as_ref())
            .fold(0, |f, o| f | o.flags)
    })
}

fn sort<K: Ord, V>(d: &mut MapDiff<K, V>) {
    d.upsert.sort_by(|a, b| a.0.cmp(&b.0));
    d.delete.sort();
}

/// Compiles a whole policy (parsed ipBlocks come from `pending`).
fn build_policy(
    np: &NetworkPolicy,
    name: &Name,
    pods: &dyn PodIdentities,
    ids: &Identities,
    pending: &mut Pending,
) -> Policy {
    let (ingress, egress) = policy_types(np);
    let enforces = [ingress, egress];
    let selector = np
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.clone())
        .unwrap_or_default();
    let selector_error = super::identity::selector_error(&selector);
    let mut rules: [Vec<Rule>; 2] = [Vec::new(), Vec::new()];
    if let Some(spec) = &np.spec {
        for (d, &dir) in DIRS.iter().enumerate() {
            let outs = if enforces[d] {
                super::entries::compile_rules(pods, ids, np, dir)
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                vec![None; rule_count(np, dir)]
            };
            for (i, out) in outs.into_iter().enumerate() {
                let (blocks, block_warnings) = pending
                    .remove(&(name.clone(), d, i))
                    .unwrap_or_else(|| rule_blocks(rule_parts(spec, dir, i).0, name));
                let selectors = selector_peers(out.as_ref(), rule_parts(spec, dir, i).0);
                rules[d].push(Rule {
                    blocks,
                    block_warnings,
                    out,
                    selectors,
                });
            }
        }
    }
    Policy {
        rule_flags: rule_flags(&rules),
        name: name.clone(),
        has_spec: np.spec.is_some(),
        enforces: if np.spec.is_some() { enforces } else { [false, false] },
        selector,
        selector_error,
        selected: BTreeSet::new(),
        rules,
    }
}

/// Pods whose identity or endpoint may differ between the worlds: added,
/// removed, changed, or in a namespace whose labels changed.
fn changed_pods(old: &World, new: &World) -> BTreeSet<Name> {
    let mut out = BTreeSet::new();
    let ns_labels = |w: &World| -> BTreeMap<String, Labels> {
        w.namespaces
            .iter()
            .map(|n| (n.name.clone(), n.effective_labels()))
            .collect()
    };
    let (a, b) = (ns_labels(old), ns_labels(new));
    let changed_ns: BTreeSet<&String> = a.keys().chain(b.keys()).filter(|n| a.get(*n) != b.get(*n)).collect();
    let same_order = old.pods.len() == new.pods.len()
        && old
            .pods
            .iter()
            .zip(&new.pods)
            .all(|(x, y)| x.namespace == y.namespace && x.name == y.name);
    if same_order {
        for (x, y) in old.pods.iter().zip(&new.pods) {
            if x != y || changed_ns.contains(&y.namespace) {
                out.insert(pod_name(y));
            }
        }
        return out;
    }
    let before: HashMap<Name, &Pod> = old.pods.iter().map(|p| (pod_name(p), p)).collect();
    let after: HashMap<Name, &Pod> = new.pods.iter().map(|p| (pod_name(p), p)).collect();
    for (k, p) in &after {
        if before.get(k) != Some(p) || changed_ns.contains(&p.namespace) {
            out.insert(k.clone());
        }
    }
    for (k, p) in &before {
        if !after.contains_key(k) || changed_ns.contains(&p.namespace) {
            out.insert(k.clone());
        }
    }
    out
}

/// The policies of the new world by name: those that changed, found while
/// comparing, and the others on demand (the index of every name is built at
/// most once, only when an unchanged policy must be recompiled).
struct NewPolicies<'a> {
    world: &'a World,
    known: HashMap<Name, &'a NetworkPolicy>,
    all: std::cell::OnceCell<HashMap<Name, &'a NetworkPolicy>>,
}

impl<'a> NewPolicies<'a> {
    fn get(&self, name: &Name) -> Option<&'a NetworkPolicy> {
        if let Some(np) = self.known.get(name) {
            return Some(np);
        }
        self.all
            .get_or_init(|| self.world.policies.iter().map(|p| (name_of(p), &**p)).collect())
            .get(name)
            .copied()
    }
}

/// Policies to recompile whole (added, removed, or a changed selector,
/// types or spec presence), single rules that changed in the others, and the
/// new world's policies by name. When both worlds list the same policies in
/// the same order (the usual case), they are compared pairwise.
fn changed_policies<'a>(
    old: &World,
    new: &'a World,
) -> (BTreeSet<Name>, BTreeSet<(Name, usize, usize)>, NewPolicies<'a>) {
    let (mut whole, mut rules) = (BTreeSet::new(), BTreeSet::new());
    let mut lookup = NewPolicies {
        world: new,
        known: HashMap::new(),
        all: std::cell::OnceCell::new(),
    };
    let same = |a: &NetworkPolicy, b: &NetworkPolicy| {
        a.metadata.name == b.metadata.name && a.metadata.namespace == b.metadata.namespace
    };
    let pairs: Vec<(&NetworkPolicy, &'a NetworkPolicy)> = if old.policies.len() == new.policies.len()
        && old
            .policies
            .iter()
            .zip(&new.policies)
            .all(|(a, b)| Arc::ptr_eq(a, b) || same(a, b))
    {
        // A policy the new world shares with the old one is the same object: a pointer compare.
        old.policies
            .iter()
            .zip(&new.policies)
            .filter(|(a, b)| !Arc::ptr_eq(a, b) && a.spec != b.spec)
            .map(|(a, b)| (&**a, &**b))
            .collect()
    } else {
        let all: HashMap<Name, &'a NetworkPolicy> = new.policies.iter().map(|p| (name_of(p), &**p)).collect();
        let old_by_name: HashMap<Name, &NetworkPolicy> = old.policies.iter().map(|p| (name_of(p), &**p)).collect();
        whole.extend(all.keys().filter(|n| !old_by_name.contains_key(*n)).cloned());
        whole.extend(old_by_name.keys().filter(|n| !all.contains_key(*n)).cloned());
        let pairs = old_by_name
            .iter()
            .filter_map(|(n, a)| all.get(n).map(|b| (*a, *b)))
            .filter(|(a, b)| a.spec != b.spec)
            .collect();
        let _ = lookup.all.set(all);
        pairs
    };
    for (a, b) in pairs {
        let name = name_of(b);
        lookup.known.insert(name.clone(), b);
        let (Some(sa), Some(sb)) = (&a.spec, &b.spec) else {
            whole.insert(name);
            continue;
        };
        if sa.pod_selector != sb.pod_selector || policy_types(a) != policy_types(b) {
            whole.insert(name);
            continue;
        }
        for (d, &dir) in DIRS.iter().enumerate() {
            for i in 0..rule_count(a, dir).max(rule_count(b, dir)) {
                // A rule without peers or ports and no rule at all read alike: compare the counts too.
                if (i < rule_count(a, dir), rule_parts(sa, dir, i)) != (i < rule_count(b, dir), rule_parts(sb, dir, i))
                {
                    rules.insert((name.clone(), d, i));
                }
            }
        }
    }
    (whole, rules, lookup)
}

#[cfg(test)]
mod tests;
