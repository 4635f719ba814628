//! Map contents: read back from the kernel, derived from a compilation, and brought in line entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError};

use super::LoadError;
use crate::abi::{
    EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, EP_FAIL_CLOSED, Endpoint, IpcacheValue, PolicyKey, PolicyValue,
};
use crate::compile::{Compiled, RangeKey, map_diff};
use crate::net::Prefix;

/// Map names, as pinned.
pub const IPCACHE: &str = "plinth_ipcache";
/// Endpoints by ifindex.
pub const ENDPOINTS: &str = "plinth_endpts";
/// Exact and wildcard rules.
pub const POLICY: &str = "plinth_policy";
/// endPort rules.
pub const RANGES: &str = "plinth_polrange";

/// What the policy maps hold (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// `plinth_ipcache`.
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
    /// Reads every policy map.
    pub fn read(ebpf: &Ebpf) -> Result<Self, LoadError> {
        let get = |name: &'static str| {
            ebpf.map(name).ok_or(LoadError::Map {
                name,
                reason: "not in the object".into(),
            })
        };
        let mut s = Self::default();
        let ipc: LpmTrie<&MapData, [u8; 4], IpcacheValue> =
            LpmTrie::try_from(get(IPCACHE)?).map_err(map_err(IPCACHE))?;
        for kv in ipc.iter() {
            let (k, v) = kv.map_err(map_err(IPCACHE))?;
            s.ipcache
                .insert(Prefix::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8), v.identity);
        }
        let eps: HashMap<&MapData, u32, Endpoint> = HashMap::try_from(get(ENDPOINTS)?).map_err(map_err(ENDPOINTS))?;
        for kv in eps.iter() {
            let (k, v) = kv.map_err(map_err(ENDPOINTS))?;
            s.endpoints.insert(k, v);
        }
        let pol: HashMap<&MapData, PolicyKey, PolicyValue> =
            HashMap::try_from(get(POLICY)?).map_err(map_err(POLICY))?;
        for kv in pol.iter() {
            let (k, v) = kv.map_err(map_err(POLICY))?;
            s.policy.insert(k, v);
        }
        let rng: LpmTrie<&MapData, PolicyKey, PolicyValue> =
            LpmTrie::try_from(get(RANGES)?).map_err(map_err(RANGES))?;
        for kv in rng.iter() {
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
    ebpf: &mut Ebpf,
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
                let mut m: HashMap<_, PolicyKey, PolicyValue> =
                    HashMap::try_from(map(ebpf, POLICY)?).map_err(map_err(POLICY))?;
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
                let mut m: LpmTrie<_, PolicyKey, PolicyValue> =
                    LpmTrie::try_from(map(ebpf, RANGES)?).map_err(map_err(RANGES))?;
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
                let mut m: LpmTrie<_, [u8; 4], IpcacheValue> =
                    LpmTrie::try_from(map(ebpf, IPCACHE)?).map_err(map_err(IPCACHE))?;
                for (p, id) in d.upsert {
                    match m.insert(
                        &Key::new(u32::from(p.len), p.addr.octets()),
                        IpcacheValue { identity: id, flags: 0 },
                        0,
                    ) {
                        Ok(()) => {
                            state.ipcache.insert(p, id);
                            *r.writes.entry(IPCACHE).or_default() += 1;
                        }
                        Err(e) if is_full(&e) => {
                            r.full_maps.insert(IPCACHE);
                            ipcache_full = true;
                        }
                        Err(e) => return Err(map_err(IPCACHE)(e)),
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
            let mut m: HashMap<_, u32, Endpoint> =
                HashMap::try_from(map(ebpf, ENDPOINTS)?).map_err(map_err(ENDPOINTS))?;
            for (k, v) in d.upsert {
                match m.insert(k, v, 0) {
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
                let mut m: HashMap<_, u32, Endpoint> =
                    HashMap::try_from(map(ebpf, ENDPOINTS)?).map_err(map_err(ENDPOINTS))?;
                for k in d.delete {
                    remove(&mut m.remove(&k), ENDPOINTS)?;
                    state.endpoints.remove(&k);
                    *r.deletes.entry(ENDPOINTS).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.policy, &desired.policy);
                let mut m: HashMap<_, PolicyKey, PolicyValue> =
                    HashMap::try_from(map(ebpf, POLICY)?).map_err(map_err(POLICY))?;
                for k in d.delete {
                    remove(&mut m.remove(&k), POLICY)?;
                    state.policy.remove(&k);
                    *r.deletes.entry(POLICY).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.ranges, &desired.ranges);
                let mut m: LpmTrie<_, PolicyKey, PolicyValue> =
                    LpmTrie::try_from(map(ebpf, RANGES)?).map_err(map_err(RANGES))?;
                for k in d.delete {
                    remove(&mut m.remove(&Key::new(k.prefixlen, k.data)), RANGES)?;
                    state.ranges.remove(&k);
                    *r.deletes.entry(RANGES).or_default() += 1;
                }
            }
            {
                let d = map_diff(&state.ipcache, &desired.ipcache);
                let mut m: LpmTrie<_, [u8; 4], IpcacheValue> =
                    LpmTrie::try_from(map(ebpf, IPCACHE)?).map_err(map_err(IPCACHE))?;
                for p in d.delete {
                    remove(&mut m.remove(&Key::new(u32::from(p.len), p.addr.octets())), IPCACHE)?;
                    state.ipcache.remove(&p);
                    *r.deletes.entry(IPCACHE).or_default() += 1;
                }
            }
        }
    }
    Ok(r)
}

/// A delete of a missing key is fine: someone got there first.
fn remove(res: &mut Result<(), MapError>, name: &'static str) -> Result<(), LoadError> {
    match std::mem::replace(res, Ok(())) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}
