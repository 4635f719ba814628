//! Flow events as users see them: decoded, named, filtered, printed (`plinth flows`).
//!
//! The agent turns each ring buffer record ([`crate::abi::FlowEvent`]) into a
//! [`Flow`] and serves them as JSON lines; see `policies/README.md`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::abi::{self, FlowEvent};

/// Verdict reason names, by code (`bpf/lib/drop_reasons.h`).
pub fn reason_name(code: u8) -> &'static str {
    match code {
        1 => "allowed-by-policy",
        2 => "no-policy",
        3 => "established",
        4 => "reply",
        5 => "unmanaged",
        6 => "non-ip",
        7 => "icmpv6-neighbour-discovery",
        8 => "related",
        16 => "policy-denied",
        17 => "fail-closed-map-full",
        18 => "unsupported-l3",
        19 => "fragment",
        20 => "malformed",
        32 => "ct-insert-failed",
        33 => "events-lost",
        34 => "ct-full",
        _ => "unknown",
    }
}

/// Every reason code, for metrics.
pub const REASON_CODES: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 18, 19, 20, 32, 33, 34];

/// Protocol name of an IP protocol number.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".to_owned(),
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        58 => "ICMPv6".to_owned(),
        132 => "SCTP".to_owned(),
        n => n.to_string(),
    }
}

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEnd {
    /// Address, IPv4 or IPv6.
    pub ip: IpAddr,
    /// Port (0 without ports).
    pub port: u16,
    /// Namespace of the pod with this address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod with this address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A flow verdict, as `plinth flows` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Kernel monotonic time of the packet, ns.
    pub time_ns: u64,
    /// Client side of the packet.
    pub source: FlowEnd,
    /// Server side of the packet.
    pub destination: FlowEnd,
    /// `TCP`, `UDP`, `SCTP`, `ICMP` or a number.
    pub protocol: String,
    /// `ingress` or `egress`, seen from the local pod.
    pub direction: String,
    /// `allowed` or `denied`.
    pub verdict: String,
    /// Reason name (`policy-denied`, `allowed-by-policy`, ...).
    pub reason: String,
    /// Deciding policy, `ns/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Deciding rule, e.g. `ingress[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Identity of the remote address (0 when not looked up).
    pub peer_identity: u32,
    /// Interface index the packet was seen on.
    pub ifindex: u32,
    /// Allowed but not remembered: conntrack is full, so each packet of the
    /// flow is decided by the rules again and its replies may be denied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
}

impl Flow {
    /// Names an event; `pod_of` finds the pod of an address, `policy_of` the
    /// name of a policy id.
    pub fn from_event(
        e: &FlowEvent,
        pod_of: impl Fn(IpAddr) -> Option<(String, String)>,
        policy_of: impl Fn(u32) -> Option<String>,
    ) -> Self {
        let end = |ip: IpAddr, port: u16| {
            let pod = pod_of(ip);
            FlowEnd {
                ip,
                port: u16::from_be(port),
                namespace: pod.as_ref().map(|p| p.0.clone()),
                pod: pod.map(|p| p.1),
            }
        };
        let direction = if e.dir == abi::DIR_INGRESS { "ingress" } else { "egress" };
        let policy = (e.policy_id != 0).then(|| policy_of(e.policy_id)).flatten();
        Self {
            time_ns: e.ts_ns,
            source: end(e.source(), e.sport),
            destination: end(e.destination(), e.dport),
            protocol: proto_name(e.proto),
            direction: direction.to_owned(),
            verdict: if e.verdict == abi::VERDICT_ALLOWED {
                "allowed"
            } else {
                "denied"
            }
            .to_owned(),
            reason: reason_name(e.reason).to_owned(),
            rule: policy.as_ref().map(|_| format!("{direction}[{}]", e.rule)),
            policy,
            peer_identity: e.peer_id,
            ifindex: e.ifindex,
            untracked: e.flags & abi::EVENT_UNTRACKED != 0,
        }
    }

    /// One line of text, like `hubble observe`: `ns/pod(ip):port`, or
    /// `ip:port` (`[ip]:port` for IPv6) for an address outside the pods.
    pub fn to_text(&self) -> String {
        let end = |e: &FlowEnd| match (&e.namespace, &e.pod, e.ip) {
            (Some(ns), Some(p), _) => format!("{ns}/{p}({}):{}", e.ip, e.port),
            (_, _, IpAddr::V6(ip)) => format!("[{ip}]:{}", e.port),
            (_, _, IpAddr::V4(ip)) => format!("{ip}:{}", e.port),
        };
        let by = match (&self.policy, &self.rule) {
            (Some(p), Some(r)) => format!(" by {p} {r}"),
            _ => String::new(),
        };
        let untracked = if self.untracked {
            " [untracked: conntrack full]"
        } else {
            ""
        };
        format!(
            "{} -> {} {} {} {} ({}){by}{untracked}",
            end(&self.source),
            end(&self.destination),
            self.protocol,
            self.direction,
            self.verdict.to_uppercase(),
            self.reason
        )
    }
}

