//! Plinth's custom resources, `Application` and `Blueprint` in `plinth.dev/v1alpha1`: the one source of their CRD schemas.
//!
//! The types here carry three layers of rules, each written once:
//! - the OpenAPI schema (types, bounds, patterns) derived with schemars from `#[validate]` and `#[schemars]` attributes;
//! - CEL `x-kubernetes-validations` for cross-field rules, emitted by kube-derive's `KubeSchema`;
//! - the same cross-field rules as `validator` checks, so they hold offline and on API servers without CEL.

pub mod application;
pub mod blueprint;
pub mod conditions;
pub mod image;
pub mod quantity;
pub mod rollout;

pub use application::{Application, ApplicationSpec, ApplicationStatus};
pub use blueprint::{Blueprint, BlueprintSpec, BlueprintStatus};

/// The Kubernetes types Plinth renders, re-exported so every crate imports them from one path.
pub use k8s_openapi;

/// API group of Plinth's resources.
pub const GROUP: &str = "plinth.dev";
/// API version of Plinth's resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of Plinth's resources.
pub const API_VERSION: &str = "plinth.dev/v1alpha1";

/// Label keys Plinth puts on every rendered object.
pub mod labels {
    /// The application's name (Kubernetes recommended label).
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The application instance (Kubernetes recommended label).
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The tool managing the object; always [`MANAGED_BY_VALUE`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "plinth";
    /// The higher-level application this object is part of.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The `Application` that produced the object.
    pub const APPLICATION: &str = "plinth.dev/application";
    /// The `Blueprint` that produced the object.
    pub const BLUEPRINT: &str = "plinth.dev/blueprint";
}

/// Generated CRDs, as the apiserver receives them.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Application::crd(), Blueprint::crd()]
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    #[test]
    fn crds_carry_names_schema_rules_and_no_argo_short_names() {
        let app = serde_json::to_value(super::Application::crd()).expect("serializes");
        assert_eq!(app["spec"]["group"], "plinth.dev");
        assert_eq!(app["spec"]["scope"], "Namespaced");
        assert_eq!(app["spec"]["names"]["categories"], serde_json::json!(["plinth"]));
        let short = app["spec"]["names"]["shortNames"].as_array().expect("short names");
        assert!(
            !short.iter().any(|s| s == "app" || s == "apps"),
            "clashes with Argo CD: {short:?}"
        );
        let text = app.to_string();
        for rule in [
            "!(has(self.replicas) && has(self.autoscale))",
            "self.min <= self.max",
            "has(self.http) != has(self.tcp)",
        ] {
            assert!(text.contains(rule), "missing CEL rule {rule}");
        }
        let spec = &app["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["image"]));
        assert_eq!(spec["properties"]["blueprint"]["default"], "web");
        assert!(
            spec["properties"]["image"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("pinned"))
        );
        let columns: Vec<&str> = app["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Image", "Replicas", "Blueprint", "Age"]);
        let bp = serde_json::to_value(super::Blueprint::crd()).expect("serializes");
        assert_eq!(bp["spec"]["scope"], "Cluster");
    }

    #[test]
    fn every_schema_property_has_a_description() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (k, v) in props {
                    let p = format!("{path}.{k}");
                    if v.get("description").is_none() && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        missing.push(p.clone());
                    }
                    walk(&p, v, missing);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(inner) = schema.get(key) {
                    walk(path, inner, missing);
                }
            }
        }
        let mut missing = Vec::new();
        for crd in super::crds() {
            let v = serde_json::to_value(&crd.spec.versions[0].schema).expect("serializes");
            walk(
                &crd.spec.names.kind,
                &v["openAPIV3Schema"]["properties"]["spec"],
                &mut missing,
            );
        }
        assert!(
            missing.is_empty(),
            "fields without a description (kubectl explain shows nothing): {missing:?}"
        );
    }
}
