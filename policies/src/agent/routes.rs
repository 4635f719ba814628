//! Finding a local pod's host-side interface from the host's routes (`/proc/net/route`).

use std::net::Ipv4Addr;

/// The interface of the most specific route to `ip` in the text of
/// `/proc/net/route`, ignoring routes through a gateway and the default route.
pub fn interface_for(route_table: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from(ip);
    let mut best: Option<(u32, String)> = None;
    for line in route_table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Fields: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        // Addresses are hex in host byte order of a little-endian u32.
        let parse = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
        let (Some(dst), Some(gw), Some(mask)) = (parse(f[1]), parse(f[2]), parse(f[7])) else {
            continue;
        };
        if gw != 0 || mask == 0 || ip & mask != dst {
            continue;
        }
        if best.as_ref().is_none_or(|(m, _)| mask.count_ones() > m.count_ones()) {
            best = Some((mask, f[0].to_owned()));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_direct_route_wins() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            plh1\t0B0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            br0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            interface_for(table, Ipv4Addr::new(198, 18, 0, 11)).as_deref(),
            Some("plh1")
        );
        assert_eq!(
            interface_for(table, Ipv4Addr::new(198, 18, 0, 12)).as_deref(),
            Some("br0")
        );
        assert_eq!(interface_for(table, Ipv4Addr::new(10, 0, 0, 1)), None);
    }
}
