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
//!     ip: 198.18.0.10
//!     interface: plh1a2b3c      # host-side veth; found from routes when absent
//!     ports: [{ name: serve-80-tcp, port: 80, protocol: TCP }]
//! policies:                     # networking.k8s.io/v1 NetworkPolicy objects
//!   - metadata: { name: deny-all, namespace: x }
//!     spec: { podSelector: {} }
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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
    /// Pod IPv4 address.
    pub ip: Ipv4Addr,
    /// Host-side interface, when the pod is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<NamedPort>,
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
    /// NetworkPolicies.
    #[serde(default)]
    pub policies: Vec<NetworkPolicy>,
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
        w.check()?;
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

    /// Checks references between objects.
    pub fn check(&self) -> Result<(), WorldError> {
        for p in &self.pods {
            if !self.namespaces.iter().any(|n| n.name == p.namespace) {
                return Err(WorldError::UnknownNamespace {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The namespace named `name`.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }
}
