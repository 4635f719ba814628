//! The incremental compiler against the full one: the same maps, up to the
//! numbers each allocates, after any sequence of worlds; diffs that turn the
//! previous maps into the next; and work proportional to the change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;
use crate::compile::tests::{arb_world, world};
use crate::compile::{compile, map_diff};

/// A policy from YAML, shared as worlds hold them.
fn pol(yaml: &str) -> Arc<NetworkPolicy> {
    Arc::new(crate::compile::tests::np(yaml))
}

/// A compiled map with every number replaced by what it stands for.
#[derive(Debug, PartialEq, Eq)]
struct Canonical {
    ipcache: BTreeMap<Prefix, String>,
    endpoints: BTreeMap<String, (String, u32)>,
    policy: BTreeSet<String>,
    ranges: BTreeSet<String>,
    identities: BTreeSet<String>,
    by_block: BTreeMap<String, BTreeSet<String>>,
    warnings: BTreeSet<String>,
}

fn canonical(c: &Compiled) -> Canonical {
    let ids: BTreeMap<u32, String> = c
        .identities
        .by_key
        .iter()
        .map(|(k, id)| (*id, format!("{k:?}")))
        .collect();
    let id = |n: u32| match n {
        ID_ANY => "any".to_owned(),
        ID_WORLD => "world".to_owned(),
        n => ids.get(&n).cloned().unwrap_or_else(|| format!("unknown identity {n}")),
    };
    let eps: BTreeMap<u32, String> = c
        .endpoint_ids
        .iter()
        .map(|((ns, n), id)| (*id, format!("{ns}/{n}")))
        .collect();
    let ep = |n: u32| eps.get(&n).cloned().unwrap_or_else(|| format!("unknown endpoint {n}"));
    let pols: BTreeMap<u32, String> = c
        .policy_ids
        .iter()
        .map(|((ns, n), id)| (*id, format!("{ns}/{n}")))
        .collect();
    let pol = |n: u32| pols.get(&n).cloned().unwrap_or_else(|| format!("unknown policy {n}"));
    let key = |k: &PolicyKey, v: &PolicyValue| {
        format!(
            "{} {} dir {} proto {} port {} <- {} rule {}",
            ep(k.ep_id),
            id(k.peer_id),
            k.dir,
            k.proto,
            u16::from_be(k.dport),
            pol(v.policy_id),
            v.rule
        )
    };
    Canonical {
        ipcache: c.identities.ipcache.iter().map(|(p, i)| (*p, id(*i))).collect(),
        endpoints: c
            .endpoints
            .iter()
            .map(|(n, e)| (n.clone(), (ep(e.ep_id), e.flags)))
            .collect(),
        policy: c.policy.iter().map(|(k, v)| key(k, v)).collect(),
        ranges: c
            .ranges
            .iter()
            .map(|(k, v)| format!("/{} {}", k.prefixlen, key(&k.data, v)))
            .collect(),
        identities: c.identities.by_key.keys().map(|k| format!("{k:?}")).collect(),
        by_block: c
            .identities
            .by_block
            .iter()
            .map(|(b, s)| (b.clone(), s.iter().map(|i| id(*i)).collect()))
            .collect(),
        warnings: c.warnings.iter().cloned().collect(),
    }
}

/// Applies a diff to a compilation's maps.
fn apply(c: &mut Compiled, d: &Diff) {
    for k in &d.policy.delete {
        c.policy.remove(k);
    }
    c.policy.extend(d.policy.upsert.iter().copied());
    for k in &d.ranges.delete {
        c.ranges.remove(k);
    }
    c.ranges.extend(d.ranges.upsert.iter().copied());
    for k in &d.ipcache.delete {
        c.identities.ipcache.remove(k);
    }
    c.identities.ipcache.extend(d.ipcache.upsert.iter().copied());
    for k in &d.endpoints.delete {
        c.endpoints.remove(k);
    }
    c.endpoints.extend(d.endpoints.upsert.iter().cloned());
}

