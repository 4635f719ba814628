//! Map contents: generations of inner maps, read back from the kernel, derived from a compilation, and
//! brought in line entry by entry or replaced as a whole generation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, ArrayOfMaps, HashMap, MapData, MapError};

use super::LoadError;
use crate::abi::{
    EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, EP_FAIL_CLOSED, EP_PRESENT, EP_SLOTS, Endpoint, IpcacheValue, PolicyKey,
    PolicyValue,
};
use crate::compile::{Compiled, Diff, RangeKey, map_diff};
use crate::net::Prefix;

/// Logical map names (reports, metrics, log lines); each is an inner map of a generation.
pub const IPCACHE: &str = "plinth_ipcache";
/// IPv6 prefixes to identities.
pub const IPCACHE6: &str = "plinth_ipcache6";
/// Endpoints by ifindex.
pub const ENDPOINTS: &str = "plinth_endpts";
/// Endpoints by ifindex below [`EP_SLOTS`], one array slot each (a copy of
/// those entries of [`ENDPOINTS`]).
pub const ENDPOINT_SLOTS: &str = "plinth_endpts_slots";
/// Exact and wildcard rules.
pub const POLICY: &str = "plinth_policy";
/// endPort rules.
pub const RANGES: &str = "plinth_polrange";

/// The active generation (an array with one u32), pinned.
pub const GEN: &str = "plinth_gen";
/// Arrays of maps, one slot per generation, pinned: (outer map, logical name).
pub const GEN_ENDPOINTS: &str = "plinth_ep_gen";
/// Endpoint slots of each generation.
pub const GEN_ENDPOINT_SLOTS: &str = "plinth_eps_gen";
/// ipcache of each generation.
pub const GEN_IPCACHE: &str = "plinth_ipc_gen";
/// IPv6 ipcache of each generation.
pub const GEN_IPCACHE6: &str = "plinth_ipc6_gen";
/// Rules of each generation.
pub const GEN_POLICY: &str = "plinth_pol_gen";
/// endPort rules of each generation.
pub const GEN_RANGES: &str = "plinth_rng_gen";
/// Maps of earlier versions: pinned by name before generations existed, and
/// the LRU conntrack `plinth_ct` that `plinth_ct4` replaced.
pub const RETIRED_PINS: [&str; 5] = [IPCACHE, ENDPOINTS, POLICY, RANGES, "plinth_ct"];

/// `BPF_F_NO_PREALLOC`: inner maps allocate entries as they are written (gen_map.h).
const NO_PREALLOC: u32 = 1;

/// Sizes of the inner maps of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Endpoints.
    pub endpoints: u32,
    /// ipcache prefixes, per family.
    pub ipcache: u32,
    /// Rules.
    pub policy: u32,
    /// endPort prefixes.
    pub ranges: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            endpoints: 4096,
            ipcache: 262_144,
            policy: 262_144,
            ranges: 65_536,
        }
    }
}

