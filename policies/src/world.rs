//! The world a node enforces: namespaces, pods and NetworkPolicies (file format too).
//!
//! A world file is YAML:
//! ```yaml
//! namespaces:
//!   - name: x
//!     labels: { team: blue }      # kubernetes.io/metadata.name is added
//! pods:
//!   - namespace: x
//!     name: a
//!     labels: { pod: a }
//!     ip: 198.18.0.10           # or ips: [198.18.0.10, "2001:2::10"] (dual-stack)
//!     interface: plh1a2b3c      # host-side veth; found from routes when absent
//!     ports: [{ name: serve-80-tcp, port: 80, protocol: TCP }]
//! policies:                     # networking.k8s.io/v1 NetworkPolicy objects
//!   - metadata: { name: deny-all, namespace: x }
//!     spec: { podSelector: {} }
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

/// Label added to every namespace, as the API server does.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Labels of a namespace or pod.
pub type Labels = BTreeMap<String, String>;

/// A namespace and its labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels, without the implicit name label.
    #[serde(default)]
    pub labels: Labels,
}

impl Namespace {
    /// Labels including `kubernetes.io/metadata.name`.
    pub fn effective_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert(NAMESPACE_NAME_LABEL.to_owned(), self.name.clone());
        l
    }
}

/// A named container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    /// Port name.
    pub name: String,
    /// Container port.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`; TCP when absent.
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "TCP".to_owned()
}

/// A pod on the node (or elsewhere in the cluster when `interface` is empty
/// and no route leads to it: then it only has an identity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Pod addresses (`status.podIPs`): one of each family at most. The file
    /// takes `ip: ADDR` or `ips: [ADDR, ...]`.
    #[serde(alias = "ip", deserialize_with = "one_or_many")]
    pub ips: Vec<IpAddr>,
    /// Host-side interface, when the pod is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<NamedPort>,
}

impl Pod {
    /// The pod's IPv4 address, if it has one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    }

    /// The pod's IPv6 address, if it has one.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    }

    /// Whether `ip` is one of the pod's addresses.
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
    }
}

/// One address or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<IpAddr>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an IP address or a list of IP addresses")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(|ip| vec![ip])
                .map_err(|_| E::custom(format!("invalid IP address {v:?}")))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(ip) = seq.next_element::<IpAddr>()? {
                out.push(ip);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Everything the compiler and the reference evaluator look at.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct World {
    /// Namespaces.
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// Pods.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// NetworkPolicies, shared: a world built from the previous one shares
    /// the policies that did not change (the Kubernetes source shares them
    /// with its watch cache), so copying a world and finding what changed
    /// cost a pointer per policy.
    #[serde(default)]
    pub policies: Vec<Arc<NetworkPolicy>>,
}

/// A world file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The YAML does not describe a world.
    #[error("invalid world file {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Parser error.
        source: Box<serde_saphyr::Error>,
    },
    /// The file could not be read.
    #[error("cannot read world file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// A pod has no address, or two of one family.
    #[error(
        "pod {namespace}/{pod} has addresses {ips:?}: give one or two, at most one IPv4 and one IPv6 (as status.podIPs)"
    )]
    PodIps {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Its addresses.
        ips: Vec<IpAddr>,
    },
    /// The file parses but does not describe a consistent world.
    #[error("invalid world file {path}: {source}")]
    Check {
        /// File.
        path: String,
        /// What is wrong.
        source: Box<WorldError>,
    },
    /// Two namespaces, pods, policies, pod addresses or local pods' interfaces of one name.
    #[error(
        "{kind} {name} appears twice: names are unique (within a namespace), as in Kubernetes; rename or remove one"
    )]
    Duplicate {
        /// `namespace`, `pod`, `NetworkPolicy`, `address` or `interface`.
        kind: &'static str,
        /// Its name (`namespace/name` for pods and policies).
        name: String,
    },
    /// A pod refers to a namespace the world lacks.
    #[error("pod {namespace}/{pod} is in namespace {namespace}, which the world does not list")]
    UnknownNamespace {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
}

