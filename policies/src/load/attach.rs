//! Attaching the programs to host-side veths: tcx links pinned under bpffs, clsact as fallback.

use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

use super::LoadError;

/// The programs and where they go on the host-side veth.
pub const PROGRAMS: [&str; 2] = ["plinth_to_pod", "plinth_from_pod"];

/// How programs attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links (Linux 6.6+), pinned: they outlive the agent.
    Tcx,
    /// clsact qdisc filters (older kernels): they stay until removed.
    Clsact,
}

impl AttachMode {
    /// tcx where the kernel has it.
    pub fn detect() -> Self {
        use aya::util::KernelVersion;
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Clsact,
        }
    }
}

fn attach_type(prog: &str) -> TcAttachType {
    // tc egress of the host veth carries packets towards the pod.
    if prog == "plinth_to_pod" {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

/// `links/<prog>-<ifindex>-<ifname>`: the ifindex tells a link of a
/// recreated interface (same name, new index) from the live one. bpffs
/// refuses dots in names.
fn link_path(pin_dir: &Path, ifname: &str, ifindex: u32, prog: &str) -> PathBuf {
    pin_dir
        .join("links")
        .join(format!("{}-{ifindex}-{ifname}", prog.trim_start_matches("plinth_")))
}

/// ifindex of each interface that exists in this thread's network namespace.
pub fn resolve_interfaces<'a>(names: impl Iterator<Item = &'a String>) -> Vec<(String, u32)> {
    names
        .filter_map(|n| nix::net::if_::if_nametoindex(n.as_str()).ok().map(|i| (n.clone(), i)))
        .collect()
}

/// Interfaces (name, ifindex) with pinned links.
pub fn pinned_interfaces(pin_dir: &Path) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = std::fs::read_dir(pin_dir.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = PROGRAMS
                .iter()
                .find_map(|p| name.strip_prefix(&format!("{}-", p.trim_start_matches("plinth_"))))?;
            let (idx, ifname) = rest.split_once('-')?;
            Some((ifname.to_owned(), idx.parse().ok()?))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn err(ifname: &str, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Attach {
        ifname: ifname.to_owned(),
        reason: reason.to_string(),
    }
}

/// Attaches both programs to `ifname` unless attached; with tcx, a link pinned
/// by an earlier agent gets this agent's program swapped in atomically.
pub fn ensure(ebpf: &mut Ebpf, pin_dir: &Path, ifname: &str, ifindex: u32, mode: AttachMode) -> Result<(), LoadError> {
    for name in PROGRAMS {
        let path = link_path(pin_dir, ifname, ifindex, name);
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| err(ifname, format!("program {name} missing")))?
            .try_into()
            .map_err(|e| err(ifname, e))?;
        match mode {
            AttachMode::Tcx => {
                if path.exists() {
                    let pinned =
                        PinnedLink::from_pin(&path).map_err(|e| err(ifname, format!("{}: {e}", path.display())))?;
                    let link: SchedClassifierLink = FdLink::from(pinned).try_into().map_err(|e| err(ifname, e))?;
                    let id = prog
                        .attach_to_link(link)
                        .map_err(|e| err(ifname, format!("replace {name}: {e}")))?;
                    // The pin keeps the link; the handle may go.
                    let _ = prog.take_link(id).map_err(|e| err(ifname, e))?;
                    continue;
                }
                let id = prog
                    .attach_with_options(
                        ifname,
                        attach_type(name),
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| err(ifname, format!("tcx attach {name}: {e}")))?;
                let link = prog.take_link(id).map_err(|e| err(ifname, e))?;
                let fd: FdLink = link.try_into().map_err(|e| err(ifname, e))?;
                fd.pin(&path)
                    .map_err(|e| err(ifname, format!("pin {}: {e}", path.display())))?;
            }
            AttachMode::Clsact => {
                if path.exists() {
                    continue;
                }
                // EEXIST when the qdisc is there already.
                let _ = aya::programs::tc::qdisc_add_clsact(ifname);
                let id = prog
                    .attach(ifname, attach_type(name))
                    .map_err(|e| err(ifname, format!("clsact attach {name}: {e}")))?;
                let link = prog.take_link(id).map_err(|e| err(ifname, e))?;
                // Netlink filters persist without a process; forget the handle
                // so dropping it does not detach, and mark the interface.
                std::mem::forget(link);
                std::fs::write(&path, b"").map_err(|e| err(ifname, e))?;
            }
        }
    }
    Ok(())
}

/// Detaches both programs from `ifname` (index `ifindex`) and removes the pins.
pub fn detach(pin_dir: &Path, ifname: &str, ifindex: u32) -> Result<(), LoadError> {
    for name in PROGRAMS {
        let path = link_path(pin_dir, ifname, ifindex, name);
        if !path.exists() {
            continue;
        }
        match PinnedLink::from_pin(&path) {
            Ok(pinned) => {
                // Unpinning and dropping the last reference detaches it.
                let link = pinned.unpin().map_err(|e| err(ifname, e))?;
                drop(link);
            }
            Err(_) => {
                // clsact marker or a vanished interface.
                let _ = aya::programs::tc::qdisc_detach_program(ifname, attach_type(name), name);
                std::fs::remove_file(&path).map_err(|e| err(ifname, e))?;
            }
        }
    }
    Ok(())
}
