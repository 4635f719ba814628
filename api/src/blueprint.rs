//! The `Blueprint` resource: a platform team's template set, its parameters and its guardrails.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::application::{Resources, parse_cidr};

/// A template set that expands Applications into workloads, with the limits it enforces.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Validate)]
#[kube(
    group = "plinth.dev",
    version = "v1alpha1",
    kind = "Blueprint",
    status = "BlueprintStatus",
    category = "plinth",
    shortname = "bp",
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".spec.description"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintSpec {
    /// What this Blueprint is for, shown by `plinth blueprints list`.
    #[serde(default)]
    #[validate(length(max = 1024))]
    pub description: String,

    /// JSON Schema (the OpenAPI v3 subset of CRDs) that an Application's `values` must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub parameters: Option<serde_json::Value>,

    /// Defaults for what an Application leaves out.
    #[serde(default)]
    #[validate(nested)]
    pub defaults: Defaults,

    /// Limits on what an Application may ask for.
    #[serde(default)]
    #[validate(nested)]
    pub policy: Guardrails,

    /// Handlebars templates by file name. Names ending in `.yaml.hbs` render objects; names starting with `_` are partials.
    #[validate(custom(function = "check_templates"))]
    pub templates: BTreeMap<String, String>,

    /// How a change of templates, defaults, parameters or policy reaches the Applications: at once, or in gated canary steps. Not part of the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub rollout: Option<crate::rollout::Rollout>,
}

/// Defaults applied to what an Application leaves out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    /// Pods when the Application sets neither `replicas` nor `autoscale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Requests and limits when the Application sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub resources: Option<Resources>,
    /// Defaults merged under the Application's `values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub values: Option<serde_json::Value>,
}

/// Limits a Blueprint enforces on the Applications that use it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Guardrails {
    /// Most pods an Application may run (replicas or autoscale max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 0, max = 10000))]
    pub max_replicas: Option<i32>,
    /// Whether an Application must end up with CPU and memory limits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_limits: bool,
    /// API access an Application may ask for in `permissions`; nothing when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(nested)]
    pub allowed_permissions: Vec<AllowedPermission>,
    /// CIDRs that `allowTo` may reach (each rule's cidr must lie within one); none when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(custom(function = "check_cidrs"))]
    pub allowed_egress_cidrs: Vec<String>,
    /// Image prefixes an Application may use, e.g. `ghcr.io/acme/`; any image when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries: Vec<String>,
    /// Whether `allowFrom` and `allowTo` may name other namespaces.
    #[serde(default = "yes")]
    pub allow_cross_namespace: bool,
}

fn yes() -> bool {
    true
}

/// API access that Applications may request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct AllowedPermission {
    /// API groups; `""` is the core group.
    pub api_groups: Vec<String>,
    /// Resources.
    pub resources: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

/// What the operator observed of a Blueprint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current revision number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Content hash of the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Whether the templates compile (`Ready`), with the error when they do not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Progress of the newest revision towards the Applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutStatus>,
}

/// Schema of a free-form object (`x-kubernetes-preserve-unknown-fields`).
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn check_cidrs(cidrs: &[String]) -> Result<(), ValidationError> {
    for c in cidrs {
        parse_cidr(c).map_err(|m| ValidationError::new("cidr").with_message(m.into()))?;
    }
    Ok(())
}

fn check_templates(t: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if t.keys().all(|k| k.starts_with('_')) {
        return Err(ValidationError::new("templates")
            .with_message("a Blueprint needs at least one template that is not a partial".into()));
    }
    for k in t.keys() {
        let ok = !k.is_empty()
            && k.len() <= 128
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(ValidationError::new("templates")
                .with_message(format!("template name `{k}` must be letters, digits, `_`, `-` and `.`").into()));
        }
    }
    Ok(())
}
