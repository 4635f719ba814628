//! JSON Schema (draft-07, which editors support widely) of Application and Blueprint, derived from the
//! CRD schemas so it never drifts: `# yaml-language-server: $schema=…` gives completion and checks.

use serde_json::{Map, Value, json};

/// The draft the schemas follow.
pub const DRAFT: &str = "http://json-schema.org/draft-07/schema#";

/// The JSON Schema of one kind (`Application` or `Blueprint`), or of both (chosen by `kind`) when `None`.
pub fn schema(kind: Option<&str>) -> Option<Value> {
    let mut out = match kind {
        Some(k) => of_kind(k)?,
        None => {
            let app = of_kind("Application")?;
            let bp = of_kind("Blueprint")?;
            json!({
                "title": "Plinth manifest (Application or Blueprint)",
                "type": "object",
                "required": ["apiVersion", "kind"],
                "properties": {
                    "apiVersion": {"const": plinth_api::API_VERSION},
                    "kind": {"enum": ["Application", "Blueprint"]},
                },
                "if": {"properties": {"kind": {"const": "Blueprint"}}},
                "then": bp,
                "else": app,
            })
        }
    };
    if let Some(obj) = out.as_object_mut() {
        obj.insert("$schema".into(), Value::String(DRAFT.into()));
    }
    Some(out)
}

fn of_kind(kind: &str) -> Option<Value> {
    let crd = super::crd_schema(kind)?;
    let mut s = convert(crd);
    let obj = s.as_object_mut()?;
    obj.insert(
        "title".into(),
        Value::String(format!("{kind} ({})", plinth_api::API_VERSION)),
    );
    let props = obj.get_mut("properties")?.as_object_mut()?;
    props.insert(
        "apiVersion".into(),
        json!({"const": plinth_api::API_VERSION, "description": "API group and version."}),
    );
    props.insert("kind".into(), json!({"const": kind}));
    let mut meta = json!({
        "type": "object",
        "description": "Standard object metadata.",
        "properties": {
            "name": {"type": "string", "maxLength": 253, "description": "Object name."},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    });
    if kind == "Application" {
        meta["properties"]["namespace"] = json!({"type": "string", "maxLength": 63, "description": "Namespace."});
        meta["properties"]["name"]["pattern"] = json!("^[a-z]([-a-z0-9]*[a-z0-9])?$");
        meta["properties"]["name"]["maxLength"] = json!(63);
    }
    props.insert("metadata".into(), meta);
    // `status` is written by the operator, never by hand.
    props.remove("status");
    let required = obj.entry("required").or_insert_with(|| json!([]));
    if let Some(r) = required.as_array_mut() {
        for k in ["apiVersion", "kind", "metadata", "spec"] {
            if !r.iter().any(|x| x == k) {
                r.push(Value::String(k.into()));
            }
        }
    }
    Some(s)
}

/// OpenAPI v3 (structural CRD subset) to JSON Schema draft-07.
fn convert(s: &Value) -> Value {
    let Some(src) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in src {
        match k.as_str() {
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, p)| (name.clone(), convert(p)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), convert(v));
            }
            "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), convert(v));
            }
            "anyOf" | "allOf" | "oneOf" => {
                let alts: Vec<Value> = v.as_array().into_iter().flatten().map(convert).collect();
                out.insert(k.clone(), Value::Array(alts));
            }
            "exclusiveMinimum" | "exclusiveMaximum" => {
                // OpenAPI 3.0 marks the bound exclusive with a boolean; draft-07 carries the number.
                let bound = if k == "exclusiveMinimum" { "minimum" } else { "maximum" };
                if v.as_bool() == Some(true)
                    && let Some(b) = src.get(bound)
                {
                    out.insert(k.clone(), b.clone());
                }
            }
            "x-kubernetes-validations" => {
                let rules: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        let rule = r.get("rule")?.as_str()?;
                        Some(match r.get("message").and_then(Value::as_str) {
                            Some(m) => format!("{m} (CEL: {rule})"),
                            None => format!("CEL: {rule}"),
                        })
                    })
                    .collect();
                out.insert("$comment".into(), Value::String(rules.join("; ")));
            }
            "nullable" | "x-kubernetes-int-or-string" | "x-kubernetes-preserve-unknown-fields" => {}
            k if k.starts_with("x-kubernetes-") => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if out.get("exclusiveMinimum").is_some() {
        out.remove("minimum");
    }
    if out.get("exclusiveMaximum").is_some() {
        out.remove("maximum");
    }
    if src.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        out.remove("type");
        out.remove("anyOf");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    let preserve = src.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    if out.get("type").and_then(Value::as_str) == Some("object")
        && !preserve
        && !out.contains_key("additionalProperties")
    {
        // Unknown fields are errors, as with the apiserver's strict field validation.
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if src.get("nullable").and_then(Value::as_bool) == Some(true)
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_schema_is_strict_and_keeps_bounds() {
        let s = schema(Some("Application")).expect("schema");
        assert_eq!(s["$schema"], DRAFT);
        let spec = &s["properties"]["spec"];
        assert_eq!(spec["additionalProperties"], false);
        assert_eq!(spec["required"], json!(["image"]));
        assert_eq!(spec["properties"]["replicas"]["maximum"].as_f64(), Some(1000.0));
        assert_eq!(spec["properties"]["values"].get("additionalProperties"), None);
        assert_eq!(s["properties"]["kind"]["const"], "Application");
        assert!(s["properties"].get("status").is_none());
    }

    #[test]
    fn the_combined_schema_picks_by_kind() {
        let s = schema(None).expect("schema");
        assert_eq!(s["then"]["properties"]["kind"]["const"], "Blueprint");
        assert_eq!(s["else"]["properties"]["kind"]["const"], "Application");
    }
}
