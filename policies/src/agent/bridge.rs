//! Finding a pod's host-side interface on a Linux bridge: the neighbor table gives its MAC, the bridge's forwarding database the port.
//!
//! Bridge-based CNIs (the `bridge` plugin, flannel's `cni0`, kubenet) give
//! the node one route for the whole pod subnet on the bridge, not a /32 per
//! pod, so [`super::routes::interface_for`] finds nothing. There, the pod's
//! address resolves to its MAC in the node's neighbor table
//! (`/proc/net/arp` for IPv4; for IPv6 an `AF_INET6` neighbor dump over
//! rtnetlink, as there is no procfs table), and the bridge's forwarding database
//! (an `AF_BRIDGE` neighbor dump over rtnetlink) names the port, the pod's
//! host-side veth, where that MAC was learned. Both are read in the calling
//! thread's network namespace. A pod the node never exchanged a packet with
//! has no neighbor entry yet (kubelet's probes usually make one); it stays
//! without an interface until the next resolution.

#![allow(
    unsafe_code,
    reason = "a netlink socket address for socket2, and bytes recv initialised"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;
const AF_BRIDGE: u8 = 7;
const AF_INET6: u8 = 10;
/// Neighbor states with a usable MAC: reachable, stale, delay, probe, permanent.
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// One entry of the IPv6 neighbor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor6 {
    /// The device the neighbor is on (for a bridged pod, the bridge).
    pub ifindex: u32,
    /// Its address.
    pub ip: Ipv6Addr,
    /// Its MAC.
    pub mac: Mac,
    /// `NUD_*` state.
    pub state: u16,
}

/// The MAC and device of a usable IPv6 neighbor entry for `ip`.
pub fn neighbor6_entry(table: &[Neighbor6], ip: Ipv6Addr) -> Option<(Mac, u32)> {
    table
        .iter()
        .find(|n| n.ip == ip && n.state & NUD_VALID != 0)
        .map(|n| (n.mac, n.ifindex))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one buffer of an rtnetlink `RTM_GETNEIGH` dump: its forwarding
/// entries, and whether the dump ended (`NLMSG_DONE`, or an error).
pub fn parse_fdb(buf: &[u8], out: &mut Vec<FdbEntry>) -> bool {
    parse_neigh(buf, AF_BRIDGE, |ifindex, _state, attrs| {
        if let (Some(mac), master) = (attrs.mac, attrs.master) {
            out.push(FdbEntry { ifindex, master, mac });
        }
    })
}

/// Parses one buffer of an rtnetlink `AF_INET6` `RTM_GETNEIGH` dump: its
/// entries with an address and a MAC, and whether the dump ended.
pub fn parse_neighbors6(buf: &[u8], out: &mut Vec<Neighbor6>) -> bool {
    parse_neigh(buf, AF_INET6, |ifindex, state, attrs| {
        if let (Some(mac), Some(ip)) = (attrs.mac, attrs.dst) {
            out.push(Neighbor6 {
                ifindex,
                ip,
                mac,
                state,
            });
        }
    })
}

/// The attributes of a neighbor message this module reads.
#[derive(Default)]
struct NeighAttrs {
    mac: Option<Mac>,
    master: Option<u32>,
    dst: Option<Ipv6Addr>,
}

/// Walks the `RTM_NEWNEIGH` messages of `family` in one dump buffer, calling
/// `each(ifindex, state, attributes)`; whether the dump ended.
fn parse_neigh(buf: &[u8], family: u8, mut each: impl FnMut(u32, u16, NeighAttrs)) -> bool {
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
            RTM_NEWNEIGH if len >= NLMSG_HDR + NDMSG && msg[NLMSG_HDR] == family => {
                let ifindex = u32n(msg, NLMSG_HDR + 4);
                let state = u16n(msg, NLMSG_HDR + 8);
                let mut attrs = NeighAttrs::default();
                let mut a = NLMSG_HDR + NDMSG;
                while a + 4 <= len {
                    let alen = u16n(msg, a) as usize;
                    if alen < 4 || a + alen > len {
                        break;
                    }
                    let data = &msg[a + 4..a + alen];
                    match u16n(msg, a + 2) {
                        NDA_LLADDR if data.len() == 6 => attrs.mac = data.try_into().ok(),
                        NDA_MASTER if data.len() == 4 => attrs.master = Some(u32n(data, 0)),
                        NDA_DST if data.len() == 16 => {
                            attrs.dst = <[u8; 16]>::try_from(data).ok().map(Ipv6Addr::from);
                        }
                        _ => {}
                    }
                    a += align4(alen);
                }
                each(ifindex, state, attrs);
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
    let mut out = Vec::new();
    dump_neigh(AF_BRIDGE, |b| parse_fdb(b, &mut out))?;
    Ok(out)
}

/// Dumps the IPv6 neighbor table of this thread's network namespace.
pub fn dump_neighbors6() -> std::io::Result<Vec<Neighbor6>> {
    let mut out = Vec::new();
    dump_neigh(AF_INET6, |b| parse_neighbors6(b, &mut out))?;
    Ok(out)
}

/// Sends an `RTM_GETNEIGH` dump request for `family` and feeds each buffer
/// of the answer to `parse` until it reports the end.
fn dump_neigh(family: u8, mut parse: impl FnMut(&[u8]) -> bool) -> std::io::Result<()> {
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
    req.extend_from_slice(&[family, 0, 0, 0]);
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
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 65536];
    loop {
        let n = s.recv(&mut buf)?;
        // SAFETY: recv initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        if n == 0 || parse(&bytes) {
            return Ok(());
        }
    }
}

