//! The template context: an Application with its Blueprint's defaults applied, in the shapes Kubernetes uses.
//!
//! Templates stay short and readable because the logic lives here: ports, probes, env, resources, RBAC rules
//! and NetworkPolicy rules arrive as ready-made Kubernetes structures that a template prints with `{{json …}}`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Probe, ResourceRequirements,
    SecretKeySelector, ServicePort, TCPSocketAction,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use plinth_api::application::{Autoscale, Peer, Protocol, ResourceList};
use plinth_api::{Application, labels};
use serde::{Deserialize, Serialize};

use super::blueprint::LoadedBlueprint;

/// Cluster-wide settings the operator (or `plinth render`) passes to every render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Platform {
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Where cluster DNS runs; every app may reach it.
    pub dns: DnsTarget,
    /// CPU request when neither the Application nor its Blueprint sets one.
    pub default_cpu_request: String,
    /// Memory request when neither the Application nor its Blueprint sets one.
    pub default_memory_request: String,
}

/// The cluster DNS pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsTarget {
    /// Namespace of the DNS pods.
    pub namespace: String,
    /// Labels of the DNS pods.
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            cluster_domain: "cluster.local".into(),
            dns: DnsTarget {
                namespace: "kube-system".into(),
                pod_labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            },
            default_cpu_request: "100m".into(),
            default_memory_request: "128Mi".into(),
        }
    }
}

/// Label selecting a namespace by name (set by Kubernetes 1.21+ on every namespace).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What every template sees.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context<'a> {
    /// Names and labels.
    pub app: AppView,
    /// The Blueprint rendering this Application.
    pub blueprint: BlueprintView<'a>,
    /// The container image.
    pub image: &'a str,
    /// Pods, when not autoscaled.
    pub replicas: Option<i32>,
    /// Autoscaling bounds, when asked for.
    pub autoscale: Option<&'a Autoscale>,
    /// Container ports.
    pub container_ports: Vec<ContainerPort>,
    /// Service ports, one per container port.
    pub service_ports: Vec<ServicePort>,
    /// Environment variables.
    pub env: Vec<EnvVar>,
    /// Requests (always set) and limits.
    pub resources: ResourceRequirements,
    /// Readiness and liveness probes, when the app has a health check or a port.
    pub probes: Option<Probes>,
    /// Entrypoint override.
    pub command: Option<&'a [String]>,
    /// Entrypoint arguments.
    pub args: Option<&'a [String]>,
    /// Role rules for the app's ServiceAccount; empty when none were asked for.
    pub permissions: Vec<PolicyRule>,
    /// The app's ServiceAccount.
    pub service_account: ServiceAccountView,
    /// NetworkPolicy rules.
    pub network: NetworkView,
    /// The ConfigMap of `config`, when there is one.
    pub config: Option<ConfigView<'a>>,
    /// PodDisruptionBudget settings, when the app runs two or more pods.
    pub disruption_budget: Option<DisruptionView>,
    /// Blueprint defaults merged with the Application's `values`.
    pub values: serde_json::Value,
    /// Cluster settings.
    pub platform: &'a Platform,
}

/// Names and labels of the Application.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    /// Application name; also the name of its Deployment, Service and ServiceAccount.
    pub name: String,
    /// Application namespace.
    pub namespace: String,
    /// Labels for pods (and every object).
    pub labels: BTreeMap<String, String>,
    /// Labels that select the app's pods; they never change.
    pub selector_labels: BTreeMap<String, String>,
}

/// The Blueprint as templates see it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintView<'a> {
    /// Blueprint name.
    pub name: &'a str,
    /// Content hash.
    pub hash: &'a str,
}

/// Probes built from `health`.
#[derive(Debug, Serialize)]
pub struct Probes {
    /// Readiness probe.
    pub readiness: Probe,
    /// Liveness probe.
    pub liveness: Probe,
}

/// The app's ServiceAccount.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountView {
    /// Its name.
    pub name: String,
    /// Whether pods mount its token: only when the app asked for API permissions.
    pub automount_token: bool,
}

/// NetworkPolicy rules.
#[derive(Debug, Serialize)]
pub struct NetworkView {
    /// Who may connect in.
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Where the app may connect to, cluster DNS first.
    pub egress: Vec<NetworkPolicyEgressRule>,
}

/// The app's ConfigMap.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView<'a> {
    /// ConfigMap name.
    pub name: String,
    /// File name to content.
    pub data: &'a BTreeMap<String, String>,
    /// Where the files are mounted.
    pub mount_path: &'static str,
}

/// PodDisruptionBudget settings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionView {
    /// Pods that may be down at once during voluntary disruptions.
    pub max_unavailable: i32,
}

/// Labels selecting an Application's pods. They never change once a Deployment exists.
pub fn selector_labels(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), app_name.to_owned()),
        (labels::INSTANCE.to_owned(), app_name.to_owned()),
    ])
}

