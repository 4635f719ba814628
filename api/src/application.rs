//! The `Application` resource: the ~10 lines an application developer writes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::{image, quantity};

/// What an application developer asks for; a Blueprint turns it into a complete workload.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Validate)]
#[kube(
    group = "plinth.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    category = "plinth",
    shortname = "papp",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Replicas","type":"string","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Blueprint","type":"string","priority":1,"jsonPath":".spec.blueprint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscale))").message("set either replicas or autoscale, not both"))]
#[x_kube(validation = Rule::new("!(has(self.port) && has(self.ports))").message("set either port or ports, not both"))]
#[validate(schema(function = "check_spec"))]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Container image with a pinned version: a tag (not `latest`) or a digest, e.g. `ghcr.io/acme/checkout:1.4.2`.
    #[validate(custom(function = "check_image"), length(min = 1, max = 512))]
    pub image: String,

    /// Name of the Blueprint that renders this Application.
    #[serde(default = "default_blueprint")]
    #[validate(custom(function = "check_dns_label"))]
    pub blueprint: String,

    /// Pin: run this revision of the Blueprint (`status.blueprint.revision` shows the one it runs). A rollout never moves a pinned Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1))]
    pub blueprint_revision: Option<i64>,

    /// Fixed number of pods. Leave out to use the Blueprint's default, or set `autoscale` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Scale pods between `min` and `max` on CPU use (a HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub autoscale: Option<Autoscale>,

    /// The port the container listens on, served as `http`. Shorthand for one entry of `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Named ports the container listens on. The first is the main port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 16))]
    pub ports: Vec<Port>,

    /// Environment variables: literal values or references to Secret and ConfigMap keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 128))]
    pub env: Vec<EnvVar>,

    /// CPU and memory requests and limits. Leave out to use the Blueprint's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub resources: Option<Resources>,

    /// How the platform checks the app is healthy; becomes readiness and liveness probes.
    /// Leave out for a TCP check on the main port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub health: Option<Health>,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 256))]
    pub args: Vec<String>,

    /// Who may connect to this app. Everything else is denied (a NetworkPolicy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 64))]
    pub allow_from: Vec<Peer>,

    /// Where this app may connect to, besides cluster DNS. Everything else is denied (a NetworkPolicy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 64))]
    pub allow_to: Vec<Peer>,

    /// Kubernetes API access for the app's own ServiceAccount (a Role and RoleBinding in its namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 32))]
    pub permissions: Vec<Permission>,

    /// Configuration files, mounted read-only under `/etc/config` from a ConfigMap (file name to content).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[validate(custom(function = "check_config_keys"))]
    pub config: BTreeMap<String, String>,

    /// Blueprint-specific parameters, checked against the Blueprint's parameter schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::blueprint::free_form_object")]
    pub values: Option<serde_json::Value>,
}

fn default_blueprint() -> String {
    "web".to_owned()
}

/// CPU-based autoscaling bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("autoscale.min must not exceed autoscale.max"))]
#[validate(schema(function = "check_autoscale"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscale {
    /// Fewest pods.
    #[validate(range(min = 1, max = 1000))]
    pub min: i32,
    /// Most pods.
    #[validate(range(min = 1, max = 1000))]
    pub max: i32,
    /// Target average CPU use, in percent of the request.
    #[serde(default = "default_cpu_percent")]
    #[validate(range(min = 1, max = 100))]
    pub cpu_percent: i32,
}

fn default_cpu_percent() -> i32 {
    80
}

/// Transport protocol of a port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A named container port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port name (IANA service name: lower-case letters, digits and `-`, at most 15 characters), e.g. `http`.
    #[validate(custom(function = "check_port_name"))]
    pub name: String,
    /// Port number.
    #[validate(range(min = 1, max = 65535))]
    pub port: i32,
    /// Protocol; TCP when left out.
    #[serde(default)]
    pub protocol: Protocol,
}

/// An environment variable: exactly one of `value`, `secret` or `configMap`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("[has(self.value), has(self.secret), has(self.configMap)].filter(x, x).size() == 1").message("set exactly one of value, secret or configMap"))]
#[validate(schema(function = "check_env"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[validate(custom(function = "check_env_name"))]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(max = 32768))]
    pub value: Option<String>,
    /// A key of a Secret in the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub secret: Option<KeyRef>,
    /// A key of a ConfigMap in the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub config_map: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the Secret or ConfigMap.
    #[validate(custom(function = "check_dns_subdomain"))]
    pub name: String,
    /// Key within it.
    #[validate(custom(function = "check_config_key"))]
    pub key: String,
    /// Start the pod even when the key is missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// CPU and memory requests and limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// What the pod is guaranteed and scheduled by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub requests: Option<ResourceList>,
    /// The most the pod may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub limits: Option<ResourceList>,
}