/// Runs `worlds` through one compiler, checking each step against the full compiler.
fn check_sequence(worlds: Vec<World>) -> Result<(), TestCaseError> {
    let mut inc = Compiler::new();
    for (step, w) in worlds.into_iter().enumerate() {
        let before = inc.compiled().clone();
        // With the same numbers for what existed before: an entry several rules allow names the policy with the
        // least number, so both compilers must number policies alike for their values to agree.
        let full = compile(&w, Some(&before));
        let d = inc.update(w);
        let now = inc.compiled();
        prop_assert_eq!(canonical(now), canonical(&full), "step {}", step);
        // The diff is exactly what changed: applied to the maps before, it gives the maps after.
        let mut applied = before.clone();
        apply(&mut applied, &d);
        prop_assert_eq!(&applied.policy, &now.policy, "step {}", step);
        prop_assert_eq!(&applied.ranges, &now.ranges, "step {}", step);
        prop_assert_eq!(&applied.identities.ipcache, &now.identities.ipcache, "step {}", step);
        prop_assert_eq!(&applied.endpoints, &now.endpoints, "step {}", step);
        prop_assert_eq!(
            d.len(),
            crate::compile::diff(&before, now).len(),
            "step {}: the diff has no no-ops",
            step
        );
        // Numbers of what stays stay.
        for (k, id) in &before.identities.by_key {
            if let Some(n) = now.identities.by_key.get(k) {
                prop_assert_eq!(n, id, "step {}: identity {:?} renumbered", step, k);
            }
        }
        for (k, id) in &before.endpoint_ids {
            if let Some(n) = now.endpoint_ids.get(k) {
                prop_assert_eq!(n, id, "step {}: endpoint {:?} renumbered", step, k);
            }
        }
        for (k, id) in &before.policy_ids {
            if let Some(n) = now.policy_ids.get(k) {
                prop_assert_eq!(n, id, "step {}: policy {:?} renumbered", step, k);
            }
        }
    }
    Ok(())
}

/// A world with some pods not local, renamed interfaces, removed pods and namespaces.
fn arb_varied_world() -> impl Strategy<Value = World> {
    (
        arb_world(),
        prop::collection::vec(0u8..6, 9),
        prop::option::of(prop::sample::select(vec!["x", "y", "z"])),
    )
        .prop_map(|(mut w, shapes, gone_ns)| {
            let mut keep = Vec::new();
            for (mut pod, shape) in w.pods.drain(..).zip(shapes) {
                match shape {
                    0 => pod.interface = None,
                    1 => pod.interface = pod.interface.map(|i| format!("{i}b")),
                    2 => pod.ports.retain(|p| p.port == 81),
                    3 => continue,
                    _ => {}
                }
                keep.push(pod);
            }
            w.pods = keep;
            if let Some(ns) = gone_ns {
                w.namespaces.retain(|n| n.name != ns);
            }
            w
        })
}

/// Edits of one policy's rules: the kind of change a user makes.
#[derive(Clone, Debug)]
enum Edit {
    /// Changes the port of an ingress rule.
    Port(usize, u16),
    /// Appends an ipBlock rule.
    AddBlock(u8, u8),
    /// Removes an ingress rule.
    Remove(usize),
    /// Changes the labels of a pod.
    Label(usize, bool),
    /// Changes the labels of a namespace.
    NsLabel(usize, bool),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..8, 79u16..83).prop_map(|(i, p)| Edit::Port(i, p)),
        (10u8..19, 24u8..33).prop_map(|(h, l)| Edit::AddBlock(h, l)),
        (0usize..8).prop_map(Edit::Remove),
        (0usize..9, any::<bool>()).prop_map(|(i, b)| Edit::Label(i, b)),
        (0usize..3, any::<bool>()).prop_map(|(i, b)| Edit::NsLabel(i, b)),
    ]
}

