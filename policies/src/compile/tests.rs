//! Compiler tests: a user-space model of the BPF lookups checks compiled maps
//! against the reference evaluator, case by case and on random worlds.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;

use super::*;
use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_ANY_PEER_EGRESS, EP_ANY_PEER_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS,
    EP_RANGES_EGRESS, EP_RANGES_INGRESS, EP_WILD_PORT_EGRESS, EP_WILD_PORT_INGRESS, ID_ANY, ID_WORLD,
};
use crate::reference::{self, Connection};
use crate::scenario::model_world;

/// The model's IPv4 address of pod `i`.
pub(super) fn v4(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i as u8))
}

/// The model's IPv6 address of pod `i`: 2001:2::10, 2001:2::11, ...
pub(super) fn v6(i: usize) -> IpAddr {
    IpAddr::V6(format!("2001:2::{}", 10 + i).parse::<Ipv6Addr>().expect("address"))
}

/// The model world, every pod dual-stack.
pub(super) fn world() -> World {
    model_world(|i| vec![v4(i), v6(i)], |i| Some(format!("veth{i}")))
}

pub(super) fn np(yaml: &str) -> NetworkPolicy {
    serde_saphyr::from_str(yaml).expect("policy yaml")
}

/// The lookups of `bpf/lib/policy.h`, `ipcache.h` on compiled maps.
fn hop(c: &Compiled, ifname: &str, dir: u8, peer: IpAddr, proto: u8, port: u16) -> bool {
    let Some(ep) = c.endpoints.get(ifname) else { return true };
    let bit = if dir == DIR_INGRESS {
        EP_ENFORCE_INGRESS
    } else {
        EP_ENFORCE_EGRESS
    };
    if ep.flags & bit == 0 {
        return true;
    }
    let peer_id = c
        .identities
        .ipcache
        .iter()
        .filter(|(p, _)| p.contains(peer))
        .max_by_key(|(p, _)| p.len)
        .map_or(ID_WORLD, |(_, id)| *id);
    let ingress = dir == DIR_INGRESS;
    let pick = |i: u32, e: u32| ep.flags & if ingress { i } else { e } != 0;
    let any = pick(EP_ANY_PEER_INGRESS, EP_ANY_PEER_EGRESS);
    let wild = pick(EP_WILD_PORT_INGRESS, EP_WILD_PORT_EGRESS);
    let ranges = pick(EP_RANGES_INGRESS, EP_RANGES_EGRESS);
    let peers: &[u32] = if any { &[peer_id, ID_ANY] } else { &[peer_id] };
    for &pid in peers {
        let tries: &[(u8, u16)] = if wild {
            &[(proto, port), (proto, 0), (0, 0)]
        } else {
            &[(proto, port)]
        };
        for &(pr, po) in tries {
            let k = PolicyKey {
                ep_id: ep.ep_id,
                peer_id: pid,
                dir,
                proto: pr,
                dport: po.to_be(),
            };
            if c.policy.contains_key(&k) {
                return true;
            }
        }
    }
    // Ranges: the peer and the wildcard, when the endpoint has any.
    for pid in [peer_id, ID_ANY] {
        if !ranges || port == 0 {
            break;
        }
        for rk in c.ranges.keys() {
            let d = rk.data;
            let bits = rk.prefixlen - 80;
            let mask = if bits == 0 { 0 } else { u16::MAX << (16 - bits) };
            if d.ep_id == ep.ep_id
                && d.peer_id == pid
                && d.dir == dir
                && d.proto == proto
                && port & mask == u16::from_be(d.dport)
            {
                return true;
            }
        }
    }
    false
}

fn sim(c: &Compiled, w: &World, conn: &Connection) -> bool {
    let proto = entries::proto_number(&conn.protocol).expect("proto");
    let src = w.pod_by_ip(conn.src);
    let dst = w.pod_by_ip(conn.dst);
    let out = src
        .and_then(|p| p.interface.as_deref())
        .is_none_or(|i| hop(c, i, DIR_EGRESS, conn.dst, proto, conn.port));
    let inn = dst
        .and_then(|p| p.interface.as_deref())
        .is_none_or(|i| hop(c, i, DIR_INGRESS, conn.src, proto, conn.port));
    out && inn
}

const PROBES: [(&str, u16); 6] = [
    ("TCP", 80),
    ("TCP", 81),
    ("UDP", 80),
    ("UDP", 81),
    ("SCTP", 80),
    ("TCP", 82),
];

