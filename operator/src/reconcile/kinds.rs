//! The kinds the controller creates: apply order, API groups and the versions a server may serve instead.

use std::collections::BTreeMap;

use kube::Client;
use kube::core::ApiResource;

/// A kind Plinth renders. The order of the variants is the apply order (see `render::objects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Identity first: the pods' ServiceAccount.
    ServiceAccount,
    /// Permissions of that identity.
    Role,
    /// Binds the Role to the ServiceAccount.
    RoleBinding,
    /// Before any pod: the app's pods never start unprotected.
    NetworkPolicy,
    /// Configuration before the workload that mounts it.
    ConfigMap,
    /// The stable address.
    Service,
    /// The workload.
    Deployment,
    /// Scaling, once the Deployment exists.
    HorizontalPodAutoscaler,
    /// Disruption budget, once the pods exist.
    PodDisruptionBudget,
}

impl Kind {
    /// Every kind, in apply order.
    pub const ALL: [Kind; 9] = [
        Kind::ServiceAccount,
        Kind::Role,
        Kind::RoleBinding,
        Kind::NetworkPolicy,
        Kind::ConfigMap,
        Kind::Service,
        Kind::Deployment,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
    ];

    /// The kind named `kind`.
    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind)
    }

    /// The `kind` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ConfigMap => "ConfigMap",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::ServiceAccount | Kind::ConfigMap | Kind::Service => "",
            Kind::Role | Kind::RoleBinding => "rbac.authorization.k8s.io",
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::Deployment => "apps",
            Kind::HorizontalPodAutoscaler => "autoscaling",
            Kind::PodDisruptionBudget => "policy",
        }
    }

    /// The resource (plural) name, as RBAC and URLs spell it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Role => "roles",
            Kind::RoleBinding => "rolebindings",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::ConfigMap => "configmaps",
            Kind::Service => "services",
            Kind::Deployment => "deployments",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    /// Versions to use, best first: the one the renderer emits, then older ones with the same fields.
    ///
    /// `autoscaling/v2beta2` has every field of `autoscaling/v2` the renderer uses (v2 is v2beta2 made GA);
    /// `policy/v1beta1` PodDisruptionBudget differs only for an empty selector (Plinth always sets one)
    /// and `unhealthyPodEvictionPolicy` (refused when present, see `desired`).
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::HorizontalPodAutoscaler => &["v2", "v2beta2"],
            Kind::PodDisruptionBudget => &["v1", "v1beta1"],
            Kind::Deployment | Kind::Role | Kind::RoleBinding | Kind::NetworkPolicy => &["v1"],
            Kind::ServiceAccount | Kind::ConfigMap | Kind::Service => &["v1"],
        }
    }

    /// `apiVersion` for `version`.
    pub fn api_version(self, version: &str) -> String {
        match self.group() {
            "" => version.to_owned(),
            group => format!("{group}/{version}"),
        }
    }

    /// The API resource of this kind at `version`.
    pub fn resource(self, version: &str) -> ApiResource {
        ApiResource {
            group: self.group().to_owned(),
            version: version.to_owned(),
            api_version: self.api_version(version),
            kind: self.name().to_owned(),
            plural: self.plural().to_owned(),
        }
    }
}

/// Which version of each kind the API server serves: discovered once at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Served {
    versions: BTreeMap<Kind, &'static str>,
}

impl Served {
    /// The newest version of every kind, as a current Kubernetes serves them (for tests and offline use).
    pub fn newest() -> Served {
        Served {
            versions: Kind::ALL.into_iter().map(|k| (k, k.versions()[0])).collect(),
        }
    }