/// The inner maps of one generation (gen_map.h).
pub struct Generation {
    endpoints: HashMap<MapData, u32, Endpoint>,
    /// The entries of `endpoints` below [`EP_SLOTS`], marked [`EP_PRESENT`]:
    /// what the datapath reads for them.
    endpoint_slots: Array<MapData, Endpoint>,
    ipcache: LpmTrie<MapData, [u8; 4], IpcacheValue>,
    ipcache6: LpmTrie<MapData, [u8; 16], IpcacheValue>,
    policy: HashMap<MapData, PolicyKey, PolicyValue>,
    ranges: LpmTrie<MapData, PolicyKey, PolicyValue>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("endpoints", &self.endpoints)
            .field("ipcache", &self.ipcache)
            .field("ipcache6", &self.ipcache6)
            .field("policy", &self.policy)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

fn outer<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, LoadError> {
    ebpf.map(name).ok_or(LoadError::Map {
        name,
        reason: "not in the object".into(),
    })
}

fn outer_get<V: aya::maps::FromMapData + aya::maps::InnerMap>(
    ebpf: &Ebpf,
    name: &'static str,
    slot: u32,
) -> Result<Option<V>, LoadError> {
    let m: ArrayOfMaps<&MapData, V> = ArrayOfMaps::try_from(outer(ebpf, name)?).map_err(map_err(name))?;
    match m.get(&slot, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn outer_set<V: aya::maps::InnerMap>(
    ebpf: &mut Ebpf,
    name: &'static str,
    slot: u32,
    inner: &V,
) -> Result<(), LoadError> {
    let mut m: ArrayOfMaps<&mut MapData, V> = ArrayOfMaps::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    m.set(slot, inner, 0).map_err(map_err(name))
}

impl Generation {
    /// Fresh, empty inner maps.
    pub fn create(cap: Capacity) -> Result<Self, LoadError> {
        Ok(Self {
            endpoints: HashMap::create(cap.endpoints, NO_PREALLOC).map_err(map_err(ENDPOINTS))?,
            endpoint_slots: Array::create(EP_SLOTS, 0).map_err(map_err(ENDPOINT_SLOTS))?,
            ipcache: LpmTrie::create(cap.ipcache, NO_PREALLOC).map_err(map_err(IPCACHE))?,
            ipcache6: LpmTrie::create(cap.ipcache, NO_PREALLOC).map_err(map_err(IPCACHE6))?,
            policy: HashMap::create(cap.policy, NO_PREALLOC).map_err(map_err(POLICY))?,
            ranges: LpmTrie::create(cap.ranges, NO_PREALLOC).map_err(map_err(RANGES))?,
        })
    }

    /// The generation installed in `slot`, if its four maps of every
    /// version are there. A generation of a version without IPv6 gets an
    /// empty IPv6 ipcache installed in its slot, so an upgrade keeps the
    /// generation (and its enforcement) instead of starting an empty one:
    /// that version's programs never read the new map, and until the next
    /// apply fills it, IPv6 peers are the world to the new programs. The
    /// endpoint slots are rebuilt from the endpoint hash (the record of what
    /// was written) and installed in one write: a generation of a version
    /// without slots gets them, and slots an interrupted write or an earlier
    /// version's update left behind are replaced.
    pub fn open(ebpf: &mut Ebpf, slot: u32, cap: Capacity) -> Result<Option<Self>, LoadError> {
        let endpoints = outer_get(ebpf, GEN_ENDPOINTS, slot)?;
        let ipcache = outer_get(ebpf, GEN_IPCACHE, slot)?;
        let policy = outer_get(ebpf, GEN_POLICY, slot)?;
        let ranges = outer_get(ebpf, GEN_RANGES, slot)?;
        let (Some(endpoints), Some(ipcache), Some(policy), Some(ranges)) = (endpoints, ipcache, policy, ranges) else {
            return Ok(None);
        };
        let ipcache6 = match outer_get(ebpf, GEN_IPCACHE6, slot)? {
            Some(m) => m,
            None => {
                let m = LpmTrie::create(cap.ipcache, NO_PREALLOC).map_err(map_err(IPCACHE6))?;
                outer_set(ebpf, GEN_IPCACHE6, slot, &m)?;
                m
            }
        };
        let mut g = Self {
            endpoints,
            endpoint_slots: Array::create(EP_SLOTS, 0).map_err(map_err(ENDPOINT_SLOTS))?,
            ipcache,
            ipcache6,
            policy,
            ranges,
        };
        g.fill_endpoint_slots()?;
        outer_set(ebpf, GEN_ENDPOINT_SLOTS, slot, &g.endpoint_slots)?;
        Ok(Some(g))
    }

    /// Writes every endpoint of the hash below [`EP_SLOTS`] into its slot.
    fn fill_endpoint_slots(&mut self) -> Result<(), LoadError> {
        let mut want = Vec::new();
        for kv in self.endpoints.iter() {
            let (ifindex, ep) = kv.map_err(map_err(ENDPOINTS))?;
            if ifindex < EP_SLOTS {
                want.push((ifindex, ep));
            }
        }
        for (ifindex, ep) in want {
            self.endpoint_slots
                .set(ifindex, slot_value(ep), 0)
                .map_err(map_err(ENDPOINT_SLOTS))?;
        }
        Ok(())
    }

    /// Writes an endpoint: into the hash, then (below [`EP_SLOTS`]) its slot.
    /// A full hash leaves the slot empty, so the endpoint fails closed as it
    /// would without one.
    fn endpoint_insert(&mut self, ifindex: u32, ep: Endpoint) -> Result<(), MapError> {
        if let Err(e) = self.endpoints.insert(ifindex, ep, 0) {
            if is_full(&e) && ifindex < EP_SLOTS {
                self.endpoint_slots.set(ifindex, EMPTY_SLOT, 0)?;
            }
            return Err(e);
        }
        if ifindex < EP_SLOTS {
            self.endpoint_slots.set(ifindex, slot_value(ep), 0)?;
        }
        Ok(())
    }

    /// Deletes an endpoint: its slot first, then the hash entry (the record).
    fn endpoint_remove(&mut self, ifindex: u32) -> Result<(), LoadError> {
        if ifindex < EP_SLOTS {
            self.endpoint_slots
                .set(ifindex, EMPTY_SLOT, 0)
                .map_err(map_err(ENDPOINT_SLOTS))?;
        }
        remove(&mut self.endpoints.remove(&ifindex), ENDPOINTS)
    }

    /// The endpoint the datapath finds in slot `ifindex` (tests of the slots).
    pub fn endpoint_slot(&self, ifindex: u32) -> Result<Option<Endpoint>, LoadError> {
        if ifindex >= EP_SLOTS {
            return Ok(None);
        }
        let v = self.endpoint_slots.get(&ifindex, 0).map_err(map_err(ENDPOINT_SLOTS))?;
        Ok((v.flags & EP_PRESENT != 0).then_some(Endpoint {
            ep_id: v.ep_id,
            flags: v.flags & !EP_PRESENT,
        }))
    }
}

/// An empty endpoint slot.
const EMPTY_SLOT: Endpoint = Endpoint { ep_id: 0, flags: 0 };

/// What an endpoint's slot holds.
fn slot_value(ep: Endpoint) -> Endpoint {
    Endpoint {
        ep_id: ep.ep_id,
        flags: ep.flags | EP_PRESENT,
    }
}

impl Generation {
    /// Installs this generation in `slot` (inactive: packets do not see it yet).
    pub fn install(&self, ebpf: &mut Ebpf, slot: u32) -> Result<(), LoadError> {
        outer_set(ebpf, GEN_ENDPOINTS, slot, &self.endpoints)?;
        outer_set(ebpf, GEN_ENDPOINT_SLOTS, slot, &self.endpoint_slots)?;
        outer_set(ebpf, GEN_IPCACHE, slot, &self.ipcache)?;
        outer_set(ebpf, GEN_IPCACHE6, slot, &self.ipcache6)?;
        outer_set(ebpf, GEN_POLICY, slot, &self.policy)?;
        outer_set(ebpf, GEN_RANGES, slot, &self.ranges)
    }

    /// The rule map (benchmarks time single writes with it).
    pub fn policy_mut(&mut self) -> &mut HashMap<MapData, PolicyKey, PolicyValue> {
        &mut self.policy
    }
}

/// The active generation's slot.
pub fn active_slot(ebpf: &Ebpf) -> Result<u32, LoadError> {
    let a: Array<&MapData, u32> = Array::try_from(outer(ebpf, GEN)?).map_err(map_err(GEN))?;
    a.get(&0, 0).map(|s| s & 1).map_err(map_err(GEN))
}

/// Makes `slot` the active generation: one write, seen by the next packet.
pub fn activate(ebpf: &mut Ebpf, slot: u32) -> Result<(), LoadError> {
    let mut a: Array<&mut MapData, u32> = Array::try_from(map(ebpf, GEN)?).map_err(map_err(GEN))?;
    a.set(0, slot, 0).map_err(map_err(GEN))
}

/// What the policy maps hold (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// `plinth_ipcache` (IPv4 prefixes) and `plinth_ipcache6` (IPv6 prefixes).
    pub ipcache: BTreeMap<Prefix, u32>,
    /// `plinth_endpts`, by ifindex.
    pub endpoints: BTreeMap<u32, Endpoint>,
    /// `plinth_policy`.
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
    /// `plinth_polrange`.
    pub ranges: BTreeMap<RangeKey, PolicyValue>,
}

/// What one `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries written, per map.
    pub writes: BTreeMap<&'static str, usize>,
    /// Entries deleted, per map.
    pub deletes: BTreeMap<&'static str, usize>,
    /// Maps that refused a write because they are full.
    pub full_maps: BTreeSet<&'static str>,
    /// Endpoints (ep ids) now failing closed.
    pub fail_closed: BTreeSet<u32>,
    /// Endpoint interfaces that do not exist (yet).
    pub missing_interfaces: Vec<String>,
    /// Whether a new generation replaced the maps as a whole (else entries were written in place).
    pub swapped: bool,
}

impl ApplyReport {
    /// Total writes and deletes.
    pub fn changes(&self) -> usize {
        self.writes.values().sum::<usize>() + self.deletes.values().sum::<usize>()
    }