fn check_all(w: &World) -> Vec<String> {
    let c = compile(w, None);
    let mut bad = Vec::new();
    for s in &w.pods {
        for d in &w.pods {
            if s.name == d.name && s.namespace == d.namespace {
                continue;
            }
            // Every family both pods have.
            let pairs = [
                (s.ipv4().map(IpAddr::V4), d.ipv4().map(IpAddr::V4)),
                (s.ipv6().map(IpAddr::V6), d.ipv6().map(IpAddr::V6)),
            ];
            for (src, dst) in pairs.into_iter().filter_map(|(a, b)| a.zip(b)) {
                for (proto, port) in PROBES {
                    let conn = Connection {
                        src,
                        dst,
                        protocol: proto.into(),
                        port,
                    };
                    let (want, got) = (reference::allowed(w, &conn), sim(&c, w, &conn));
                    if want != got {
                        bad.push(format!(
                            "{}/{} ({src}) -> {}/{} ({dst}) {proto}/{port}: reference {want}, compiled {got}",
                            s.namespace, s.name, d.namespace, d.name
                        ));
                    }
                }
            }
        }
    }
    bad
}

fn with(policies: &[&str]) -> World {
    let mut w = world();
    w.policies = policies.iter().map(|p| std::sync::Arc::new(np(p))).collect();
    w
}

#[test]
fn no_policy_compiles_to_unenforced_endpoints() {
    let c = compile(&world(), None);
    assert_eq!(c.endpoints.len(), 9);
    assert!(c.endpoints.values().all(|e| e.flags == 0));
    assert!(c.policy.is_empty());
    assert_eq!(
        c.identities.ipcache.len(),
        20,
        "9 dual-stack pods (/32 and /128), 0.0.0.0/0 and ::/0"
    );
    let v6 = c.identities.ipcache.keys().filter(|p| p.is_ipv6()).count();
    assert_eq!(v6, 10);
}

#[test]
fn default_deny_ingress_enforces_without_entries() {
    let w = with(&["metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}"]);
    let c = compile(&w, None);
    let enforced: Vec<_> = c
        .endpoints
        .iter()
        .filter(|(_, e)| e.flags == EP_ENFORCE_INGRESS)
        .map(|(i, _)| i.clone())
        .collect();
    assert_eq!(enforced, ["veth0", "veth1", "veth2"]);
    assert!(c.policy.is_empty());
    assert_eq!(check_all(&w), Vec::<String>::new());
}

#[test]
fn case_matrix_agrees_with_reference() {
    let cases = [
        // pod selector and named port
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: serve-81-tcp}]",
        // namespace selector AND pod selector, egress
        "metadata: {name: p, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [x, z]}]}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}}]",
        // OR of peers, UDP only
        "metadata: {name: p, namespace: z}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}, {podSelector: {matchLabels: {pod: a}}}]\n    ports: [{protocol: UDP}]",
        // ipBlock with a pod IP and except
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.13/32, 198.18.0.16/31]}}]",
        // excepted in one rule, allowed by another
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.14/32]}}]\n  - from: [{ipBlock: {cidr: 198.18.0.14/32}}]\n    ports: [{port: 81}]",
        // endPort and SCTP
        "metadata: {name: p, namespace: y}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 80, endPort: 81, protocol: SCTP}, {port: 81, endPort: 82}]",
        // egress named port resolved on the destination
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress, Ingress]\n  egress:\n  - ports: [{port: serve-80-udp, protocol: UDP}]",
        // Exists / DoesNotExist
        "metadata: {name: p, namespace: z}\nspec:\n  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}}]\n    ports: [{port: 80}]",
    ];
    for case in cases {
        let bad = check_all(&with(&[case]));
        assert!(bad.is_empty(), "policy:\n{case}\nmismatches: {bad:#?}");
    }
    // All at once: the union.
    let bad = check_all(&with(&cases));
    assert!(bad.is_empty(), "union mismatches: {bad:#?}");
}

