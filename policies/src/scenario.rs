//! Conformance scenarios: the upstream model, steps that change policies and labels, and truth tables.
//!
//! The format is documented in `policies/README.md`. Scenario files are YAML;
//! `${ns/pod}` anywhere in the text becomes that pod's IPv4 address before
//! parsing, `${ns/pod/ipv6}` its IPv6 address.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

use crate::reference::{self, Connection};
use crate::world::{Labels, NamedPort, Namespace, Pod, World};

/// Namespaces of the upstream model.
pub const MODEL_NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// Pods in each namespace of the upstream model.
pub const MODEL_PODS: [&str; 3] = ["a", "b", "c"];
/// Ports every model pod serves, over TCP and UDP.
pub const MODEL_PORTS: [u16; 2] = [80, 81];

/// A probe: protocol, port and address family, probed between every pair of pods.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// `TCP`, `UDP` or `SCTP` (SCTP is probed with crafted packets).
    #[serde(default = "default_proto")]
    pub protocol: String,
    /// Destination port.
    pub port: u16,
    /// `IPv4` (default) or `IPv6`: which of the pods' addresses the probe uses.
    #[serde(default, skip_serializing_if = "IpFamily::is_ipv4")]
    pub ip_family: IpFamily,
}

/// An address family, named as in a Service's `ipFamilies`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    #[default]
    IPv4,
    /// IPv6.
    IPv6,
}

impl IpFamily {
    /// Whether this is IPv4 (the default, left out of probe names).
    pub fn is_ipv4(&self) -> bool {
        *self == Self::IPv4
    }

    /// The address of `pod` in this family.
    pub fn address(self, pod: &Pod) -> Option<IpAddr> {
        match self {
            Self::IPv4 => pod.ipv4().map(IpAddr::V4),
            Self::IPv6 => pod.ipv6().map(IpAddr::V6),
        }
    }
}

fn default_proto() -> String {
    "TCP".to_owned()
}

impl std::fmt::Display for Probe {
    /// `TCP/80`, or `TCP/80/IPv6` for IPv6: the key of `expect`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)?;
        if !self.ip_family.is_ipv4() {
            write!(f, "/{:?}", self.ip_family)?;
        }
        Ok(())
    }
}

/// New labels for a pod (`ns/name`), replacing the old ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLabels {
    /// `ns/name`.
    pub pod: String,
    /// The labels.
    pub labels: Labels,
}

/// New labels for a namespace, replacing the old ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceLabels {
    /// Namespace name.
    pub namespace: String,
    /// The labels.
    pub labels: Labels,
}

/// One step: changes, then probes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Shown in the truth table.
    #[serde(default)]
    pub name: String,
    /// Policies to create or replace (by namespace and name).
    #[serde(default)]
    pub apply: Vec<NetworkPolicy>,
    /// Policies to delete, as `ns/name`.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Pod label changes.
    #[serde(default)]
    pub pod_labels: Vec<PodLabels>,
    /// Namespace label changes.
    #[serde(default)]
    pub namespace_labels: Vec<NamespaceLabels>,
    /// What to probe; `TCP/80` when empty.
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// Explicit expectations per probe (`TCP/80`, `TCP/80/IPv6`): a truth table in the
    /// printed format. Without one, the reference evaluator decides.
    #[serde(default)]
    pub expect: BTreeMap<String, String>,
}

/// A scenario file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// What it checks.
    #[serde(default)]
    pub description: String,
    /// Steps, applied cumulatively.
    pub steps: Vec<Step>,
}

