//! Finding a local pod's host-side interface from the host's routes (`/proc/net/route`).

use std::net::Ipv4Addr;

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
}