/// Amounts of CPU and memory as Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct ResourceList {
    /// CPU, e.g. `250m` or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_quantity"))]
    #[schemars(regex(pattern = crate::quantity::PATTERN))]
    pub cpu: Option<String>,
    /// Memory, e.g. `256Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_quantity"))]
    #[schemars(regex(pattern = crate::quantity::PATTERN))]
    pub memory: Option<String>,
}

/// Health check: exactly one of `http` or `tcp`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("has(self.http) != has(self.tcp)").message("set exactly one of http or tcp"))]
#[validate(schema(function = "check_health"))]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// An HTTP GET that must answer 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub http: Option<HttpCheck>,
    /// A TCP connection that must open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub tcp: Option<TcpCheck>,
    /// Seconds to wait after start before the first liveness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
}

/// An HTTP health check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Path to GET, starting with `/`.
    #[validate(custom(function = "check_http_path"))]
    pub path: String,
    /// Port to check; the main port when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// A TCP health check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct TcpCheck {
    /// Port to check; the main port when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// A network peer: another app (optionally in another namespace), a namespace by name or labels, or a CIDR.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("has(self.cidr) != (has(self.app) || has(self.__namespace__) || has(self.namespaceSelector))").message("set cidr, or one of app, namespace and namespaceSelector"))]
#[x_kube(validation = Rule::new("!(has(self.__namespace__) && has(self.namespaceSelector))").message("set either namespace or namespaceSelector, not both"))]
#[x_kube(validation = Rule::new("!has(self.except) || has(self.cidr)").message("except applies only to cidr"))]
#[validate(schema(function = "check_peer"))]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Another Application, by name (its pods carry `plinth.dev/application: <app>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_dns_label"))]
    pub app: Option<String>,
    /// Namespace of `app`; without `app`, every pod in this namespace. The app's own namespace when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_dns_label"))]
    pub namespace: Option<String>,
    /// Namespaces selected by their labels (with `app`: that app in those namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_label_map"))]
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// An IP range outside the cluster, e.g. `198.51.100.0/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "check_cidr"))]
    pub cidr: Option<String>,
    /// Ranges inside `cidr` to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 32))]
    pub except: Vec<String>,
    /// Ports the rule allows; all of the target's ports when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested, length(max = 32))]
    pub ports: Vec<PeerPort>,
}

/// A port or port range of a network rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("!has(self.endPort) || self.endPort >= self.port").message("endPort must not be below port"))]
#[validate(schema(function = "check_peer_port"))]
#[serde(rename_all = "camelCase")]
pub struct PeerPort {
    /// Port number, or the first of a range.
    #[validate(range(min = 1, max = 65535))]
    pub port: i32,
    /// Last port of a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 65535))]
    pub end_port: Option<i32>,
    /// Protocol; TCP when left out.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Kubernetes API access for the app's ServiceAccount, like a Role rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// API groups; `""` is the core group.
    #[validate(length(min = 1, max = 16))]
    pub api_groups: Vec<String>,
    /// Resources, e.g. `configmaps` or `leases`.
    #[validate(length(min = 1, max = 32))]
    pub resources: Vec<String>,
    /// Verbs, e.g. `get`, `list`, `watch`.
    #[validate(length(min = 1, max = 8), custom(function = "check_verbs"))]
    pub verbs: Vec<String>,
    /// Restrict the rule to these object names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 32))]
    pub resource_names: Vec<String>,
}

/// What the operator observed and did; written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Rendered, Applied, Progressing and Degraded, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Blueprint and revision the workload was rendered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint: Option<BlueprintRef>,
    /// Available and desired pods, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
    /// Each rendered object and whether it is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceStatus>,
    /// Hash of the last applied desired state; an unchanged hash means nothing to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// Fingerprint of the fields Plinth owns on its objects after the last apply; a difference means someone edited them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_fields_hash: Option<String>,
}

/// The Blueprint revision an Application runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintRef {
    /// Blueprint name.
    pub name: String,
    /// Revision number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Content hash of the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// One rendered object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Whether the object is ready.
    pub ready: bool,
    /// A short summary, e.g. `2/3 replicas available`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

// ---- validator functions: the cross-field rules again, for offline checks and API servers without CEL ----

fn invalid(code: &'static str, message: String) -> ValidationError {
    ValidationError::new(code).with_message(message.into())
}