/// A scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Invalid YAML or fields.
    #[error("invalid scenario {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Parser error.
        source: Box<serde_saphyr::Error>,
    },
    /// `${...}` names no model pod.
    #[error(
        "scenario {path}: unknown placeholder ${{{name}}}; use ${{ns/pod}} or ${{ns/pod/ipv6}} with ns in x,y,z and pod in a,b,c"
    )]
    Placeholder {
        /// File.
        path: String,
        /// The placeholder.
        name: String,
    },
    /// An explicit truth table does not parse.
    #[error("scenario {path}, step {step:?}, expect {probe}: {reason}")]
    Expect {
        /// File.
        path: String,
        /// Step name.
        step: String,
        /// Probe.
        probe: String,
        /// What is wrong.
        reason: String,
    },
    /// A step changes something the model lacks.
    #[error("scenario {path}, step {step:?}: {reason}")]
    Step {
        /// File.
        path: String,
        /// Step name.
        step: String,
        /// What is wrong.
        reason: String,
    },
}

/// The model world: namespaces x, y, z with pods a, b, c serving TCP and UDP
/// on 80 and 81 with named ports `serve-80-tcp` and so on. `ips(i)` gives the
/// addresses of the i-th pod; `interface(i)` its host-side interface.
pub fn model_world(ips: impl Fn(usize) -> Vec<IpAddr>, interface: impl Fn(usize) -> Option<String>) -> World {
    let mut w = World::default();
    for ns in MODEL_NAMESPACES {
        w.namespaces.push(Namespace {
            name: ns.to_owned(),
            labels: Labels::from([("ns".to_owned(), ns.to_owned())]),
        });
        for pod in MODEL_PODS {
            let i = w.pods.len();
            let mut ports = Vec::new();
            for port in MODEL_PORTS {
                for proto in ["TCP", "UDP", "SCTP"] {
                    ports.push(NamedPort {
                        name: format!("serve-{port}-{}", proto.to_lowercase()),
                        port,
                        protocol: proto.to_owned(),
                    });
                }
            }
            w.pods.push(Pod {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
                labels: Labels::from([("pod".to_owned(), pod.to_owned())]),
                ips: ips(i),
                interface: interface(i),
                ports,
            });
        }
    }
    w
}