/// Labels Plinth puts on every object it renders.
pub fn standard_labels(app: &Application, blueprint: &str) -> BTreeMap<String, String> {
    let name = app.metadata.name.clone().unwrap_or_default();
    let part_of = app
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::PART_OF))
        .cloned()
        .unwrap_or_else(|| name.clone());
    let mut l = selector_labels(&name);
    l.insert(labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned());
    l.insert(labels::PART_OF.to_owned(), part_of);
    l.insert(labels::APPLICATION.to_owned(), name);
    l.insert(labels::BLUEPRINT.to_owned(), blueprint.to_owned());
    l
}

/// Builds the context. The Application must already have passed validation and guardrails.
pub fn build<'a>(
    app: &'a Application,
    bp: &'a LoadedBlueprint,
    platform: &'a Platform,
    values: serde_json::Value,
) -> Context<'a> {
    let spec = &app.spec;
    let name = app.metadata.name.clone().unwrap_or_default();
    let namespace = app.metadata.namespace.clone().unwrap_or_default();
    let ports = effective_ports(app);
    let main_port = ports.first().cloned();
    let replicas = match (&spec.autoscale, spec.replicas) {
        (Some(_), _) => None,
        (None, Some(r)) => Some(r),
        (None, None) => Some(bp.spec.defaults.replicas.unwrap_or(1)),
    };
    let min_pods = spec.autoscale.as_ref().map_or(replicas.unwrap_or(0), |a| a.min);

    let container_ports = ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.0.clone()),
            container_port: p.1,
            protocol: Some(p.2.as_str().to_owned()),
            ..Default::default()
        })
        .collect();
    let service_ports = ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.0.clone()),
            port: p.1,
            target_port: Some(IntOrString::String(p.0.clone())),
            protocol: Some(p.2.as_str().to_owned()),
            ..Default::default()
        })
        .collect();

    let env = spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: e.value.clone(),
            value_from: match (&e.secret, &e.config_map) {
                (Some(s), _) => Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: s.name.clone(),
                        key: s.key.clone(),
                        optional: s.optional.then_some(true),
                    }),
                    ..Default::default()
                }),
                (None, Some(c)) => Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: c.name.clone(),
                        key: c.key.clone(),
                        optional: c.optional.then_some(true),
                    }),
                    ..Default::default()
                }),
                (None, None) => None,
            },
        })
        .collect();

    let probes = probes(app, main_port.as_ref());
    let permissions: Vec<PolicyRule> = spec
        .permissions
        .iter()
        .map(|p| PolicyRule {
            api_groups: Some(p.api_groups.clone()),
            resources: Some(p.resources.clone()),
            verbs: p.verbs.clone(),
            resource_names: (!p.resource_names.is_empty()).then(|| p.resource_names.clone()),
            non_resource_urls: None,
        })
        .collect();

    let own_ports: Vec<NetworkPolicyPort> = ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(p.1)),
            end_port: None,
            protocol: Some(p.2.as_str().to_owned()),
        })
        .collect();
    let ingress = spec
        .allow_from
        .iter()
        .map(|peer| NetworkPolicyIngressRule {
            from: Some(vec![policy_peer(peer, &namespace)]),
            ports: non_empty(if peer.ports.is_empty() {
                own_ports.clone()
            } else {
                peer_ports(peer)
            }),
        })
        .collect();
    let mut egress = vec![dns_rule(platform)];
    egress.extend(spec.allow_to.iter().map(|peer| NetworkPolicyEgressRule {
        to: Some(vec![policy_peer(peer, &namespace)]),
        ports: non_empty(peer_ports(peer)),
    }));

    Context {
        app: AppView {
            labels: standard_labels(app, &bp.name),
            selector_labels: selector_labels(&name),
            name: name.clone(),
            namespace,
        },
        blueprint: BlueprintView {
            name: &bp.name,
            hash: &bp.hash,
        },
        image: &spec.image,
        replicas,
        autoscale: spec.autoscale.as_ref(),
        container_ports,
        service_ports,
        env,
        resources: resources(app, bp, platform),
        probes,
        command: (!spec.command.is_empty()).then_some(spec.command.as_slice()),
        args: (!spec.args.is_empty()).then_some(spec.args.as_slice()),
        service_account: ServiceAccountView {
            name: name.clone(),
            automount_token: !permissions.is_empty(),
        },
        permissions,
        network: NetworkView { ingress, egress },
        config: (!spec.config.is_empty()).then(|| ConfigView {
            name: format!("{name}-config"),
            data: &spec.config,
            mount_path: "/etc/config",
        }),
        disruption_budget: (min_pods >= 2).then_some(DisruptionView { max_unavailable: 1 }),
        values,
        platform,
    }
}

/// `(name, port, protocol)` of each port, `port` shorthand included.
pub fn effective_ports(app: &Application) -> Vec<(String, i32, Protocol)> {
    match app.spec.port {
        Some(p) => vec![("http".to_owned(), p, Protocol::Tcp)],
        None => app
            .spec
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port, p.protocol))
            .collect(),
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn peer_ports(peer: &Peer) -> Vec<NetworkPolicyPort> {
    peer.ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(p.port)),
            end_port: p.end_port,
            protocol: Some(p.protocol.as_str().to_owned()),
        })
        .collect()
}