    pub(super) fn merge(&mut self, other: Self) {
        for (k, v) in other.writes {
            *self.writes.entry(k).or_default() += v;
        }
        for (k, v) in other.deletes {
            *self.deletes.entry(k).or_default() += v;
        }
        self.full_maps.extend(other.full_maps);
        self.fail_closed.extend(other.fail_closed);
        self.swapped |= other.swapped;
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> LoadError {
    move |e| LoadError::Map {
        name,
        reason: e.to_string(),
    }
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, LoadError> {
    ebpf.map_mut(name).ok_or(LoadError::Map {
        name,
        reason: "not in the object".into(),
    })
}

fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

impl MapState {
    /// Reads every map of a generation.
    pub fn read(g: &Generation) -> Result<Self, LoadError> {
        let mut s = Self::default();
        for kv in g.ipcache.iter() {
            let (k, v) = kv.map_err(map_err(IPCACHE))?;
            s.ipcache.insert(
                Prefix::new(IpAddr::V4(Ipv4Addr::from(k.data())), k.prefix_len() as u8),
                v.identity,
            );
        }
        for kv in g.ipcache6.iter() {
            let (k, v) = kv.map_err(map_err(IPCACHE6))?;
            s.ipcache.insert(
                Prefix::new(IpAddr::V6(Ipv6Addr::from(k.data())), k.prefix_len() as u8),
                v.identity,
            );
        }
        for kv in g.endpoints.iter() {
            let (k, v) = kv.map_err(map_err(ENDPOINTS))?;
            s.endpoints.insert(k, v);
        }
        for kv in g.policy.iter() {
            let (k, v) = kv.map_err(map_err(POLICY))?;
            s.policy.insert(k, v);
        }
        for kv in g.ranges.iter() {
            let (k, v) = kv.map_err(map_err(RANGES))?;
            s.ranges.insert(
                RangeKey {
                    prefixlen: k.prefix_len(),
                    data: k.data(),
                },
                v,
            );
        }
        Ok(s)
    }

    /// The state a compilation asks for, with interfaces resolved to ifindexes.
    pub fn from_compiled(c: &Compiled, ifindexes: &[(String, u32)]) -> Self {
        let endpoints = ifindexes
            .iter()
            .filter_map(|(name, idx)| c.endpoints.get(name).map(|e| (*idx, *e)))
            .collect();
        Self {
            ipcache: c.identities.ipcache.clone(),
            endpoints,
            policy: c.policy.clone(),
            ranges: c.ranges.clone(),
        }
    }
}

/// Whether `desired` can be written in place into the generation holding
/// `state`: only rules change (ipcache and endpoints are equal), at most
/// `limit` entries. Then every intermediate state allows a packet only if the
/// old or the new rules allow it (additions first, deletions last, with the
/// same identities and endpoint flags throughout).
pub(super) fn in_place_ok(state: &MapState, desired: &MapState, limit: usize) -> bool {
    state.ipcache == desired.ipcache
        && state.endpoints == desired.endpoints
        && map_diff(&state.policy, &desired.policy).len() + map_diff(&state.ranges, &desired.ranges).len() <= limit
}

/// Which half of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Rules, then identities, then endpoints: allowances arrive before enforcement.
    Upserts,
    /// Endpoints, then rules, then identities: enforcement leaves first.
    Deletes,
}

/// Applies one phase of the difference between `state` and `desired`;
/// `state` tracks what the kernel holds after each successful write.
pub(super) fn apply(
    g: &mut Generation,
    state: &mut MapState,
    desired: &MapState,
    phase: Phase,
) -> Result<ApplyReport, LoadError> {
    let mut r = ApplyReport::default();
    match phase {
        Phase::Upserts => {
            let mut failed_eps = BTreeSet::new();
            let mut ipcache_full = false;
            {
                let d = map_diff(&state.policy, &desired.policy);
                let m = &mut g.policy;
                for (k, v) in d.upsert {
                    match m.insert(k, v, 0) {
                        Ok(()) => {
                            state.policy.insert(k, v);
                            *r.writes.entry(POLICY).or_default() += 1;
                        }
                        Err(e) if is_full(&e) => {
                            r.full_maps.insert(POLICY);
                            failed_eps.insert(k.ep_id);
                        }
                        Err(e) => return Err(map_err(POLICY)(e)),
                    }
                }
            }
            {
                let d = map_diff(&state.ranges, &desired.ranges);
                let m = &mut g.ranges;
                for (k, v) in d.upsert {
                    match m.insert(&Key::new(k.prefixlen, k.data), v, 0) {
                        Ok(()) => {
                            state.ranges.insert(k, v);
                            *r.writes.entry(RANGES).or_default() += 1;
                        }
                        Err(e) if is_full(&e) => {
                            r.full_maps.insert(RANGES);
                            failed_eps.insert(k.data.ep_id);
                        }
                        Err(e) => return Err(map_err(RANGES)(e)),
                    }
                }
            }
            {
                let d = map_diff(&state.ipcache, &desired.ipcache);
                for (p, id) in d.upsert {
                    let name = ipcache_name(&p);
                    match ipcache_insert(g, &p, id) {
                        Ok(()) => {
                            state.ipcache.insert(p, id);
                            *r.writes.entry(name).or_default() += 1;
                        }
                        Err(e) if is_full(&e) => {
                            r.full_maps.insert(name);
                            ipcache_full = true;
                        }
                        Err(e) => return Err(map_err(name)(e)),
                    }
                }
            }
            // Endpoints last, failing closed where a write above failed.
            let mut want = desired.endpoints.clone();
            for ep in want.values_mut() {
                let enforced = ep.flags & (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS) != 0;
                if failed_eps.contains(&ep.ep_id) || (ipcache_full && enforced) {
                    ep.flags |= EP_FAIL_CLOSED;
                    r.fail_closed.insert(ep.ep_id);
                }
            }
            let d = map_diff(&state.endpoints, &want);
            for (k, v) in d.upsert {
                match g.endpoint_insert(k, v) {
                    Ok(()) => {
                        state.endpoints.insert(k, v);
                        *r.writes.entry(ENDPOINTS).or_default() += 1;
                    }
                    // The interface gets attached anyway; without an entry the
                    // datapath drops everything on it.
                    Err(e) if is_full(&e) => {
                        r.full_maps.insert(ENDPOINTS);
                        r.fail_closed.insert(v.ep_id);
                    }
                    Err(e) => return Err(map_err(ENDPOINTS)(e)),
                }
            }
        }
        Phase::Deletes => {
            {
                let d = map_diff(&state.endpoints, &desired.endpoints);
                for k in d.delete {
                    g.endpoint_remove(k)?;
                    state.endpoints.remove(&k);
                    *r.deletes.entry(ENDPOINTS).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.policy, &desired.policy);
                let m = &mut g.policy;
                for k in d.delete {
                    remove(&mut m.remove(&k), POLICY)?;
                    state.policy.remove(&k);
                    *r.deletes.entry(POLICY).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.ranges, &desired.ranges);
                let m = &mut g.ranges;
                for k in d.delete {
                    remove(&mut m.remove(&Key::new(k.prefixlen, k.data)), RANGES)?;
                    state.ranges.remove(&k);
                    *r.deletes.entry(RANGES).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.ipcache, &desired.ipcache);
                for p in d.delete {
                    let name = ipcache_name(&p);
                    let mut res = match p.addr {
                        IpAddr::V4(a) => g.ipcache.remove(&Key::new(u32::from(p.len), a.octets())),
                        IpAddr::V6(a) => g.ipcache6.remove(&Key::new(u32::from(p.len), a.octets())),
                    };
                    remove(&mut res, name)?;
                    state.ipcache.remove(&p);
                    *r.deletes.entry(name).or_default() += 1;
                }
            }
        }
    }
    Ok(r)
}

/// Writes a change of rules only, entry by entry: writes first, deletions
/// last (so every intermediate state allows a packet only if the old or the
/// new rules allow it). Stops before deleting when a map is full, for the
/// caller to apply the whole compilation (which marks endpoints that fail
/// closed).
pub(super) fn apply_entries(g: &mut Generation, state: &mut MapState, diff: &Diff) -> Result<ApplyReport, LoadError> {
    let mut r = ApplyReport::default();
    for (k, v) in &diff.policy.upsert {
        match g.policy.insert(k, v, 0) {
            Ok(()) => {
                state.policy.insert(*k, *v);
                *r.writes.entry(POLICY).or_default() += 1;
            }
            Err(e) if is_full(&e) => {
                r.full_maps.insert(POLICY);
            }
            Err(e) => return Err(map_err(POLICY)(e)),
        }
    }
    for (k, v) in &diff.ranges.upsert {
        match g.ranges.insert(&Key::new(k.prefixlen, k.data), v, 0) {
            Ok(()) => {
                state.ranges.insert(*k, *v);
                *r.writes.entry(RANGES).or_default() += 1;
            }
            Err(e) if is_full(&e) => {
                r.full_maps.insert(RANGES);
            }
            Err(e) => return Err(map_err(RANGES)(e)),
        }
    }
    if !r.full_maps.is_empty() {
        return Ok(r);
    }
    for k in &diff.policy.delete {
        remove(&mut g.policy.remove(k), POLICY)?;
        state.policy.remove(k);
        *r.deletes.entry(POLICY).or_default() += 1;
    }
    for k in &diff.ranges.delete {
        remove(&mut g.ranges.remove(&Key::new(k.prefixlen, k.data)), RANGES)?;
        state.ranges.remove(k);
        *r.deletes.entry(RANGES).or_default() += 1;
    }
    Ok(r)
}

/// Whether `diff` changes rules only and starts from `state`: each entry it
/// writes differs from what `state` holds and each it deletes is there.
pub(super) fn diff_fits(state: &MapState, diff: &Diff) -> bool {
    diff.ipcache.is_empty()
        && diff.endpoints.is_empty()
        && diff.policy.upsert.iter().all(|(k, v)| state.policy.get(k) != Some(v))
        && diff.policy.delete.iter().all(|k| state.policy.contains_key(k))
        && diff.ranges.upsert.iter().all(|(k, v)| state.ranges.get(k) != Some(v))
        && diff.ranges.delete.iter().all(|k| state.ranges.contains_key(k))
}

/// The ipcache of a prefix's family.
fn ipcache_name(p: &Prefix) -> &'static str {
    if p.is_ipv6() { IPCACHE6 } else { IPCACHE }
}

/// Writes a prefix into the ipcache of its family.
fn ipcache_insert(g: &mut Generation, p: &Prefix, identity: u32) -> Result<(), MapError> {
    let v = IpcacheValue { identity, flags: 0 };
    match p.addr {
        IpAddr::V4(a) => g.ipcache.insert(&Key::new(u32::from(p.len), a.octets()), v, 0),
        IpAddr::V6(a) => g.ipcache6.insert(&Key::new(u32::from(p.len), a.octets()), v, 0),
    }
}

/// A delete of a missing key is fine: someone got there first.
fn remove(res: &mut Result<(), MapError>, name: &'static str) -> Result<(), LoadError> {
    match std::mem::replace(res, Ok(())) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}