/// Parses a scenario, replacing `${ns/pod}` with the pod's IPv4 address in
/// `world`, `${ns/pod/ipv6}` with its IPv6 address.
pub fn parse(text: &str, path: &str, world: &World) -> Result<Scenario, ScenarioError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ScenarioError::Placeholder {
            path: path.to_owned(),
            name: after.chars().take(20).collect(),
        })?;
        let name = &after[..end];
        let (pod_name, family) = match name.strip_suffix("/ipv6") {
            Some(p) => (p, IpFamily::IPv6),
            None => (name, IpFamily::IPv4),
        };
        let ip = pod_name
            .split_once('/')
            .and_then(|(ns, pod)| world.pod(ns, pod))
            .and_then(|p| family.address(p))
            .ok_or_else(|| ScenarioError::Placeholder {
                path: path.to_owned(),
                name: name.to_owned(),
            })?;
        out.push_str(&ip.to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    serde_saphyr::from_str(&out).map_err(|e| ScenarioError::Parse {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Applies a step's changes to the world.
pub fn apply_step(world: &mut World, step: &Step, path: &str) -> Result<(), ScenarioError> {
    let err = |reason: String| ScenarioError::Step {
        path: path.to_owned(),
        step: step.name.clone(),
        reason,
    };
    let key = |np: &NetworkPolicy| {
        format!(
            "{}/{}",
            np.metadata.namespace.as_deref().unwrap_or("default"),
            np.metadata.name.as_deref().unwrap_or_default()
        )
    };
    for d in &step.delete {
        let before = world.policies.len();
        world.policies.retain(|np| key(np) != *d);
        if world.policies.len() == before {
            return Err(err(format!("delete: no policy {d}")));
        }
    }
    for np in &step.apply {
        let k = key(np);
        world.policies.retain(|old| key(old) != k);
        world.policies.push(std::sync::Arc::new(np.clone()));
    }
    for pl in &step.pod_labels {
        let (ns, name) = pl
            .pod
            .split_once('/')
            .ok_or_else(|| err(format!("podLabels: {} is not ns/pod", pl.pod)))?;
        let pod = world
            .pods
            .iter_mut()
            .find(|p| p.namespace == ns && p.name == name)
            .ok_or_else(|| err(format!("podLabels: no pod {}", pl.pod)))?;
        pod.labels = pl.labels.clone();
    }
    for nl in &step.namespace_labels {
        let ns = world
            .namespaces
            .iter_mut()
            .find(|n| n.name == nl.namespace)
            .ok_or_else(|| err(format!("namespaceLabels: no namespace {}", nl.namespace)))?;
        ns.labels = nl.labels.clone();
    }
    Ok(())
}

/// Probes of a step (`TCP/80` by default).
pub fn step_probes(step: &Step) -> Vec<Probe> {
    if step.probes.is_empty() {
        vec![Probe {
            protocol: "TCP".to_owned(),
            port: 80,
            ip_family: IpFamily::IPv4,
        }]
    } else {
        step.probes.clone()
    }
}

/// Top-left cell of a printed table: rows are clients, columns servers.
pub const CORNER: &str = "from\\to";

/// A square table of verdicts between the pods of a world, `[from][to]`;
/// `None` on the diagonal (a pod talking to itself never crosses its veth).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Pod names, `ns/pod`.
    pub pods: Vec<String>,
    /// Verdicts: `Some(true)` allowed.
    pub cells: Vec<Vec<Option<bool>>>,
}

impl Table {
    /// Expected verdicts from the reference evaluator; a pair where either
    /// pod lacks an address of the probe's family is denied (nothing to reach).
    pub fn reference(world: &World, probe: &Probe) -> Self {
        Self::build(world, |i, j| {
            let f = probe.ip_family;
            let (Some(src), Some(dst)) = (f.address(&world.pods[i]), f.address(&world.pods[j])) else {
                return false;
            };
            reference::allowed(
                world,
                &Connection {
                    src,
                    dst,
                    protocol: probe.protocol.clone(),
                    port: probe.port,
                },
            )
        })
    }

    /// A table from a verdict function of (from, to) pod indexes.
    pub fn build(world: &World, f: impl Fn(usize, usize) -> bool) -> Self {
        let n = world.pods.len();
        let cells = (0..n)
            .map(|i| (0..n).map(|j| (i != j).then(|| f(i, j))).collect())
            .collect();
        Self {
            pods: names(world),
            cells,
        }
    }

    /// Parses the printed format: a header of pod names, then one row per
    /// client pod: its name and `.` (allowed), `X` (denied) or `-` (self).
    pub fn parse(text: &str, world: &World) -> Result<Self, String> {
        let pods = names(world);
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or("empty table")?
            .split_whitespace()
            .filter(|w| *w != CORNER)
            .collect();
        let cols: Vec<usize> = header
            .iter()
            .map(|h| {
                pods.iter()
                    .position(|p| p == h)
                    .ok_or_else(|| format!("unknown pod {h} in header"))
            })
            .collect::<Result<_, _>>()?;
        let mut cells = vec![vec![None; pods.len()]; pods.len()];
        let mut seen = vec![false; pods.len()];
        for line in lines {
            let mut words = line.split_whitespace();
            let from = words.next().unwrap_or_default();
            let i = pods
                .iter()
                .position(|p| p == from)
                .ok_or_else(|| format!("unknown pod {from} in row"))?;
            seen[i] = true;
            let vals: Vec<&str> = words.collect();
            if vals.len() != cols.len() {
                return Err(format!("row {from} has {} cells, header {}", vals.len(), cols.len()));
            }
            for (v, &j) in vals.iter().zip(&cols) {
                cells[i][j] = match *v {
                    "." => Some(true),
                    "X" | "x" => Some(false),
                    "-" => None,
                    other => return Err(format!("cell {other:?} in row {from}: use . X or -")),
                };
                if i == j {
                    cells[i][j] = None;
                }
            }
        }
        if seen.iter().any(|s| !s) || cols.len() != pods.len() {
            return Err("the table must list every pod in the header and as a row".to_owned());
        }
        Ok(Self { pods, cells })
    }

    /// The printed format (which [`Table::parse`] reads back).
    pub fn render(&self) -> String {
        let w = self.pods.iter().map(String::len).max().unwrap_or(3).max(CORNER.len());
        let mut s = format!("{CORNER:w$}");
        for p in &self.pods {
            let _ = write!(s, " {p:>w$}");
        }
        s.push('\n');
        for (i, row) in self.cells.iter().enumerate() {
            let _ = write!(s, "{:w$}", self.pods[i]);
            for c in row {
                let mark = match c {
                    Some(true) => ".",
                    Some(false) => "X",
                    None => "-",
                };
                let _ = write!(s, " {mark:>w$}");
            }
            s.push('\n');
        }
        s
    }

    /// Cells where `self` and `other` differ, as `from -> to`.
    pub fn mismatches(&self, actual: &Self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, row) in self.cells.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                let a = actual.cells.get(i).and_then(|r| r.get(j)).copied().flatten();
                if *c != a {
                    out.push(format!(
                        "{} -> {}: expected {}, got {}",
                        self.pods[i],
                        self.pods[j],
                        verdict(*c),
                        verdict(a)
                    ));
                }
            }
        }
        out
    }
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "allowed",
        Some(false) => "denied",
        None => "-",
    }
}