fn check_spec(spec: &ApplicationSpec) -> Result<(), ValidationError> {
    if spec.replicas.is_some() && spec.autoscale.is_some() {
        return Err(invalid(
            "exclusive",
            "set either replicas or autoscale, not both".into(),
        ));
    }
    if spec.port.is_some() && !spec.ports.is_empty() {
        return Err(invalid("exclusive", "set either port or ports, not both".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &spec.ports {
        if !names.insert(p.name.as_str()) {
            return Err(invalid(
                "unique",
                format!("port name `{}` is used twice in ports", p.name),
            ));
        }
    }
    let mut env_names = std::collections::BTreeSet::new();
    for e in &spec.env {
        if !env_names.insert(e.name.as_str()) {
            return Err(invalid("unique", format!("env variable `{}` is set twice", e.name)));
        }
    }
    Ok(())
}

fn check_autoscale(a: &Autoscale) -> Result<(), ValidationError> {
    if a.min > a.max {
        return Err(invalid(
            "range",
            format!("autoscale.min ({}) must not exceed autoscale.max ({})", a.min, a.max),
        ));
    }
    Ok(())
}

fn check_env(e: &EnvVar) -> Result<(), ValidationError> {
    let set = [e.value.is_some(), e.secret.is_some(), e.config_map.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if set != 1 {
        return Err(invalid(
            "exclusive",
            format!("env `{}`: set exactly one of value, secret or configMap", e.name),
        ));
    }
    Ok(())
}

fn check_health(h: &Health) -> Result<(), ValidationError> {
    if h.http.is_some() == h.tcp.is_some() {
        return Err(invalid("exclusive", "health: set exactly one of http or tcp".into()));
    }
    Ok(())
}

fn check_peer(p: &Peer) -> Result<(), ValidationError> {
    let selects_pods = p.app.is_some() || p.namespace.is_some() || p.namespace_selector.is_some();
    if p.cidr.is_some() == selects_pods {
        return Err(invalid(
            "exclusive",
            "set cidr, or one of app, namespace and namespaceSelector".into(),
        ));
    }
    if p.namespace.is_some() && p.namespace_selector.is_some() {
        return Err(invalid(
            "exclusive",
            "set either namespace or namespaceSelector, not both".into(),
        ));
    }
    if !p.except.is_empty() {
        let Some(cidr) = &p.cidr else {
            return Err(invalid("exclusive", "except applies only to cidr".into()));
        };
        let outer = parse_cidr(cidr).map_err(|m| invalid("cidr", m))?;
        for e in &p.except {
            let inner = parse_cidr(e).map_err(|m| invalid("cidr", m))?;
            if !cidr_contains(outer, inner) {
                return Err(invalid("cidr", format!("except `{e}` is not inside cidr `{cidr}`")));
            }
        }
    }
    Ok(())
}

fn check_peer_port(p: &PeerPort) -> Result<(), ValidationError> {
    match p.end_port {
        Some(end) if end < p.port => Err(invalid("range", format!("endPort {end} is below port {}", p.port))),
        _ => Ok(()),
    }
}

fn check_image(image: &str) -> Result<(), ValidationError> {
    image::parse(image)
        .map(|_| ())
        .map_err(|e| invalid("image", e.to_string()))
}

fn check_quantity(q: &str) -> Result<(), ValidationError> {
    quantity::parse(q)
        .map(|_| ())
        .map_err(|e| invalid("quantity", e.to_string()))
}

fn check_verbs(verbs: &[String]) -> Result<(), ValidationError> {
    const KNOWN: [&str; 8] = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    for v in verbs {
        if !KNOWN.contains(&v.as_str()) {
            return Err(invalid(
                "verb",
                format!("verb `{v}` is not one of {}", KNOWN.join(", ")),
            ));
        }
    }
    Ok(())
}

fn check_http_path(p: &str) -> Result<(), ValidationError> {
    if !p.starts_with('/') || p.len() > 1024 || p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "path",
            format!("health path `{p}` must start with `/` and hold no spaces or control characters"),
        ));
    }
    Ok(())
}

/// Whether `s` is a DNS-1123 label: lower-case alphanumerics and `-`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_dns_label(s: &str) -> Result<(), ValidationError> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(invalid(
            "dns_label",
            format!(
                "`{s}` must be lower-case letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit"
            ),
        ))
    }
}

fn check_dns_subdomain(s: &str) -> Result<(), ValidationError> {
    if is_dns_subdomain(s) {
        Ok(())
    } else {
        Err(invalid(
            "dns_subdomain",
            format!("`{s}` is not a valid object name (lower-case letters, digits, `-` and `.`)"),
        ))
    }
}

fn check_port_name(s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "port_name",
            format!("port name `{s}` must be 1-15 lower-case letters, digits and single `-`, with at least one letter"),
        ))
    }
}

