//! Finding a local pod's host-side interface from the host's routes (`/proc/net/route`, `/proc/net/ipv6_route`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host's routing tables, as text in procfs formats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTables {
    /// `/proc/net/route`.
    pub v4: String,
    /// `/proc/net/ipv6_route` (empty without IPv6).
    pub v6: String,
}

impl RouteTables {
    /// Reads the tables of the calling thread's network namespace; a table
    /// that cannot be read is empty (no pod found through it).
    pub fn read() -> Self {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap_or_default();
        Self {
            v4: read("route"),
            v6: read("ipv6_route"),
        }
    }

    /// The interface of the direct host route (/32 or /128) to `ip`.
    pub fn interface_for(&self, ip: IpAddr) -> Option<String> {
        match ip {
            IpAddr::V4(a) => interface_for(&self.v4, a),
            IpAddr::V6(a) => interface_for6(&self.v6, a),
        }
    }

    /// The interface of the first of `ips` with a direct host route.
    pub fn interface_for_any(&self, ips: &[IpAddr]) -> Option<String> {
        ips.iter().find_map(|ip| self.interface_for(*ip))
    }
}

/// The interface of the direct /32 route to `ip` in the text of
/// `/proc/net/route`: how routed CNIs (Calico, Cilium, kindnet's ptp) point
/// at a pod's host-side veth. Routes through a gateway, wider prefixes
/// (other nodes' pod ranges, bridges) and `lo` do not count.
pub fn interface_for(route_table: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from(ip);
    for line in route_table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Fields: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        // Addresses: the network-order bytes read as a native u32, in hex.
        let parse = |s: &str| {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
        };
        let (Some(dst), Some(gw), Some(mask)) = (parse(f[1]), parse(f[2]), parse(f[7])) else {
            continue;
        };
        if gw == 0 && mask == u32::MAX && ip == dst && f[0] != "lo" {
            return Some(f[0].to_owned());
        }
    }
    None
}

/// The interface of the direct /128 route to `ip` in the text of
/// `/proc/net/ipv6_route`, with the rules of [`interface_for`]: no next hop,
/// a full-length prefix, not `lo` (where the host's own addresses live).
pub fn interface_for6(route_table: &str, ip: Ipv6Addr) -> Option<String> {
    // Fields: dst dst_len src src_len next_hop metric refcnt use flags iface;
    // addresses as 32 hex digits in network order, lengths as 2 hex digits.
    let parse = |s: &str| u128::from_str_radix(s, 16).ok().filter(|_| s.len() == 32);
    for line in route_table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(dst), Ok(len), Some(via)) = (parse(f[0]), u8::from_str_radix(f[1], 16), parse(f[4])) else {
            continue;
        };
        if len == 128 && via == 0 && Ipv6Addr::from(dst) == ip && f[9] != "lo" {
            return Some(f[9].to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_host_routes_name_a_pod_interface() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            plh1\t0B0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            br0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            interface_for(table, Ipv4Addr::new(198, 18, 0, 11)).as_deref(),
            Some("plh1")
        );
        assert_eq!(interface_for(table, Ipv4Addr::new(198, 18, 0, 12)), None);
        assert_eq!(interface_for(table, Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn only_direct_ipv6_host_routes_name_a_pod_interface() {
        // A /128 to a pod, one through a gateway, the node's own address on
        // lo, a /48 and the default route.
        let table = "\
20010002000000000000000000000011 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001     plh1
20010002000000000000000000000012 80 00000000000000000000000000000000 00 20010002000000000000000000000001 00000400 00000001 00000000 00000003     eth0
20010002000000000000000000000013 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
20010002000000000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001      br0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
";
        let ip = |s: &str| s.parse::<Ipv6Addr>().expect("address");
        assert_eq!(interface_for6(table, ip("2001:2::11")).as_deref(), Some("plh1"));
        assert_eq!(interface_for6(table, ip("2001:2::12")), None, "via a gateway");
        assert_eq!(interface_for6(table, ip("2001:2::13")), None, "the node's own");
        assert_eq!(interface_for6(table, ip("2001:2::14")), None, "inside a wider prefix");
        let tables = RouteTables {
            v4: String::new(),
            v6: table.to_owned(),
        };
        assert_eq!(
            tables
                .interface_for_any(&[IpAddr::from([198, 18, 0, 11]), IpAddr::V6(ip("2001:2::11"))])
                .as_deref(),
            Some("plh1")
        );
    }
}