/// The host-side interface of the pod with `ip` behind a bridge of this
/// thread's network namespace, if the node has a neighbor entry for it.
pub fn interface_for(ip: IpAddr) -> Option<String> {
    interfaces_for(&[ip]).pop().flatten()
}

/// [`interface_for`] of each address, reading the neighbor tables (the IPv6
/// one only when an address is IPv6), the forwarding database and the
/// interface names once for all of them (and not at all when no address has
/// a neighbor entry on a bridge).
pub fn interfaces_for(ips: &[IpAddr]) -> Vec<Option<String>> {
    let arp = if ips.iter().any(IpAddr::is_ipv4) {
        std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default()
    } else {
        String::new()
    };
    let ndp = if ips.iter().any(IpAddr::is_ipv6) {
        dump_neighbors6().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the IPv6 neighbor table");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let neighbors: Vec<Option<(Mac, u32)>> = ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(ip) => {
                let (mac, dev) = arp_entry(&arp, *ip)?;
                Some((mac, nix::net::if_::if_nametoindex(dev.as_str()).ok()?))
            }
            IpAddr::V6(ip) => neighbor6_entry(&ndp, *ip),
        })
        .collect();
    if neighbors.iter().all(Option::is_none) {
        return vec![None; ips.len()];
    }
    let fdb = match dump_fdb() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the bridge forwarding database");
            return vec![None; ips.len()];
        }
    };
    let Ok(names) = nix::net::if_::if_nameindex() else {
        return vec![None; ips.len()];
    };
    neighbors
        .iter()
        .map(|n| {
            let (mac, bridge) = n.as_ref()?;
            let port = port_of(&fdb, *bridge, mac)?;
            names
                .iter()
                .find(|i| i.index() == port)
                .map(|i| i.name().to_string_lossy().into_owned())
        })
        .collect()
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
        neigh_msg_of(AF_BRIDGE, ifindex, 0, None, mac, master)
    }

    fn neigh_msg_of(
        family: u8,
        ifindex: u32,
        state: u16,
        dst: Option<Ipv6Addr>,
        mac: Mac,
        master: Option<u32>,
    ) -> Vec<u8> {
        let mut attrs = Vec::new();
        if let Some(d) = dst {
            attrs.extend_from_slice(&20u16.to_ne_bytes());
            attrs.extend_from_slice(&NDA_DST.to_ne_bytes());
            attrs.extend_from_slice(&d.octets());
        }
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
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&state.to_ne_bytes());
        m.extend_from_slice(&[0; 2]);
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

    #[test]
    fn usable_ipv6_neighbors_give_the_mac_and_device() {
        let ip = |s: &str| s.parse::<Ipv6Addr>().expect("address");
        let pod = [2, 0, 0, 0, 0, 9];
        let mut buf = neigh_msg_of(AF_INET6, 3, 0x02, Some(ip("2001:2::10")), pod, None);
        buf.extend(neigh_msg_of(
            AF_INET6,
            3,
            0x01,
            Some(ip("2001:2::11")),
            [2, 0, 0, 0, 0, 8],
            None,
        ));
        buf.extend(neigh_msg_of(
            AF_INET6,
            3,
            0x04,
            Some(ip("2001:2::12")),
            [2, 0, 0, 0, 0, 7],
            None,
        ));
        // An IPv4 message in the same buffer is not ours.
        buf.extend(neigh_msg(5, [2, 0, 0, 0, 0, 5], Some(3)));
        let mut out = Vec::new();
        assert!(!parse_neighbors6(&buf, &mut out));
        assert_eq!(out.len(), 3);
        assert_eq!(neighbor6_entry(&out, ip("2001:2::10")), Some((pod, 3)), "reachable");
        assert_eq!(neighbor6_entry(&out, ip("2001:2::11")), None, "incomplete");
        assert_eq!(
            neighbor6_entry(&out, ip("2001:2::12")),
            Some(([2, 0, 0, 0, 0, 7], 3)),
            "stale"
        );
        assert_eq!(neighbor6_entry(&out, ip("2001:2::13")), None, "absent");
    }
}