fn names(world: &World) -> Vec<String> {
    world
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

/// The outcome of one probe of one step.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    /// Step name.
    pub step: String,
    /// Probe.
    pub probe: String,
    /// Where the expectation came from: `reference` or `explicit`.
    pub source: String,
    /// Expected.
    pub expected: Table,
    /// Observed.
    pub actual: Table,
    /// Differences.
    pub mismatches: Vec<String>,
}

/// Renders results as text truth tables.
pub fn render_text(name: &str, results: &[ProbeResult]) -> String {
    let mut s = format!("scenario {name}\n");
    for r in results {
        let status = if r.mismatches.is_empty() { "ok" } else { "MISMATCH" };
        let _ = writeln!(s, "\nstep {:?} probe {} ({}): {status}", r.step, r.probe, r.source);
        let _ = writeln!(s, "expected:\n{}", r.expected.render());
        if !r.mismatches.is_empty() {
            let _ = writeln!(s, "actual:\n{}", r.actual.render());
            for m in &r.mismatches {
                let _ = writeln!(s, "  {m}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        model_world(
            |i| {
                vec![
                    IpAddr::from([198, 18, 0, 10 + i as u8]),
                    format!("2001:2::{}", 10 + i).parse().expect("address"),
                ]
            },
            |_| None,
        )
    }

    #[test]
    fn placeholders_become_pod_ips() {
        let w = world();
        let s = parse(
            "name: t\nsteps:\n- name: \"${x/b} ${x/b/ipv6}\"\n  probes: [{port: 80, ipFamily: IPv6}]\n",
            "t.yaml",
            &w,
        )
        .expect("parse");
        assert_eq!(s.steps[0].name, "198.18.0.11 2001:2::11");
        assert_eq!(s.steps[0].probes[0].to_string(), "TCP/80/IPv6");
        assert!(matches!(
            parse("name: t\nsteps: []\n# ${x/a/ipv7}\n", "t.yaml", &w),
            Err(ScenarioError::Placeholder { .. })
        ));
        assert!(matches!(
            parse("name: t\nsteps: []\n# ${q/a}\n", "t.yaml", &w),
            Err(ScenarioError::Placeholder { .. })
        ));
    }

    #[test]
    fn table_round_trips_through_its_printed_form() {
        let w = world();
        let t = Table::build(&w, |i, j| (i + j) % 3 == 0);
        assert_eq!(Table::parse(&t.render(), &w).expect("parse"), t);
    }

    #[test]
    fn no_policy_allows_everything() {
        let w = world();
        let t = Table::reference(
            &w,
            &Probe {
                protocol: "TCP".into(),
                port: 80,
                ip_family: IpFamily::IPv6,
            },
        );
        assert!(t.cells.iter().flatten().all(|c| c.is_none_or(|v| v)));
    }
}
