//! The loader: loads the BPF object with aya, pins maps and links under bpffs, writes only changed entries.
//!
//! Restart-safe: maps and tcx links are pinned under the pin directory
//! (default `/sys/fs/bpf/plinth/`). A new loader reuses the pinned maps,
//! swaps its program into the pinned links atomically, reads the maps back
//! and writes only what differs from the new compilation; established flows
//! keep their conntrack entries throughout.

pub mod attach;
pub mod maps;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::{Ebpf, EbpfLoader};

pub use attach::AttachMode;
pub use maps::{ApplyReport, MapState};

use crate::compile::Compiled;

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            event_interval: Duration::from_secs(1),
            ct_lifetime_tcp: Duration::from_secs(6 * 3600),
            ct_lifetime_other: Duration::from_secs(60),
            ct_lifetime_close: Duration::from_secs(10),
            policy_max_entries: None,
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
    attach_mode: AttachMode,
    /// Interfaces (name, ifindex) this process attached to or took over.
    attached: std::collections::BTreeSet<(String, u32)>,
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
        if let Some(n) = cfg.policy_max_entries {
            loader.map_max_entries("plinth_policy", n);
        }
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
        let state = MapState::read(&ebpf)?;
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
            attach_mode: AttachMode::detect(),
            attached: std::collections::BTreeSet::new(),
        })
    }

    /// What the maps hold now.
    pub fn state(&self) -> &MapState {
        &self.state
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

    /// Makes the maps and attachments match `compiled`, writing only the
    /// entries that differ. Interface names resolve in the calling thread's
    /// network namespace.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, LoadError> {
        let resolved = attach::resolve_interfaces(compiled.endpoints.keys());
        let desired = MapState::from_compiled(compiled, &resolved);
        // Endpoint entries are written before attaching (an attached interface
        // without an entry drops everything) and deleted after detaching.
        let mut report = maps::apply(&mut self.ebpf, &mut self.state, &desired, maps::Phase::Upserts)?;
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
        let deletes = maps::apply(&mut self.ebpf, &mut self.state, &desired, maps::Phase::Deletes)?;
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