fn match_labels(m: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(m),
        match_expressions: None,
    }
}

fn policy_peer(peer: &Peer, own_namespace: &str) -> NetworkPolicyPeer {
    if let Some(cidr) = &peer.cidr {
        return NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                except: non_empty(peer.except.clone()),
            }),
            ..Default::default()
        };
    }
    let namespace_selector = match (&peer.namespace, &peer.namespace_selector) {
        (Some(ns), _) if peer.app.is_none() || ns != own_namespace => Some(match_labels(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            ns.clone(),
        )]))),
        (_, Some(sel)) => Some(match_labels(sel.clone())),
        _ => None,
    };
    let pod_selector = peer
        .app
        .as_ref()
        .map(|a| match_labels(BTreeMap::from([(labels::APPLICATION.to_owned(), a.clone())])));
    NetworkPolicyPeer {
        ip_block: None,
        namespace_selector,
        pod_selector,
    }
}

fn dns_rule(platform: &Platform) -> NetworkPolicyEgressRule {
    let port = |proto: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        end_port: None,
        protocol: Some(proto.to_owned()),
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: None,
            namespace_selector: Some(match_labels(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                platform.dns.namespace.clone(),
            )]))),
            pod_selector: Some(match_labels(platform.dns.pod_labels.clone())),
        }]),
        ports: Some(vec![port("UDP"), port("TCP")]),
    }
}

fn probes(app: &Application, main_port: Option<&(String, i32, Protocol)>) -> Option<Probes> {
    let health = app.spec.health.as_ref();
    let port_of = |explicit: Option<i32>| match (explicit, main_port) {
        (Some(p), _) => Some(IntOrString::Int(p)),
        (None, Some(m)) => Some(IntOrString::String(m.0.clone())),
        (None, None) => None,
    };
    let (http, tcp) = match health {
        Some(h) => match (&h.http, &h.tcp) {
            (Some(http), _) => (
                Some(HTTPGetAction {
                    path: Some(http.path.clone()),
                    port: port_of(http.port)?,
                    ..Default::default()
                }),
                None,
            ),
            (None, Some(tcp)) => (
                None,
                Some(TCPSocketAction {
                    port: port_of(tcp.port)?,
                    host: None,
                }),
            ),
            (None, None) => return None,
        },
        None => match main_port {
            Some(m) if m.2 == Protocol::Tcp => (
                None,
                Some(TCPSocketAction {
                    port: IntOrString::String(m.0.clone()),
                    host: None,
                }),
            ),
            _ => return None,
        },
    };
    let probe = |initial_delay: Option<i32>, period: i32| Probe {
        http_get: http.clone(),
        tcp_socket: tcp.clone(),
        initial_delay_seconds: initial_delay,
        period_seconds: Some(period),
        failure_threshold: Some(3),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let delay = health.and_then(|h| h.initial_delay_seconds);
    Some(Probes {
        readiness: probe(None, 5),
        liveness: probe(Some(delay.unwrap_or(10)), 10),
    })
}

fn merge_list(app: Option<&ResourceList>, default: Option<&ResourceList>) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    let pick = |f: fn(&ResourceList) -> Option<&String>| app.and_then(f).or_else(|| default.and_then(f)).cloned();
    if let Some(cpu) = pick(|l| l.cpu.as_ref()) {
        out.insert("cpu".to_owned(), Quantity(cpu));
    }
    if let Some(mem) = pick(|l| l.memory.as_ref()) {
        out.insert("memory".to_owned(), Quantity(mem));
    }
    out
}

/// Requests and limits: the Application's, else the Blueprint's defaults, with requests always set.
pub fn resources(app: &Application, bp: &LoadedBlueprint, platform: &Platform) -> ResourceRequirements {
    let app_res = app.spec.resources.as_ref();
    let def = bp.spec.defaults.resources.as_ref();
    let mut requests = merge_list(
        app_res.and_then(|r| r.requests.as_ref()),
        def.and_then(|r| r.requests.as_ref()),
    );
    let limits = merge_list(
        app_res.and_then(|r| r.limits.as_ref()),
        def.and_then(|r| r.limits.as_ref()),
    );
    // A limit without a request makes Kubernetes request the limit; keep that meaning explicit.
    for (k, default) in [
        ("cpu", &platform.default_cpu_request),
        ("memory", &platform.default_memory_request),
    ] {
        if !requests.contains_key(k) {
            let q = limits.get(k).cloned().unwrap_or_else(|| Quantity(default.clone()));
            requests.insert(k.to_owned(), q);
        }
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: non_empty_map(limits),
        claims: None,
    }
}

fn non_empty_map<K, V>(m: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!m.is_empty()).then_some(m)
}
