//! Finding a pod's host-side interface on a Linux bridge: the neighbor table gives its MAC, the bridge's forwarding database the port.
//!
//! Bridge-based CNIs (the `bridge` plugin, flannel's `cni0`, kubenet) give
//! the node one route for the whole pod subnet on the bridge, not a /32 per
//! pod, so [`super::routes::interface_for`] finds nothing. There, the pod's
//! address resolves to its MAC in the node's neighbor table
//! (`/proc/net/arp`, on the bridge), and the bridge's forwarding database
//! (an `AF_BRIDGE` neighbor dump over rtnetlink) names the port, the pod's
//! host-side veth, where that MAC was learned. Both are read in the calling
//! thread's network namespace. A pod the node never exchanged a packet with
//! has no neighbor entry yet (kubelet's probes usually make one); it stays
//! without an interface until the next resolution.

#![allow(
    unsafe_code,
    reason = "a netlink socket address for socket2, and bytes recv initialised"
)]

use std::net::Ipv4Addr;

/// A MAC address.
pub type Mac = [u8; 6];

/// The MAC and device of a complete entry for `ip` in the text of `/proc/net/arp`.
pub fn arp_entry(arp: &str, ip: Ipv4Addr) -> Option<(Mac, String)> {
    // IP address, HW type, Flags, HW address, Mask, Device.
    arp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        // ATF_COM: the entry is complete (has a MAC).
        if flags & 0x2 == 0 {
            return None;
        }
        Some((parse_mac(f[3])?, f[5].to_owned()))
    })
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One entry of a bridge forwarding database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port the MAC was learned on (or the bridge itself).
    pub ifindex: u32,
    /// The bridge the port belongs to, when the kernel says.
    pub master: Option<u32>,
    /// The MAC.
    pub mac: Mac,
}

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NDMSG: usize = 12;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;
const AF_BRIDGE: u8 = 7;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one buffer of an rtnetlink `RTM_GETNEIGH` dump: its forwarding
/// entries, and whether the dump ended (`NLMSG_DONE`, or an error).
pub fn parse_fdb(buf: &[u8], out: &mut Vec<FdbEntry>) -> bool {
    let u16n = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32n = |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32n(buf, off) as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            return true;
        }
        let msg = &buf[off..off + len];
        match u16n(msg, 4) {
            NLMSG_DONE | NLMSG_ERROR => return true,
            RTM_NEWNEIGH if len >= NLMSG_HDR + NDMSG && msg[NLMSG_HDR] == AF_BRIDGE => {
                let ifindex = u32n(msg, NLMSG_HDR + 4);
                let (mut mac, mut master) = (None, None);
                let mut a = NLMSG_HDR + NDMSG;
                while a + 4 <= len {
                    let alen = u16n(msg, a) as usize;
                    if alen < 4 || a + alen > len {
                        break;
                    }
                    let data = &msg[a + 4..a + alen];
                    match u16n(msg, a + 2) {
                        NDA_LLADDR if data.len() == 6 => mac = data.try_into().ok(),
                        NDA_MASTER if data.len() == 4 => master = Some(u32n(data, 0)),
                        _ => {}
                    }
                    a += align4(alen);
                }
                if let Some(mac) = mac {
                    out.push(FdbEntry { ifindex, master, mac });
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    false
}

/// The port of `bridge` where `mac` was learned (entries of its ports name
/// it as their master; an entry without one is not known to be its port).
pub fn port_of(fdb: &[FdbEntry], bridge: u32, mac: &Mac) -> Option<u32> {
    fdb.iter()
        .find(|e| &e.mac == mac && e.ifindex != bridge && e.master == Some(bridge))
        .map(|e| e.ifindex)
}

/// Dumps the bridge forwarding databases of this thread's network namespace.
pub fn dump_fdb() -> std::io::Result<Vec<FdbEntry>> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(NLMSG_HDR + NDMSG);
    req.extend_from_slice(&((NLMSG_HDR + NDMSG) as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    // NLM_F_REQUEST | NLM_F_DUMP
    req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[AF_BRIDGE, 0, 0, 0]);
    req.extend_from_slice(&[0u8; 8]); // ifindex 0 (all), state, flags, type
    // The kernel: a zeroed sockaddr_nl.
    // SAFETY: sockaddr_nl is plain data; an all-zero value addresses the kernel.
    let (_, kernel) = unsafe {
        SockAddr::try_init(|storage, len| {
            let nl = storage.cast::<libc::sockaddr_nl>();
            (*nl).nl_family = libc::AF_NETLINK as libc::sa_family_t;
            *len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            Ok(())
        })?
    };
    s.send_to(&req, &kernel)?;
    let mut out = Vec::new();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 65536];
    loop {
        let n = s.recv(&mut buf)?;
        // SAFETY: recv initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        if n == 0 || parse_fdb(&bytes, &mut out) {
            return Ok(out);
        }
    }
}