/// Which flows a client wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// `ns/pod` or `pod`: either end matches.
    #[serde(default)]
    pub pod: Option<String>,
    /// Either end in this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `allowed` or `denied`.
    #[serde(default)]
    pub verdict: Option<String>,
}

impl FlowFilter {
    /// Whether the flow passes the filter.
    pub fn matches(&self, f: &Flow) -> bool {
        let ends = [&f.source, &f.destination];
        let pod_ok = self.pod.as_ref().is_none_or(|want| {
            ends.iter().any(|e| match (&e.namespace, &e.pod, want.split_once('/')) {
                (Some(ns), Some(p), Some((wns, wp))) => ns == wns && p == wp,
                (_, Some(p), None) => p == want,
                _ => false,
            })
        });
        let ns_ok = self
            .namespace
            .as_ref()
            .is_none_or(|want| ends.iter().any(|e| e.namespace.as_ref() == Some(want)));
        let verdict_ok = self.verdict.as_ref().is_none_or(|v| v.eq_ignore_ascii_case(&f.verdict));
        pod_ok && ns_ok && verdict_ok
    }
}

/// Default socket where the agent serves flows.
pub const DEFAULT_SOCKET: &str = "/run/plinth/flows.sock";

/// Follows the agent's flows: sends `filter`, then calls `on_flow` for each
/// flow until it returns `false` or the agent closes the socket.
pub fn follow(
    socket: &std::path::Path,
    filter: &FlowFilter,
    mut on_flow: impl FnMut(Flow) -> bool,
) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let mut line = serde_json::to_string(filter).map_err(std::io::Error::other)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    for line in std::io::BufReader::new(s).lines() {
        let line = line?;
        match serde_json::from_str::<Flow>(&line) {
            Ok(f) => {
                if !on_flow(f) {
                    break;
                }
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    fn event() -> FlowEvent {
        FlowEvent {
            ts_ns: 5,
            saddr: v4([198, 18, 0, 10]),
            daddr: v4([198, 18, 0, 11]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            ep_id: 1,
            ifindex: 7,
            peer_id: 300,
            policy_id: 4,
            rule: 1,
            proto: 6,
            dir: abi::DIR_INGRESS,
            verdict: abi::VERDICT_ALLOWED,
            reason: 1,
            flags: 0,
            family: abi::FAMILY_IPV4,
            pad: [0; 4],
        }
    }

    #[test]
    fn an_untracked_flow_says_so_in_text_and_json() {
        let mut e = event();
        e.flags = abi::EVENT_UNTRACKED;
        let f = Flow::from_event(&e, |_| None, |_| None);
        assert!(f.untracked);
        assert!(f.to_text().ends_with("[untracked: conntrack full]"), "{}", f.to_text());
        let json = serde_json::to_string(&f).expect("json");
        assert!(json.contains("\"untracked\":true"), "{json}");
        let plain = Flow::from_event(&event(), |_| None, |_| None);
        assert!(!serde_json::to_string(&plain).expect("json").contains("untracked"));
    }

    #[test]
    fn flow_names_pods_policy_and_rule() {
        let f = Flow::from_event(
            &event(),
            |ip| (ip == IpAddr::from([198, 18, 0, 11])).then(|| ("x".to_owned(), "b".to_owned())),
            |id| (id == 4).then(|| "x/allow-web".to_owned()),
        );
        assert_eq!(
            f.to_text(),
            "198.18.0.10:40000 -> x/b(198.18.0.11):80 TCP ingress ALLOWED (allowed-by-policy) by x/allow-web ingress[1]"
        );
        let only_denied = FlowFilter {
            verdict: Some("denied".into()),
            ..Default::default()
        };
        assert!(!only_denied.matches(&f));
        let pod_b = FlowFilter {
            pod: Some("x/b".into()),
            ..Default::default()
        };
        assert!(pod_b.matches(&f));
        let ns_y = FlowFilter {
            namespace: Some("y".into()),
            ..Default::default()
        };
        assert!(!ns_y.matches(&f));
    }

    #[test]
    fn ipv6_flows_name_pods_and_bracket_bare_addresses() {
        let a: std::net::Ipv6Addr = "2001:2::10".parse().expect("address");
        let b: std::net::Ipv6Addr = "2001:2::11".parse().expect("address");
        let mut e = event();
        e.family = abi::FAMILY_IPV6;
        e.saddr = a.octets();
        e.daddr = b.octets();
        e.verdict = abi::VERDICT_DENIED;
        e.reason = 16;
        e.policy_id = 0;
        let f = Flow::from_event(
            &e,
            |ip| (ip == IpAddr::V6(b)).then(|| ("x".to_owned(), "b".to_owned())),
            |_| None,
        );
        assert_eq!(
            f.to_text(),
            "[2001:2::10]:40000 -> x/b(2001:2::11):80 TCP ingress DENIED (policy-denied)"
        );
        let json = serde_json::to_string(&f).expect("json");
        assert!(json.contains("\"ip\":\"2001:2::11\""), "{json}");
        let back: Flow = serde_json::from_str(&json).expect("parse back");
        assert_eq!(back, f);
    }
}