/// A policy of ipBlock, selector and named-port rules, edited step by step.
fn edited_worlds(edits: &[Edit]) -> Vec<World> {
    let mut rules: Vec<String> = vec![
        "{from: [{ipBlock: {cidr: 198.18.0.8/29, except: [198.18.0.12/32]}}], ports: [{port: 80}]}".into(),
        "{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: serve-81-udp, protocol: UDP}]}".into(),
        "{from: [{namespaceSelector: {matchLabels: {extra: '1'}}}]}".into(),
        "{from: [{ipBlock: {cidr: 198.18.0.16/30}}], ports: [{port: 80, endPort: 83}]}".into(),
    ];
    let mut w = world();
    let mut out = Vec::new();
    let egress = "{to: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: serve-80-tcp}]}";
    for e in std::iter::once(None).chain(edits.iter().map(Some)) {
        match e {
            None => {}
            Some(Edit::Port(i, p)) => {
                if let Some(r) = rules.get_mut(*i) {
                    *r = format!(
                        "{{from: [{{ipBlock: {{cidr: 198.18.0.{}/32}}}}], ports: [{{port: {p}}}]}}",
                        10 + i
                    );
                }
            }
            Some(Edit::AddBlock(h, l)) => rules.push(format!("{{from: [{{ipBlock: {{cidr: 198.18.0.{h}/{l}}}}}]}}")),
            Some(Edit::Remove(i)) if *i < rules.len() => {
                rules.remove(*i);
            }
            Some(Edit::Remove(_)) => {}
            Some(Edit::Label(i, on)) => {
                if let Some(p) = w.pods.get_mut(*i) {
                    if *on {
                        p.labels.insert("extra".into(), "1".into());
                    } else {
                        p.labels.remove("extra");
                    }
                }
            }
            Some(Edit::NsLabel(i, on)) => {
                if let Some(n) = w.namespaces.get_mut(*i) {
                    if *on {
                        n.labels.insert("extra".into(), "1".into());
                    } else {
                        n.labels.remove("extra");
                    }
                }
            }
        }
        let mut y = "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress:\n".to_owned();
        for r in &rules {
            let _ = writeln!(y, "  - {r}");
        }
        let _ = writeln!(y, "  egress:\n  - {egress}");
        w.policies = vec![
            pol(&y),
            pol(
                "metadata: {name: q, namespace: y}\nspec:\n  podSelector: {matchLabels: {extra: '1'}}\n  ingress:\n  - from: [{ipBlock: {cidr: 198.18.0.0/28}}]\n",
            ),
        ];
        out.push(w.clone());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn incremental_equals_full(worlds in prop::collection::vec(arb_varied_world(), 1..5)) {
        check_sequence(worlds)?;
    }

    #[test]
    fn incremental_equals_full_under_small_edits(edits in prop::collection::vec(arb_edit(), 1..8)) {
        check_sequence(edited_worlds(&edits))?;
    }
}

/// One selected pod and `n` ipBlock rules, rule 0 on `port`.
fn block_world(n: usize, port: u16) -> World {
    let mut y = String::from("namespaces: [{name: x}]\npods:\n");
    y.push_str("  - {namespace: x, name: s, labels: {app: s}, ip: 198.18.0.2, interface: v0}\n");
    y.push_str("policies:\n  - metadata: {name: p, namespace: x}\n    spec:\n      podSelector: {}\n      ingress:\n");
    for i in 0..n {
        let p = if i == 0 { port } else { 80 };
        let _ = writeln!(
            y,
            "        - from: [{{ipBlock: {{cidr: 198.19.{}.{}/32}}}}]\n          ports: [{{port: {p}}}]",
            i / 256,
            i % 256
        );
    }
    World::from_yaml(&y, "test world").expect("world")
}

#[test]
fn one_rule_changed_among_many_recompiles_that_rule_and_writes_two_entries() {
    let mut inc = Compiler::new();
    inc.update(block_world(1000, 80));
    assert_eq!(inc.compiled().policy.len(), 1000);
    let d = inc.update(block_world(1000, 8080));
    assert_eq!(inc.last_stats().rules, 1, "{:?}", inc.last_stats());
    assert_eq!(d.policy.upsert.len(), 1, "{d:?}");
    assert_eq!(d.policy.delete.len(), 1, "{d:?}");
    assert_eq!(u16::from_be(d.policy.upsert[0].0.dport), 8080);
    assert_eq!(u16::from_be(d.policy.delete[0].dport), 80);
    assert!(d.ipcache.is_empty() && d.endpoints.is_empty(), "{d:?}");
    // The same world again: nothing to do.
    let d = inc.update(block_world(1000, 8080));
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(inc.last_stats().rules, 0);
}

#[test]
fn a_new_ip_block_recompiles_only_the_rules_its_identities_reach() {
    let mut inc = Compiler::new();
    let mut w = block_world(500, 80);
    inc.update(w.clone());
    // A rule with a new /24 around the first 256 blocks' addresses: their prefixes get new identities, and the
    // rules naming those blocks are recompiled; the other 244 are not.
    let mut yaml = serde_json::to_value(&w.policies[0]).expect("json");
    yaml["spec"]["ingress"]
        .as_array_mut()
        .expect("rules")
        .push(serde_json::json!({"from": [{"ipBlock": {"cidr": "198.19.0.0/24"}}]}));
    w.policies[0] = serde_json::from_value(yaml).expect("policy");
    let d = inc.update(w.clone());
    let s = inc.last_stats();
    assert_eq!(s.rules, 257, "{s:?}");
    assert_eq!(d.ipcache.upsert.len(), 257, "{d:?}");
    assert_eq!(canonical(inc.compiled()), canonical(&compile(&w, None)));
}

#[test]
fn a_pod_label_change_touches_only_that_endpoint() {
    let mut inc = Compiler::new();
    let mut w = world();
    w.policies.push(pol("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {}}]}]\n"));
    inc.update(w.clone());
    let before = inc.compiled().clone();
    w.pods[0].labels.insert("pod".into(), "z".into());
    let d = inc.update(w.clone());
    assert_eq!(canonical(inc.compiled()), canonical(&compile(&w, None)));
    let a = before.endpoints["veth0"];
    assert!(d.endpoints.upsert.iter().all(|(n, _)| n == "veth0"), "{d:?}");
    assert!(d.policy.delete.iter().all(|k| k.ep_id == a.ep_id), "{d:?}");
    assert!(map_diff(&before.policy, &inc.compiled().policy).len() == d.policy.len());
}

#[test]
fn removing_an_empty_rule_is_a_change() {
    let mut a = world();
    for p in &mut a.pods {
        p.interface = None;
    }
    let mut b = a.clone();
    a.policies.push(pol(
        "metadata: {name: p0, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{}]\n",
    ));
    b.pods[2].interface = Some("veth2b".into());
    b.policies
        .push(pol("metadata: {name: p0, namespace: x}\nspec:\n  podSelector: {}\n"));
    let mut inc = Compiler::new();
    inc.update(a);
    inc.update(b.clone());
    assert!(inc.compiled().policy.is_empty(), "{:?}", inc.compiled().policy);
    assert_eq!(canonical(inc.compiled()), canonical(&compile(&b, None)));
}

#[test]
fn an_unknown_operator_behind_match_labels_warns_like_the_full_compiler() {
    let mut w = world();
    w.policies.push(pol(
        "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}, matchExpressions: [{key: k, operator: Bogus}]}\n",
    ));
    let mut inc = Compiler::new();
    inc.update(w.clone());
    let full = compile(&w, None);
    assert!(full.warnings.iter().any(|m| m.contains("Bogus")), "{:?}", full.warnings);
    assert_eq!(canonical(inc.compiled()), canonical(&full));
}

#[test]
fn two_pods_on_one_interface_keep_its_endpoint_while_either_lives() {
    // World files refuse this; the Kubernetes source can see it briefly (an interface found for two pods).
    let mut w = world();
    w.pods[1].interface = w.pods[0].interface.clone();
    let mut inc = Compiler::new();
    inc.update(w.clone());
    assert!(inc.compiled().endpoints.contains_key("veth0"));
    let a = inc.compiled().endpoint_ids[&("x".to_owned(), "a".to_owned())];
    // Whichever of the two goes, the interface keeps the endpoint of the other.
    w.pods.remove(1);
    let d = inc.update(w);
    assert_eq!(inc.compiled().endpoints["veth0"].ep_id, a, "{d:?}");
    assert!(!d.endpoints.delete.contains(&"veth0".to_owned()), "{d:?}");
}