    /// Served versions from explicit pairs (for tests).
    pub fn from_pairs(pairs: &[(Kind, &'static str)]) -> Served {
        Served {
            versions: pairs.iter().copied().collect(),
        }
    }

    /// The version of `kind` to use, `None` when the server serves none Plinth knows.
    pub fn version(&self, kind: Kind) -> Option<&'static str> {
        self.versions.get(&kind).copied()
    }

    /// The API resource to use for `kind`.
    pub fn resource(&self, kind: Kind) -> Option<ApiResource> {
        self.version(kind).map(|v| kind.resource(v))
    }

    /// Asks the API server which group versions it serves and picks, per kind, the first one Plinth knows.
    ///
    /// # Errors
    /// When discovery itself fails (other than a group version not being served).
    pub async fn discover(client: &Client) -> Result<Served, kube::Error> {
        let mut versions = BTreeMap::new();
        for kind in Kind::ALL {
            for version in kind.versions() {
                let listed = if kind.group().is_empty() {
                    client.list_core_api_resources(version).await
                } else {
                    client.list_api_group_resources(&kind.api_version(version)).await
                };
                match listed {
                    Ok(list) if list.resources.iter().any(|r| r.name == kind.plural()) => {
                        if *version != kind.versions()[0] {
                            tracing::warn!(
                                kind = kind.name(),
                                preferred = %kind.api_version(kind.versions()[0]),
                                using = %kind.api_version(version),
                                "the API server does not serve the preferred version; applying the older equivalent"
                            );
                        }
                        versions.insert(kind, *version);
                        break;
                    }
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            if !versions.contains_key(&kind) {
                tracing::warn!(
                    kind = kind.name(),
                    "the API server serves no version of this kind that Plinth knows; Applications that render it report an error"
                );
            }
        }
        Ok(Served { versions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Object;

    #[test]
    fn kind_order_is_the_renderers_apply_order() {
        let ours: Vec<(String, &str)> = Kind::ALL
            .iter()
            .map(|k| (k.api_version(k.versions()[0]), k.name()))
            .collect();
        let renderer: Vec<(String, &str)> = Object::ALLOWED.iter().map(|(a, k)| ((*a).to_owned(), *k)).collect();
        assert_eq!(ours, renderer);
        let mut sorted = Kind::ALL;
        sorted.sort();
        assert_eq!(sorted, Kind::ALL);
    }

    /// The ClusterRole the chart installs grants exactly what the controller does with each kind.
    #[test]
    fn the_cluster_role_covers_every_kind_and_no_secrets() {
        let text = include_str!("../../rbac/clusterrole.yaml");
        let docs = crate::yaml::parse(text, &crate::yaml::Limits::default()).expect("valid YAML");
        let role = docs[0].root.to_json();
        assert_eq!(role["kind"], "ClusterRole");
        let rules = role["rules"].as_array().expect("rules");
        let grants = |group: &str, resource: &str, verb: &str| {
            rules.iter().any(|r| {
                let has = |k: &str, v: &str| r[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
                has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
            })
        };
        for kind in Kind::ALL {
            for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(grants(kind.group(), kind.plural(), verb), "{} {verb}", kind.plural());
            }
            assert!(!grants(kind.group(), kind.plural(), "update"), "writes are applies");
        }
        assert!(grants("plinth.dev", "applications/status", "patch"));
        assert!(grants("plinth.dev", "blueprints", "watch"));
        assert!(
            !grants("plinth.dev", "applications", "patch"),
            "the spec is the developer's"
        );
        assert!(grants("events.k8s.io", "events", "create"));
        assert!(!text.contains("secrets") || !rules.iter().any(|r| r.to_string().contains("secrets")));
        for verb in ["escalate", "bind", "*"] {
            assert!(
                !rules
                    .iter()
                    .any(|r| r["verbs"].as_array().is_some_and(|a| a.iter().any(|x| x == verb))),
                "{verb}"
            );
        }
        let lease = docs[1].root.to_json();
        assert_eq!(lease["kind"], "Role", "leader election is namespaced");
    }

    #[test]
    fn resources_name_group_version_and_plural() {
        let hpa = Kind::HorizontalPodAutoscaler.resource("v2beta2");
        assert_eq!(hpa.api_version, "autoscaling/v2beta2");
        assert_eq!(hpa.plural, "horizontalpodautoscalers");
        assert_eq!(Kind::ConfigMap.resource("v1").api_version, "v1");
        assert_eq!(Kind::from_name("PodDisruptionBudget"), Some(Kind::PodDisruptionBudget));
        assert_eq!(Kind::from_name("Pod"), None);
    }
}