/// The host-side interface of the pod with `ip` behind a bridge of this
/// thread's network namespace, if the node has a neighbor entry for it.
pub fn interface_for(ip: std::net::IpAddr) -> Option<String> {
    let std::net::IpAddr::V4(ip) = ip else {
        return None;
    };
    let arp = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    let (mac, dev) = arp_entry(&arp, ip)?;
    let bridge = nix::net::if_::if_nametoindex(dev.as_str()).ok()?;
    let fdb = match dump_fdb() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the bridge forwarding database");
            return None;
        }
    };
    let port = port_of(&fdb, bridge, &mac)?;
    let names = nix::net::if_::if_nameindex().ok()?;
    names
        .iter()
        .find(|i| i.index() == port)
        .map(|i| i.name().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_arp_entries_give_the_mac_and_device() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
            198.18.0.10      0x1         0x2         0a:1b:2c:3d:4e:5f     *        plb0\n\
            198.18.0.11      0x1         0x0         00:00:00:00:00:00     *        plb0\n";
        assert_eq!(
            arp_entry(arp, Ipv4Addr::new(198, 18, 0, 10)),
            Some(([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f], "plb0".to_owned()))
        );
        assert_eq!(arp_entry(arp, Ipv4Addr::new(198, 18, 0, 11)), None, "incomplete");
        assert_eq!(arp_entry(arp, Ipv4Addr::new(198, 18, 0, 12)), None, "absent");
    }

    fn neigh_msg(ifindex: u32, mac: Mac, master: Option<u32>) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&10u16.to_ne_bytes());
        attrs.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        attrs.extend_from_slice(&mac);
        attrs.extend_from_slice(&[0, 0]);
        if let Some(m) = master {
            attrs.extend_from_slice(&8u16.to_ne_bytes());
            attrs.extend_from_slice(&NDA_MASTER.to_ne_bytes());
            attrs.extend_from_slice(&m.to_ne_bytes());
        }
        let len = NLMSG_HDR + NDMSG + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[AF_BRIDGE, 0, 0, 0]);
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn the_port_where_a_mac_was_learned_is_found_in_a_netlink_dump() {
        let pod = [2, 0, 0, 0, 0, 9];
        let mut buf = neigh_msg(5, [2, 0, 0, 0, 0, 5], Some(3));
        buf.extend(neigh_msg(3, pod, None)); // an entry on the bridge itself
        buf.extend(neigh_msg(7, pod, Some(3)));
        let mut out = Vec::new();
        assert!(!parse_fdb(&buf, &mut out), "no NLMSG_DONE yet");
        assert_eq!(out.len(), 3);
        assert_eq!(port_of(&out, 3, &pod), Some(7));
        assert_eq!(port_of(&out, 4, &pod), None, "another bridge");
        let mut done = 20u32.to_ne_bytes().to_vec();
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        assert!(parse_fdb(&done, &mut out));
    }
}
