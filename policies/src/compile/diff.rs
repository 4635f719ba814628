//! The difference of two compilations: only the map entries that changed.

use std::collections::BTreeMap;

use super::Compiled;
use super::entries::RangeKey;
use crate::abi::{Endpoint, PolicyKey, PolicyValue};
use crate::net::Prefix;

/// Writes and deletes for one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiff<K, V> {
    /// Entries to create or overwrite.
    pub upsert: Vec<(K, V)>,
    /// Keys to delete.
    pub delete: Vec<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        Self {
            upsert: Vec::new(),
            delete: Vec::new(),
        }
    }
}

impl<K, V> MapDiff<K, V> {
    /// Number of writes and deletes.
    pub fn len(&self) -> usize {
        self.upsert.len() + self.delete.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Changes from one compilation to the next, per map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// `plinth_ipcache`.
    pub ipcache: MapDiff<Prefix, u32>,
    /// `plinth_endpts`, by interface name.
    pub endpoints: MapDiff<String, Endpoint>,
    /// `plinth_policy`.
    pub policy: MapDiff<PolicyKey, PolicyValue>,
    /// `plinth_polrange`.
    pub ranges: MapDiff<RangeKey, PolicyValue>,
}

impl Diff {
    /// Total writes and deletes.
    pub fn len(&self) -> usize {
        self.ipcache.len() + self.endpoints.len() + self.policy.len() + self.ranges.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Entries of `new` that differ from `old`, and keys only `old` has.
///
/// One merge walk over both sorted maps: linear, without lookups (a
/// 10,000-entry map diffs in tens of microseconds).
pub fn map_diff<K: Ord + Clone, V: PartialEq + Clone>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> MapDiff<K, V> {
    use std::cmp::Ordering;
    let mut d = MapDiff::default();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((ok, _)), None) => {
                d.delete.push((*ok).clone());
                o.next();
            }
            (None, Some((nk, nv))) => {
                d.upsert.push(((*nk).clone(), (*nv).clone()));
                n.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                Ordering::Less => {
                    d.delete.push((*ok).clone());
                    o.next();
                }
                Ordering::Greater => {
                    d.upsert.push(((*nk).clone(), (*nv).clone()));
                    n.next();
                }
                Ordering::Equal => {
                    if ov != nv {
                        d.upsert.push(((*nk).clone(), (*nv).clone()));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    d
}

/// The changes that turn the maps of `old` into those of `new`.
pub fn diff(old: &Compiled, new: &Compiled) -> Diff {
    Diff {
        ipcache: map_diff(&old.identities.ipcache, &new.identities.ipcache),
        endpoints: map_diff(&old.endpoints, &new.endpoints),
        policy: map_diff(&old.policy, &new.policy),
        ranges: map_diff(&old.ranges, &new.ranges),
    }
}
