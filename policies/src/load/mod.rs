//! The loader: loads the BPF object with aya, pins maps and links under bpffs, writes only changed entries.
//!
//! Restart-safe: maps and tcx links are pinned under the pin directory
//! (default `/sys/fs/bpf/plinth/`). A new loader reuses the pinned maps,
//! swaps its program into the pinned links atomically, reads the maps back
//! and writes only what differs from the new compilation; established flows
//! keep their conntrack entries throughout.

pub mod attach;
pub mod clock;
pub mod ct_gc;
pub mod maps;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::{Ebpf, EbpfLoader};

pub use attach::AttachMode;
pub use maps::{ApplyReport, Capacity, Generation, MapState};

use crate::compile::{Compiled, Diff};

/// Default bpffs directory for pinned maps and links.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/plinth";

/// Loader settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// bpffs directory for pins; created when missing.
    pub pin_dir: PathBuf,
    /// Minimum gap between two events of one flow.
    pub event_interval: Duration,
    /// Conntrack lifetime of TCP flows.
    pub ct_lifetime_tcp: Duration,
    /// Conntrack lifetime of other flows.
    pub ct_lifetime_other: Duration,
    /// Conntrack lifetime after a TCP FIN or RST.
    pub ct_lifetime_close: Duration,
    /// Override of `plinth_policy` max entries (tests of map exhaustion).
    pub policy_max_entries: Option<u32>,
    /// Override of `plinth_ct4` and `plinth_ct6` max entries (tests of a full conntrack table).
    pub ct_max_entries: Option<u32>,
    /// How changes reach the maps.
    pub update: UpdateMode,
}

/// How `Datapath::apply` brings the maps in line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateMode {
    /// Rule-only changes of at most [`SWAP_ABOVE`] entries are written in
    /// place; anything else (identities, endpoints, large changes) fills a new
    /// generation and swaps it in with one write.
    #[default]
    Auto,
    /// Always write entry by entry in place (tests show why `Auto` swaps).
    InPlace,
    /// Always fill and swap a new generation.
    Swap,
}

/// Rule changes above this many entries go through a generation swap.
pub const SWAP_ABOVE: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            event_interval: Duration::from_secs(1),
            ct_lifetime_tcp: Duration::from_secs(6 * 3600),
            ct_lifetime_other: Duration::from_secs(60),
            ct_lifetime_close: Duration::from_secs(10),
            policy_max_entries: None,
            ct_max_entries: None,
            update: UpdateMode::Auto,
        }
    }
}

