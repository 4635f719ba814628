//! Condition types and reasons shared by the operator and the CLI (Kubernetes API conventions).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The workload is applied and every rendered resource reports ready.
pub const READY: &str = "Ready";
/// The Application validated and rendered with its Blueprint.
pub const RENDERED: &str = "Rendered";
/// Every rendered object was applied to the cluster.
pub const APPLIED: &str = "Applied";
/// A change is being rolled out and has not settled.
pub const PROGRESSING: &str = "Progressing";
/// Something needs attention: a render, apply or readiness failure.
pub const DEGRADED: &str = "Degraded";

/// All condition types in the order `kubectl describe` shows them.
pub const ALL: [&str; 5] = [READY, RENDERED, APPLIED, PROGRESSING, DEGRADED];