impl World {
    /// Parses a world from YAML text; `path` names it in errors.
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, WorldError> {
        let w: Self = serde_saphyr::from_str(text).map_err(|e| WorldError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        w.check().map_err(|e| WorldError::Check {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(w)
    }

    /// Reads a world file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, WorldError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WorldError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text, &shown)
    }

    /// Checks references between objects, and that names are unique.
    pub fn check(&self) -> Result<(), WorldError> {
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.namespaces {
            if !seen.insert(n.name.clone()) {
                return Err(WorldError::Duplicate {
                    kind: "namespace",
                    name: n.name.clone(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.pods {
            if !seen.insert((&p.namespace, &p.name)) {
                return Err(WorldError::Duplicate {
                    kind: "pod",
                    name: format!("{}/{}", p.namespace, p.name),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for ip in self.pods.iter().flat_map(|p| &p.ips) {
            if !seen.insert(*ip) {
                return Err(WorldError::Duplicate {
                    kind: "address",
                    name: ip.to_string(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.pods {
            if let Some(i) = &p.interface
                && !seen.insert(i)
            {
                return Err(WorldError::Duplicate {
                    kind: "interface",
                    name: i.clone(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for np in &self.policies {
            let key = (
                np.metadata.namespace.as_deref().unwrap_or("default"),
                np.metadata.name.as_deref().unwrap_or_default(),
            );
            if !seen.insert(key) {
                return Err(WorldError::Duplicate {
                    kind: "NetworkPolicy",
                    name: format!("{}/{}", key.0, key.1),
                });
            }
        }
        for p in &self.pods {
            if !self.namespaces.iter().any(|n| n.name == p.namespace) {
                return Err(WorldError::UnknownNamespace {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                });
            }
            let v4 = p.ips.iter().filter(|ip| ip.is_ipv4()).count();
            let v6 = p.ips.len() - v4;
            if p.ips.is_empty() || v4 > 1 || v6 > 1 {
                return Err(WorldError::PodIps {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                    ips: p.ips.clone(),
                });
            }
        }
        Ok(())
    }

    /// The namespace named `name`.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The pod with address `ip`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.has_ip(ip))
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_take_one_address_or_one_of_each_family() {
        let w = World::from_yaml(
            "namespaces: [{name: x}]\npods:\n  - {namespace: x, name: a, ip: 198.18.0.10}\n  - {namespace: x, name: b, ips: [198.18.0.11, \"2001:2::11\"]}\n  - {namespace: x, name: c, ip: \"2001:2::12\"}\n",
            "w.yaml",
        )
        .expect("valid world");
        assert_eq!(w.pods[0].ipv4(), Some(Ipv4Addr::new(198, 18, 0, 10)));
        assert_eq!(w.pods[0].ipv6(), None);
        assert_eq!(w.pods[1].ipv6(), Some("2001:2::11".parse().expect("address")));
        assert_eq!(w.pods[2].ipv4(), None);
        assert_eq!(
            w.pod_by_ip("2001:2::11".parse().expect("address"))
                .map(|p| p.name.as_str()),
            Some("b")
        );
        for bad in [
            "ips: []",
            "ips: [198.18.0.1, 198.18.0.2]",
            "ips: [\"2001:2::1\", \"2001:2::2\"]",
            "ip: nonsense",
        ] {
            let text = format!("namespaces: [{{name: x}}]\npods: [{{namespace: x, name: a, {bad}}}]\n");
            assert!(World::from_yaml(&text, "w.yaml").is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn names_are_unique_and_the_error_names_the_file_and_the_object() {
        for (bad, what) in [
            ("namespaces: [{name: x}, {name: x}]\n", "namespace x appears twice"),
            (
                "namespaces: [{name: x}]\npods: [{namespace: x, name: a, ip: 198.18.0.1}, {namespace: x, name: a, ip: 198.18.0.2}]\n",
                "pod x/a appears twice",
            ),
            (
                "namespaces: [{name: x}]\npolicies: [{metadata: {name: p, namespace: x}}, {metadata: {name: p, namespace: x}}]\n",
                "NetworkPolicy x/p appears twice",
            ),
            (
                "namespaces: [{name: x}]\npods: [{namespace: x, name: a, ip: 198.18.0.1, interface: v0}, {namespace: x, name: b, ip: 198.18.0.2, interface: v0}]\n",
                "interface v0 appears twice",
            ),
            (
                "namespaces: [{name: x}]\npods: [{namespace: x, name: a, ip: 198.18.0.1}, {namespace: x, name: b, ip: 198.18.0.1}]\n",
                "address 198.18.0.1 appears twice",
            ),
        ] {
            let e = World::from_yaml(bad, "w.yaml")
                .expect_err("duplicate refused")
                .to_string();
            assert!(e.starts_with("invalid world file w.yaml: "), "{e}");
            assert!(e.contains(what), "{e}");
        }
        // One name in two namespaces is two objects.
        World::from_yaml(
            "namespaces: [{name: x}, {name: y}]\npods: [{namespace: x, name: a, ip: 198.18.0.1}, {namespace: y, name: a, ip: 198.18.0.2}]\n",
            "w.yaml",
        )
        .expect("valid world");
    }
}
