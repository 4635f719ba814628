//! Conntrack garbage collection: deletes the expired entries of `plinth_ct4` and `plinth_ct6`, hashes that never evict.
//!
//! The datapath keeps conntrack in preallocated hashes, one per family (an
//! insert is cheaper than an LRU's), so nothing leaves them unless deleted. The agent walks it
//! with `BPF_MAP_LOOKUP_BATCH`, picks the entries whose expiry time has
//! passed ([`expired`], pure) and deletes them with `BPF_MAP_DELETE_BATCH`.
//! [`next_interval`] makes the walk more frequent when it finds much to
//! delete or the table fills up, and rarer when it does not.

#![allow(
    unsafe_code,
    reason = "aya has no batch map operations: BPF_MAP_*_BATCH through the bpf syscall"
)]

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::time::Duration;

use crate::abi::{Ct6Key, CtKey, CtValue};

use super::{Datapath, LoadError};

/// The IPv4 conntrack map.
pub const CT4: &str = "plinth_ct4";
/// The IPv6 conntrack map.
pub const CT6: &str = "plinth_ct6";

/// What one collection did in one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries read.
    pub scanned: usize,
    /// Expired entries deleted.
    pub deleted: usize,
    /// The table's capacity.
    pub capacity: usize,
}

impl GcReport {
    /// Entries left after the collection.
    pub fn remaining(&self) -> usize {
        self.scanned.saturating_sub(self.deleted)
    }
}

/// What one collection did in both maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtGc {
    /// `plinth_ct4`.
    pub ct4: GcReport,
    /// `plinth_ct6`.
    pub ct6: GcReport,
}

impl CtGc {
    /// The gap before the next collection: the shorter of what either map asks for.
    pub fn next_interval(&self, current: Duration) -> Duration {
        next_interval(current, &self.ct4).min(next_interval(current, &self.ct6))
    }
}

/// The keys of `entries` whose expiry time is before `now` (`CLOCK_MONOTONIC`
/// ns, the clock of `bpf_ktime_get_ns`).
pub fn expired<'a, K: Copy + 'a>(entries: impl IntoIterator<Item = (&'a K, &'a CtValue)>, now: u64) -> Vec<K> {
    entries
        .into_iter()
        .filter(|(_, v)| v.expires_ns < now)
        .map(|(k, _)| *k)
        .collect()
}

/// Shortest and longest gap between two collections.
pub const GC_MIN: Duration = Duration::from_secs(1);
/// See [`GC_MIN`].
pub const GC_MAX: Duration = Duration::from_secs(60);