#[test]
fn pod_in_ip_block_gets_its_own_identity() {
    let w = with(&[
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 198.18.0.13/32}}]",
    ]);
    let c = compile(&w, None);
    let ids: Vec<Vec<u32>> = c.identities.pod_identity.clone();
    // pods y/a (index 3) and z/a share labels {pod: a} but not namespaces;
    // y/a alone is in the block.
    assert_ne!(ids[3], ids[0]);
    // The block holds y/a's IPv4 address only: its IPv6 address gets another identity.
    assert_ne!(ids[3][0], ids[3][1]);
    assert!(
        c.identities
            .by_key
            .keys()
            .any(|k| k.namespace_labels.is_some() && !k.blocks.is_empty())
    );
}

#[test]
fn unknown_operator_fails_closed_with_a_warning() {
    let w = with(&[
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{podSelector: {matchExpressions: [{key: pod, operator: Bogus}]}}]",
    ]);
    let c = compile(&w, None);
    assert!(c.warnings.iter().any(|m| m.contains("Bogus")), "{:?}", c.warnings);
    assert!(c.endpoints["veth0"].flags & EP_ENFORCE_INGRESS != 0);
    assert!(c.policy.is_empty());
}

#[test]
fn diff_of_one_label_change_touches_only_that_pod() {
    let w1 = with(&[
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]",
    ]);
    let c1 = compile(&w1, None);
    let mut w2 = w1.clone();
    w2.pods[5].labels.insert("pod".into(), "b".into()); // y/c becomes pod=b
    let c2 = compile(&w2, Some(&c1));
    let d = diff(&c1, &c2);
    // y/c moves to y/b's identity: one ipcache write per address, one policy entry added.
    assert_eq!(d.ipcache.upsert.len(), 2);
    assert_eq!(d.ipcache.delete.len(), 0);
    assert_eq!(
        d.policy.upsert.len(),
        0,
        "y/c now shares y/b's identity, already allowed"
    );
    assert!(d.endpoints.is_empty());
    // Unchanged world: empty diff.
    assert!(diff(&c2, &compile(&w2, Some(&c2))).is_empty());
}

// ---------- random worlds ----------

fn arb_selector() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_owned()),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|p| format!("{{matchLabels: {{pod: {p}}}}}")),
        prop::sample::select(vec![vec!["a"], vec!["a", "b"], vec!["b", "c"], vec!["a", "c"]]).prop_map(|v| format!(
            "{{matchExpressions: [{{key: pod, operator: In, values: [{}]}}]}}",
            v.join(",")
        )),
        prop::sample::select(vec!["a", "b"])
            .prop_map(|p| format!("{{matchExpressions: [{{key: pod, operator: NotIn, values: [{p}]}}]}}")),
        Just("{matchExpressions: [{key: extra, operator: Exists}]}".to_owned()),
    ]
}

fn arb_ns_selector() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_owned()),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(|n| format!("{{matchLabels: {{ns: {n}}}}}")),
        prop::sample::select(vec!["x", "y", "z"])
            .prop_map(|n| format!("{{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}")),
        Just("{matchExpressions: [{key: extra, operator: DoesNotExist}]}".to_owned()),
    ]
}

fn arb_peer() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_selector().prop_map(|s| format!("{{podSelector: {s}}}")),
        arb_ns_selector().prop_map(|s| format!("{{namespaceSelector: {s}}}")),
        (arb_ns_selector(), arb_selector()).prop_map(|(n, s)| format!("{{namespaceSelector: {n}, podSelector: {s}}}")),
        (10u8..19, 24u8..33, prop::option::of(10u8..19)).prop_map(|(h, len, ex)| {
            let except = ex.map(|e| format!(", except: [198.18.0.{e}/32]")).unwrap_or_default();
            format!("{{ipBlock: {{cidr: 198.18.0.{h}/{len}{except}}}}}")
        }),
        (10u8..19, 120u8..129, prop::option::of((10u8..19, 124u8..129))).prop_map(|(h, len, ex)| {
            let except = ex
                .map(|(e, el)| format!(", except: [\"2001:2::{e}/{el}\"]"))
                .unwrap_or_default();
            format!("{{ipBlock: {{cidr: \"2001:2::{h}/{len}\"{except}}}}}")
        }),
        Just("{ipBlock: {cidr: \"::/0\", except: [\"2001:2::/125\"]}}".to_owned()),
    ]
}