/// The datapath could not be loaded or updated.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The pin directory is not on a bpffs.
    #[error("{path} is not on a bpf filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs {
        /// Directory.
        path: PathBuf,
    },
    /// Creating the pin directory failed.
    #[error("cannot create pin directory {path}: {source}")]
    PinDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The object did not load (verifier, map creation, pinned map mismatch).
    #[error("loading the datapath object failed: {0}")]
    Object(#[from] aya::EbpfError),
    /// A program is missing or failed to load.
    #[error("program {name}: {reason}")]
    Program {
        /// Program.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// A map is missing or has the wrong type.
    #[error("map {name}: {reason}")]
    Map {
        /// Map.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// Attaching or detaching failed.
    #[error("interface {ifname}: {reason}")]
    Attach {
        /// Interface.
        ifname: String,
        /// What failed.
        reason: String,
    },
}

/// A loaded datapath: the object, what its maps hold, and the attached interfaces.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    state: MapState,
    /// The active generation's inner maps and its slot.
    generation: Generation,
    slot: u32,
    /// The verdict's clock (`plinth_clock`).
    clock: crate::abi::Clock,
    capacity: Capacity,
    update: UpdateMode,
    attach_mode: AttachMode,
    /// Interfaces (name, ifindex) this process attached to or took over.
    attached: std::collections::BTreeSet<(String, u32)>,
    /// Whether the last [`Datapath::apply`] wrote everything it was given:
    /// no full map, no missing interface, no error.
    settled: bool,
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

impl Datapath {
    /// Loads the object, reusing maps pinned under `cfg.pin_dir`.
    pub fn load(cfg: &Config) -> Result<Self, LoadError> {
        let parent = cfg.pin_dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) && !is_bpffs(&cfg.pin_dir) {
            return Err(LoadError::NotBpffs {
                path: cfg.pin_dir.clone(),
            });
        }
        for dir in [cfg.pin_dir.clone(), cfg.pin_dir.join("links")] {
            std::fs::create_dir_all(&dir).map_err(|source| LoadError::PinDir {
                path: dir.clone(),
                source,
            })?;
        }
        let event_interval = u64::try_from(cfg.event_interval.as_nanos()).unwrap_or(u64::MAX);
        let ct_tcp = u64::try_from(cfg.ct_lifetime_tcp.as_nanos()).unwrap_or(u64::MAX);
        let ct_other = u64::try_from(cfg.ct_lifetime_other.as_nanos()).unwrap_or(u64::MAX);
        let ct_close = u64::try_from(cfg.ct_lifetime_close.as_nanos()).unwrap_or(u64::MAX);
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(&cfg.pin_dir)
            .override_global("event_interval_ns", &event_interval, true)
            .override_global("ct_lifetime_tcp_ns", &ct_tcp, true)
            .override_global("ct_lifetime_other_ns", &ct_other, true)
            .override_global("ct_lifetime_close_ns", &ct_close, true);
        if let Some(n) = cfg.ct_max_entries {
            loader.map_max_entries(ct_gc::CT4, n);
            loader.map_max_entries(ct_gc::CT6, n);
        }
        let capacity = Capacity {
            policy: cfg.policy_max_entries.unwrap_or(Capacity::default().policy),
            ..Capacity::default()
        };
        let mut ebpf = loader.load(crate::abi::DATAPATH_OBJECT)?;
        for name in attach::PROGRAMS {
            let prog: &mut aya::programs::SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| LoadError::Program {
                    name,
                    reason: "not in the object".into(),
                })?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| LoadError::Program {
                    name,
                    reason: e.to_string(),
                })?;
            prog.load().map_err(|e| LoadError::Program {
                name,
                reason: format!("{e}: {e:?}"),
            })?;
        }
        // The verdict's clock, set before any program is attached.
        let probe: &mut aya::programs::SchedClassifier = ebpf
            .program_mut(clock::PROBE)
            .ok_or_else(|| LoadError::Program {
                name: clock::PROBE,
                reason: "not in the object".into(),
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| LoadError::Program {
                name: clock::PROBE,
                reason: e.to_string(),
            })?;
        probe.load().map_err(|e| LoadError::Program {
            name: clock::PROBE,
            reason: format!("{e}: {e:?}"),
        })?;
        let clock = clock::calibrate(&ebpf)?;
        clock::set(&mut ebpf, clock)?;
        // The generation the pinned maps hold, or a first, empty one.
        let slot = maps::active_slot(&ebpf)?;
        let generation = match Generation::open(&mut ebpf, slot, capacity)? {
            Some(g) => g,
            None => {
                let g = Generation::create(capacity)?;
                g.install(&mut ebpf, slot)?;
                maps::activate(&mut ebpf, slot)?;
                g
            }
        };
        let state = MapState::read(&generation)?;
        // Programs of earlier versions keep their own references; the pins go.
        for name in maps::RETIRED_PINS {
            let _ = std::fs::remove_file(cfg.pin_dir.join(name));
        }
        tracing::info!(
            pin_dir = %cfg.pin_dir.display(),
            ipcache = state.ipcache.len(),
            endpoints = state.endpoints.len(),
            policy = state.policy.len(),
            "datapath loaded"
        );
        Ok(Self {
            ebpf,
            pin_dir: cfg.pin_dir.clone(),
            state,
            generation,
            slot,
            clock,
            capacity,
            update: cfg.update,
            attach_mode: AttachMode::detect(),
            attached: std::collections::BTreeSet::new(),
            settled: false,
        })
    }

    /// What the maps hold now.
    pub fn state(&self) -> &MapState {
        &self.state
    }

    /// The verdict's clock as last measured: CLOCK_MONOTONIC ns =
    /// jiffies * `tick_ns` + `offset_ns`.
    pub fn clock(&self) -> crate::abi::Clock {
        self.clock
    }

    /// Writes a clock for the programs (tests: a clock that drifted).
    pub fn set_clock(&mut self, c: crate::abi::Clock) -> Result<(), LoadError> {
        clock::set(&mut self.ebpf, c)?;
        self.clock = c;
        Ok(())
    }

    /// Re-measures the clock's offset ([`clock::resync`]); [`Datapath::ct_gc`] does it first.
    pub fn resync_clock(&mut self) -> Result<crate::abi::Clock, LoadError> {
        self.clock = clock::resync(&mut self.ebpf, self.clock)?;
        Ok(self.clock)
    }

    /// The active generation (tests of the endpoint slots).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The active generation's inner maps.
    pub fn generation_mut(&mut self) -> &mut Generation {
        &mut self.generation
    }

    /// The aya object (maps for metrics and the ring buffer).
    pub fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The aya object, shared (test runs of its programs).
    pub fn ebpf_ref(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Makes the maps and attachments match `compiled`. A change of rules
    /// only, of at most [`SWAP_ABOVE`] entries, is written in place, only the
    /// entries that differ, rules before deletions; anything else fills a new
    /// generation of maps and activates it with one write, so no packet sees a
    /// half-applied change. Interface names resolve in the calling thread's
    /// network namespace.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, LoadError> {
        self.settled = false;
        let report = self.apply_all(compiled)?;
        self.settled = report.full_maps.is_empty() && report.missing_interfaces.is_empty();
        Ok(report)
    }

    /// Applies `diff`, the change from the compilation last applied to
    /// `compiled` (as [`crate::compile::Compiler::update`] returns it). A
    /// change of rules only, of at most [`SWAP_ABOVE`] entries, is written
    /// entry by entry, rules before deletions, without comparing whole maps:
    /// the cost follows the change, not the maps. Anything else, a diff
    /// that does not start from what the maps hold, or an endpoint whose
    /// interface is not the one attached (recreated under its name), goes
    /// through [`Datapath::apply`].
    pub fn apply_diff(&mut self, compiled: &Compiled, diff: &Diff) -> Result<ApplyReport, LoadError> {
        let small = diff.policy.len() + diff.ranges.len() <= SWAP_ABOVE;
        if !self.settled || self.update == UpdateMode::Swap || !small || !maps::diff_fits(&self.state, diff) {
            return self.apply(compiled);
        }
        // An interface recreated under its name (a pod's sandbox restarted) has a new index: without a program
        // or an endpoint entry yet, only a whole apply attaches it. One name lookup per endpoint.
        let resolved = attach::resolve_interfaces(compiled.endpoints.keys());
        if resolved.len() != self.attached.len() || !resolved.iter().all(|r| self.attached.contains(r)) {
            return self.apply(compiled);
        }
        self.settled = false;
        let report = maps::apply_entries(&mut self.generation, &mut self.state, diff)?;
        if !report.full_maps.is_empty() {
            // The whole apply marks the endpoints that cannot get their rules.
            return self.apply(compiled);
        }
        self.settled = true;
        Ok(report)
    }

    fn apply_all(&mut self, compiled: &Compiled) -> Result<ApplyReport, LoadError> {
        let resolved = attach::resolve_interfaces(compiled.endpoints.keys());
        let desired = MapState::from_compiled(compiled, &resolved);
        let swap = match self.update {
            UpdateMode::InPlace => false,
            UpdateMode::Swap => true,
            UpdateMode::Auto => !maps::in_place_ok(&self.state, &desired, SWAP_ABOVE),
        };
        // Endpoint entries are written before attaching (an attached interface
        // without an entry drops everything) and deleted after detaching.
        let mut report = if swap {
            self.swap_in(&desired)?
        } else {
            maps::apply(&mut self.generation, &mut self.state, &desired, maps::Phase::Upserts)?
        };
        // Links of vanished or recreated interfaces go first.
        for (ifname, ifindex) in attach::pinned_interfaces(&self.pin_dir) {
            if !resolved.iter().any(|(n, i)| *n == ifname && *i == ifindex) {
                attach::detach(&self.pin_dir, &ifname, ifindex)?;
                self.attached.remove(&(ifname, ifindex));
            }
        }
        for (ifname, ifindex) in &resolved {
            // Attached even when the endpoint entry could not be written:
            // without an entry the datapath drops everything (fail closed).
            let key = (ifname.clone(), *ifindex);
            if !self.attached.contains(&key) {
                attach::ensure(&mut self.ebpf, &self.pin_dir, ifname, *ifindex, self.attach_mode)?;
                self.attached.insert(key);
            }
        }
        let deletes = maps::apply(&mut self.generation, &mut self.state, &desired, maps::Phase::Deletes)?;
        report.merge(deletes);
        report.missing_interfaces = compiled
            .endpoints
            .keys()
            .filter(|n| !resolved.iter().any(|(r, _)| r == *n))
            .cloned()
            .collect();
        for name in &report.full_maps {
            tracing::error!(map = %name, "map {name} is full: affected endpoints fail closed");
        }
        Ok(report)
    }

    /// Fills a new generation with `desired` (plus the endpoints of interfaces
    /// still attached, removed after detaching), installs it in the inactive
    /// slot and activates it. On error the active generation is untouched.
    fn swap_in(&mut self, desired: &MapState) -> Result<ApplyReport, LoadError> {
        let mut want = desired.clone();
        for (ifindex, ep) in &self.state.endpoints {
            want.endpoints.entry(*ifindex).or_insert(*ep);
        }
        let mut generation = Generation::create(self.capacity)?;
        let mut written = MapState::default();
        let mut report = maps::apply(&mut generation, &mut written, &want, maps::Phase::Upserts)?;
        let next = self.slot ^ 1;
        generation.install(&mut self.ebpf, next)?;
        maps::activate(&mut self.ebpf, next)?;
        // The old generation stays installed in its slot (packets that read
        // the old slot finish on it) until the next swap replaces it.
        self.generation = generation;
        self.slot = next;
        self.state = written;
        report.swapped = true;
        Ok(report)
    }

    /// Detaches every interface and removes the pins (maps go with the last user).
    pub fn teardown(self) -> Result<(), LoadError> {
        for (ifname, ifindex) in attach::pinned_interfaces(&self.pin_dir) {
            attach::detach(&self.pin_dir, &ifname, ifindex)?;
        }
        let _ = std::fs::remove_dir(self.pin_dir.join("links"));
        if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
        Ok(())
    }
}