/// The gap before the next collection: halved when this one deleted more
/// than a quarter of what it read or left the table more than half full,
/// doubled when it deleted less than a twentieth; within [`GC_MIN`] and
/// [`GC_MAX`].
pub fn next_interval(current: Duration, r: &GcReport) -> Duration {
    let busy = r.deleted * 4 > r.scanned || r.remaining() * 2 > r.capacity;
    let idle = r.deleted * 20 < r.scanned.max(1);
    let next = if busy {
        current / 2
    } else if idle {
        current * 2
    } else {
        current
    };
    next.clamp(GC_MIN, GC_MAX)
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of the datapath's expiry times.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0),
        // Cannot fail for CLOCK_MONOTONIC; 0 collects nothing.
        Err(_) => 0,
    }
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BATCH: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<(), std::io::Error> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` whose pointers refer to live
    // buffers of `count` elements of the map's key and value sizes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn gc_err(name: &'static str) -> impl Fn(String) -> LoadError {
    move |reason| LoadError::Map { name, reason }
}

/// A conntrack key of either family.
trait Key: Copy {
    /// An all-zero key (buffer filler).
    const ZERO: Self;
}

impl Key for CtKey {
    const ZERO: Self = Self {
        ep_id: 0,
        saddr: [0; 4],
        daddr: [0; 4],
        sport: 0,
        dport: 0,
        proto: 0,
        dir: 0,
        pad: 0,
    };
}

impl Key for Ct6Key {
    const ZERO: Self = Self {
        ep_id: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        proto: 0,
        dir: 0,
        pad: 0,
    };
}

/// Reads every entry of the conntrack map `name` referred to by `fd`.
fn read_all<K: Key>(name: &'static str, fd: u32) -> Result<Vec<(K, CtValue)>, LoadError> {
    let zero_key = K::ZERO;
    let zero_val = CtValue {
        expires_ns: 0,
        last_event_ns: 0,
        policy_id: 0,
        rule: 0,
        flags: 0,
        pad: 0,
    };
    let mut keys = vec![zero_key; BATCH];
    let mut values = vec![zero_val; BATCH];
    let mut out = Vec::new();
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { std::ptr::from_ref(&token) as u64 },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(BATCH);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(gc_err(name)(format!("batch lookup: {e}"))),
        }
        token = next;
        first = false;
    }
}

/// Deletes `keys`; a key deleted meanwhile (by another collector) is skipped.
fn delete_all<K: Key>(name: &'static str, fd: u32, keys: &[K]) -> Result<usize, LoadError> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let n = (attr.count as usize).min(chunk.len());
        deleted += n;
        match r {
            Ok(()) => rest = &rest[n..],
            // The key at `n` is gone already: skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[(n + 1).min(rest.len())..],
            Err(e) => return Err(gc_err(name)(format!("batch delete: {e}"))),
        }
    }
    Ok(deleted)
}

impl Datapath {
    /// Deletes the conntrack entries of both families that expired before
    /// now. A flow whose entry expired and whose packet refreshed it between
    /// the read and the delete loses it: its next packet is decided by the
    /// rules again.
    pub fn ct_gc(&mut self) -> Result<CtGc, LoadError> {
        // The datapath's clock drifts from CLOCK_MONOTONIC as NTP slews the latter: re-measured first.
        if let Err(e) = self.resync_clock() {
            tracing::warn!(error = %e, "the datapath clock could not be re-measured; it keeps its last offset");
        }
        self.ct_gc_at(monotonic_ns())
    }

    /// [`Datapath::ct_gc`] with an explicit clock (tests).
    pub fn ct_gc_at(&mut self, now: u64) -> Result<CtGc, LoadError> {
        Ok(CtGc {
            ct4: self.collect::<CtKey>(CT4, now)?,
            ct6: self.collect::<Ct6Key>(CT6, now)?,
        })
    }

    fn collect<K: Key>(&self, name: &'static str, now: u64) -> Result<GcReport, LoadError> {
        let err = gc_err(name);
        let Some(aya::maps::Map::HashMap(data)) = self.ebpf_ref().map(name) else {
            return Err(err("missing, or not a hash".into()));
        };
        let capacity = data.info().map_err(|e| err(format!("map info: {e}")))?.max_entries() as usize;
        let fd = u32::try_from(data.fd().as_fd().as_raw_fd()).map_err(|e| err(format!("fd: {e}")))?;
        let entries = read_all::<K>(name, fd)?;
        let dead = expired(entries.iter().map(|(k, v)| (k, v)), now);
        let deleted = delete_all(name, fd, &dead)?;
        let report = GcReport {
            scanned: entries.len(),
            deleted,
            capacity,
        };
        tracing::debug!(
            map = name,
            scanned = report.scanned,
            deleted,
            capacity,
            "conntrack collected"
        );
        if report.remaining() >= capacity {
            tracing::error!(
                map = name,
                capacity,
                "map {name} is full of live flows: new flows are decided by the rules on every packet (ct-full)"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> CtKey {
        CtKey {
            ep_id: 1,
            saddr: [198, 18, 0, 1],
            daddr: [198, 18, 0, 2],
            sport: port.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            dir: 1,
            pad: 0,
        }
    }

    fn val(expires_ns: u64) -> CtValue {
        CtValue {
            expires_ns,
            last_event_ns: 0,
            policy_id: 1,
            rule: 0,
            flags: 0,
            pad: 0,
        }
    }

    #[test]
    fn only_entries_expired_before_now_are_collected() {
        let e = [(key(1), val(99)), (key(2), val(100)), (key(3), val(101))];
        assert_eq!(expired(e.iter().map(|(k, v)| (k, v)), 100), vec![key(1)]);
    }

    #[test]
    fn interval_shrinks_when_busy_and_grows_when_idle() {
        let s = Duration::from_secs(8);
        let busy = GcReport {
            scanned: 100,
            deleted: 50,
            capacity: 1000,
        };
        let full = GcReport {
            scanned: 900,
            deleted: 0,
            capacity: 1000,
        };
        let idle = GcReport {
            scanned: 100,
            deleted: 1,
            capacity: 1000,
        };
        assert_eq!(next_interval(s, &busy), Duration::from_secs(4));
        assert_eq!(next_interval(s, &full), Duration::from_secs(4));
        assert_eq!(next_interval(s, &idle), Duration::from_secs(16));
        assert_eq!(next_interval(GC_MIN, &busy), GC_MIN);
        assert_eq!(next_interval(GC_MAX, &idle), GC_MAX);
        // Both maps: the busier one decides; an empty one does not slow it down.
        let both = CtGc { ct4: idle, ct6: busy };
        assert_eq!(both.next_interval(s), Duration::from_secs(4));
        let v4_only = CtGc {
            ct4: busy,
            ct6: GcReport::default(),
        };
        assert_eq!(v4_only.next_interval(s), Duration::from_secs(4));
    }
}