fn arb_port() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![80u16, 81]).prop_map(|p| format!("{{port: {p}}}")),
        prop::sample::select(vec!["TCP", "UDP", "SCTP"]).prop_map(|p| format!("{{protocol: {p}}}")),
        prop::sample::select(vec!["serve-80-tcp", "serve-81-udp", "serve-80-sctp"]).prop_map(|n| {
            let proto = n.rsplit('-').next().unwrap_or("tcp").to_uppercase();
            format!("{{port: {n}, protocol: {proto}}}")
        }),
        (79u16..82, 80u16..84).prop_map(|(p, e)| format!("{{port: {p}, endPort: {e}}}")),
    ]
}

fn arb_rule() -> impl Strategy<Value = (Option<Vec<String>>, Option<Vec<String>>)> {
    (
        prop::option::of(prop::collection::vec(arb_peer(), 0..3)),
        prop::option::of(prop::collection::vec(arb_port(), 0..3)),
    )
}

fn rule_yaml(key: &str, (peers, ports): &(Option<Vec<String>>, Option<Vec<String>>)) -> String {
    let mut s = "  - {".to_owned();
    if let Some(p) = peers {
        s += &format!("{key}: [{}], ", p.join(", "));
    }
    if let Some(p) = ports {
        s += &format!("ports: [{}]", p.join(", "));
    }
    s + "}\n"
}

fn arb_policy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["x", "y", "z"]),
        arb_selector(),
        prop::sample::select(vec!["", "[Ingress]", "[Egress]", "[Ingress, Egress]"]),
        prop::collection::vec(arb_rule(), 0..3),
        prop::collection::vec(arb_rule(), 0..3),
    )
        .prop_map(|(ns, sel, types, ing, eg)| {
            let mut s = format!("metadata: {{name: p, namespace: {ns}}}\nspec:\n  podSelector: {sel}\n");
            if !types.is_empty() {
                s += &format!("  policyTypes: {types}\n");
            }
            if !ing.is_empty() {
                s += "  ingress:\n";
                for r in &ing {
                    s += &rule_yaml("from", r);
                }
            }
            if !eg.is_empty() {
                s += "  egress:\n";
                for r in &eg {
                    s += &rule_yaml("to", r);
                }
            }
            s
        })
}

pub(super) fn arb_world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(arb_policy(), 0..4),
        prop::collection::vec(any::<bool>(), 9),
        prop::collection::vec(any::<bool>(), 3),
        // Per pod: dual-stack, IPv4 only or IPv6 only.
        prop::collection::vec(0u8..3, 9),
    )
        .prop_map(|(pols, extra_pod, extra_ns, stacks)| {
            let mut w = world();
            for (i, (pod, stack)) in w.pods.iter_mut().zip(stacks).enumerate() {
                pod.ips = match stack {
                    0 => vec![v4(i), v6(i)],
                    1 => vec![v4(i)],
                    _ => vec![v6(i)],
                };
            }
            for (i, p) in pols.iter().enumerate() {
                let mut np = np(p);
                np.metadata.name = Some(format!("p{i}"));
                w.policies.push(std::sync::Arc::new(np));
            }
            for (pod, e) in w.pods.iter_mut().zip(extra_pod) {
                if e {
                    pod.labels.insert("extra".into(), "1".into());
                }
            }
            for (ns, e) in w.namespaces.iter_mut().zip(extra_ns) {
                if e {
                    ns.labels.insert("extra".into(), "1".into());
                }
            }
            w
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn compiled_maps_decide_like_the_reference(w in arb_world()) {
        let bad = check_all(&w);
        prop_assert!(bad.is_empty(), "{:#?}\npolicies: {}", bad, serde_json::to_string(&w.policies).unwrap_or_default());
    }

    #[test]
    fn applying_the_diff_yields_the_new_maps(a in arb_world(), b in arb_world()) {
        let ca = compile(&a, None);
        let cb = compile(&b, Some(&ca));
        let d = diff(&ca, &cb);
        let mut policy: BTreeMap<_, _> = ca.policy.clone();
        for k in &d.policy.delete { policy.remove(k); }
        policy.extend(d.policy.upsert.iter().copied());
        prop_assert_eq!(policy, cb.policy.clone());
        let mut ipc = ca.identities.ipcache.clone();
        for k in &d.ipcache.delete { ipc.remove(k); }
        ipc.extend(d.ipcache.upsert.iter().copied());
        prop_assert_eq!(ipc, cb.identities.ipcache.clone());
        // Recompiling the same world with itself as prev changes nothing.
        prop_assert!(diff(&cb, &compile(&b, Some(&cb))).is_empty());
    }
}
