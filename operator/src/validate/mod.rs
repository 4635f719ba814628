//! Validation shared by the CLI, the operator and the renderer: rule violations as [`Problem`]s with field paths.
//!
//! `plinth validate` runs [`engine::check`]: the structural schema, the CEL rules ([`cel`]), the validator
//! rules, Blueprint and guardrails and a full render dry-run, each finding placed at `file:line:col`.

pub mod cel;
pub mod engine;
pub mod finding;
pub mod inputs;
pub mod jsonschema;
pub mod kube;
pub mod output;
pub(crate) mod parallel;

pub use engine::{Options, Outcome, check};
pub use finding::{Finding, Severity};
pub use inputs::Input;

use validator::{ValidationErrors, ValidationErrorsKind};

use crate::problem::{Problem, codes};

/// Turns `validator` errors into problems whose paths use the API's camelCase field names.
pub fn validator_problems(errors: &ValidationErrors, base: Vec<String>) -> Vec<Problem> {
    let mut out = Vec::new();
    collect(errors, base, &mut out);
    out.sort_by(|a, b| format!("{:?}", a.location).cmp(&format!("{:?}", b.location)));
    out
}

fn collect(errors: &ValidationErrors, base: Vec<String>, out: &mut Vec<Problem>) {
    for (field, kind) in errors.errors() {
        let mut path = base.clone();
        if *field != "__all__" {
            path.push(camel_case(field));
        }
        match kind {
            ValidationErrorsKind::Field(errs) => {
                for e in errs {
                    let message = match &e.message {
                        Some(m) => m.to_string(),
                        None => describe(e),
                    };
                    out.push(Problem::field(codes::SPEC, e.code.to_string(), path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    let mut p = path.clone();
                    p.push(i.to_string());
                    collect(inner, p, out);
                }
            }
        }
    }
}

fn describe(e: &validator::ValidationError) -> String {
    let param = |k: &str| e.params.get(k).map(|v| v.to_string());
    match e.code.as_ref() {
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!(
                "must be between {min} and {max}, is {}",
                param("value").unwrap_or_default()
            ),
            (Some(min), None) => format!("must be at least {min}"),
            (None, Some(max)) => format!("must be at most {max}"),
            _ => "is out of range".into(),
        },
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => {
                format!("must have between {min} and {max} entries or characters")
            }
            (Some(min), None) => format!("must have at least {min} entries or characters"),
            (None, Some(max)) => format!("must have at most {max} entries or characters"),
            _ => "has the wrong length".into(),
        },
        other => format!("fails the `{other}` rule"),
    }
}

/// `allow_from` to `allowFrom`.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The `openAPIV3Schema` of a Plinth CRD by kind (`Application` or `Blueprint`), as the apiserver gets it.
pub fn crd_schema(kind: &str) -> Option<&'static serde_json::Value> {
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<Vec<(String, serde_json::Value)>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        plinth_api::crds()
            .into_iter()
            .filter_map(|crd| {
                let schema = crd
                    .spec
                    .versions
                    .first()?
                    .schema
                    .as_ref()?
                    .open_api_v3_schema
                    .as_ref()?;
                let mut schema = serde_json::to_value(schema).ok()?;
                // The apiserver knows these on every object; the CRD schema leaves them out.
                if let Some(props) = schema.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
                    props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
                    props.insert("kind".into(), serde_json::json!({"type": "string"}));
                    props.insert("metadata".into(), serde_json::json!({"type": "object"}));
                }
                Some((crd.spec.names.kind.clone(), schema))
            })
            .collect()
    });
    all.iter().find(|(k, _)| k == kind).map(|(_, s)| s)
}

/// Checks a Plinth object against its CRD schema and decodes it: every schema violation, or the typed object.
pub fn decode<T: serde::de::DeserializeOwned>(kind: &str, json: serde_json::Value) -> Result<T, Vec<Problem>> {
    if let Some(schema) = crd_schema(kind) {
        let violations = crate::schema::validate(schema, &json);
        if !violations.is_empty() {
            return Err(violations
                .into_iter()
                .map(|v| {
                    let mut p = Problem::field(codes::SPEC, v.rule, v.path, v.message);
                    p.hint = v.hint;
                    p
                })
                .collect());
        }
    }
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path: Vec<String> = e.path().iter().map(|s| s.to_string()).filter(|s| s != "?").collect();
        vec![Problem::field(codes::SPEC, "type", path, e.into_inner().to_string())]
    })
}

/// Validates one text as `plinth validate` would (bundled Blueprints only): the entry point for fuzzing.
pub fn validate_text(file: &str, text: &str, options: &Options) -> Outcome {
    let blueprints = crate::render::bundled::objects().unwrap_or_default();
    check(
        &[Input { file, text }],
        blueprints,
        std::collections::BTreeMap::new(),
        options,
    )
}