fn check_env_name(s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "env_name",
            format!("env name `{s}` must be letters, digits, `_`, `-` and `.`, not starting with a digit"),
        ))
    }
}

fn check_config_key(s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "config_key",
            format!("key `{s}` must be letters, digits, `_`, `-` and `.`"),
        ))
    }
}

fn check_config_keys(m: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if m.len() > 64 {
        return Err(invalid("length", "config holds more than 64 files".into()));
    }
    let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 512 * 1024 {
        return Err(invalid(
            "length",
            "config holds more than 512 KiB; a ConfigMap holds at most 1 MiB".into(),
        ));
    }
    m.keys().try_for_each(|k| check_config_key(k))
}

fn check_label_map(m: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (k, v) in m {
        if !is_label_key(k) {
            return Err(invalid("label", format!("`{k}` is not a valid label key")));
        }
        if !is_label_value(v) {
            return Err(invalid(
                "label",
                format!("`{v}` (label `{k}`) is not a valid label value"),
            ));
        }
    }
    Ok(())
}

/// Whether `s` is a valid label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns_subdomain(p)) && !name.is_empty() && is_label_value(name)
}

/// Whether `s` is a valid label value: at most 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into its address and prefix length; the address must be the network address.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a CIDR such as `198.51.100.0/24`"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}`: `{addr}` is not an IP address"))?;
    let max: u32 = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| u32::from(*l) <= max)
        .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?;
    let bits = ip_bits(addr);
    let host_bits = max - u32::from(len);
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let host_mask = if max == 32 { host_mask & 0xffff_ffff } else { host_mask };
    if bits & host_mask != 0 {
        return Err(format!("`{s}` has host bits set; did you mean the network address?"));
    }
    Ok((addr, len))
}

fn ip_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Whether CIDR `inner` lies within CIDR `outer` (same address family).
pub fn cidr_contains(outer: (IpAddr, u8), inner: (IpAddr, u8)) -> bool {
    if outer.0.is_ipv4() != inner.0.is_ipv4() || inner.1 < outer.1 {
        return false;
    }
    let max: u32 = if outer.0.is_ipv4() { 32 } else { 128 };
    let shift = max - u32::from(outer.1);
    let (a, b) = (ip_bits(outer.0), ip_bits(inner.0));
    shift >= 128 || (a >> shift) == (b >> shift)
}

fn check_cidr(s: &str) -> Result<(), ValidationError> {
    parse_cidr(s).map(|_| ()).map_err(|m| invalid("cidr", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml_json: serde_json::Value) -> ApplicationSpec {
        serde_json::from_value(yaml_json).expect("spec parses")
    }

    #[test]
    fn the_ten_line_example_is_valid() {
        let s = spec(serde_json::json!({
            "image": "ghcr.io/acme/checkout:1.4.2", "port": 8080, "replicas": 3, "allowFrom": [{"app": "frontend"}]
        }));
        assert_eq!(s.blueprint, "web");
        s.validate().expect("valid");
    }

    #[test]
    fn cross_field_rules_are_enforced() {
        let both = spec(serde_json::json!({"image": "a/b:1", "replicas": 2, "autoscale": {"min": 1, "max": 3}}));
        assert!(both.validate().is_err());
        let inverted = spec(serde_json::json!({"image": "a/b:1", "autoscale": {"min": 5, "max": 3}}));
        assert!(inverted.validate().is_err());
        let peer = spec(serde_json::json!({"image": "a/b:1", "allowTo": [{"app": "x", "cidr": "10.0.0.0/8"}]}));
        assert!(peer.validate().is_err());
        let except_outside = spec(
            serde_json::json!({"image": "a/b:1", "allowTo": [{"cidr": "198.51.100.0/24", "except": ["203.0.113.0/25"]}]}),
        );
        assert!(except_outside.validate().is_err());
        let env = spec(
            serde_json::json!({"image": "a/b:1", "env": [{"name": "A", "value": "1", "secret": {"name": "s", "key": "k"}}]}),
        );
        assert!(env.validate().is_err());
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(parse_cidr("198.51.100.0/24").is_ok());
        assert!(parse_cidr("198.51.100.1/24").is_err());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("1.2.3.4/33").is_err());
        let outer = parse_cidr("198.18.0.0/15").expect("valid");
        assert!(cidr_contains(outer, parse_cidr("198.19.1.0/24").expect("valid")));
        assert!(!cidr_contains(outer, parse_cidr("198.20.0.0/24").expect("valid")));
        assert!(cidr_contains(parse_cidr("0.0.0.0/0").expect("valid"), outer));
    }
}
