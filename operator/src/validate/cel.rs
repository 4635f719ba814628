//! The CRDs' CEL `x-kubernetes-validations` rules, compiled once and evaluated offline at the node each rule sits on.
//!
//! The expressions are read from the generated CRD schema ([`super::crd_schema`]), so a rule is written once,
//! in `api/`, and the cluster and `plinth validate` run the same text. Rules that need `oldSelf` (transition
//! rules) do not apply on create and are skipped.

use std::sync::OnceLock;

use kube_cel::{CompiledSchema, ErrorKind, Validator, compile_schema};
use serde_json::Value;

use crate::problem::{Problem, codes};

/// One CEL rule of a CRD schema and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelRule {
    /// Path of the schema node the rule sits on: property names, `[]` for array items, `{}` for map values.
    pub path: Vec<String>,
    /// The CEL expression.
    pub rule: String,
    /// The message the apiserver gives when it fails.
    pub message: Option<String>,
}

/// Every CEL rule of a Plinth kind's CRD schema, in schema order.
pub fn rules(kind: &str) -> Vec<CelRule> {
    let mut out = Vec::new();
    if let Some(schema) = super::crd_schema(kind) {
        collect_rules(schema, &mut Vec::new(), &mut out);
    }
    out
}

fn collect_rules(schema: &Value, path: &mut Vec<String>, out: &mut Vec<CelRule>) {
    if let Some(rules) = schema.get("x-kubernetes-validations").and_then(Value::as_array) {
        for r in rules {
            if let Some(rule) = r.get("rule").and_then(Value::as_str) {
                out.push(CelRule {
                    path: path.clone(),
                    rule: rule.to_owned(),
                    message: r.get("message").and_then(Value::as_str).map(str::to_owned),
                });
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            path.push(k.clone());
            collect_rules(v, path, out);
            path.pop();
        }
    }
    for (key, seg) in [("items", "[]"), ("additionalProperties", "{}")] {
        if let Some(inner) = schema.get(key).filter(|v| v.is_object()) {
            path.push(seg.to_owned());
            collect_rules(inner, path, out);
            path.pop();
        }
    }
}

/// The schema cut down to the branches that lead to a rule, whole below a rule; `None` when it holds no rule.
///
/// Evaluating against the cut-down schema and object visits only the nodes that can fail, which keeps
/// the cost per document small without changing any verdict.
fn prune_schema(schema: &Value) -> Option<Value> {
    let obj = schema.as_object()?;
    if obj.contains_key("x-kubernetes-validations") {
        return Some(schema.clone());
    }
    let mut out = serde_json::Map::new();
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let kept: serde_json::Map<String, Value> = props
            .iter()
            .filter_map(|(k, v)| prune_schema(v).map(|p| (k.clone(), p)))
            .collect();
        if !kept.is_empty() {
            out.insert("properties".into(), Value::Object(kept));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(p) = obj.get(key).and_then(prune_schema) {
            out.insert(key.into(), p);
        }
    }
    if out.is_empty() {
        return None;
    }
    if let Some(t) = obj.get("type") {
        out.insert("type".into(), t.clone());
    }
    Some(Value::Object(out))
}

/// The parts of `value` that the pruned schema can reach.
fn prune_value(schema: &Value, value: &Value) -> Value {
    if schema.get("x-kubernetes-validations").is_some() {
        return value.clone();
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if let Some(s) = props.and_then(|p| p.get(k)).or(extra) {
                    out.insert(k.clone(), prune_value(s, v));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => Value::Array(items.iter().map(|i| prune_value(s, i)).collect()),
            None => Value::Array(Vec::new()),
        },
        other => other.clone(),
    }
}

/// CEL's reserved words. The apiserver exposes a property with such a name as `__name__` (Kubernetes CEL
/// escaping), so a rule must say `self.__namespace__` for a field `namespace`.
const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Rewrites `.namespace` (a reserved word used as a field name) to `.__namespace__`, as the apiserver requires.
///
/// A rule written without the escape never sees the field (or does not compile) on a cluster with CEL; the
/// rewrite makes the offline check follow what the rule means. It is a no-op on correctly escaped rules.
pub fn escape_reserved(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len());
    let mut rest = rule;
    while let Some(i) = rest.find('.') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if RESERVED.contains(&word) {
            out.push_str(&format!("__{word}__"));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn escape_rules(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                for r in rules {
                    if let Some(Value::String(rule)) = r.get_mut("rule") {
                        *rule = escape_reserved(rule);
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                if k != "x-kubernetes-validations" {
                    escape_rules(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_rules),
        _ => {}
    }
}

struct Compiled {
    pruned: Value,
    schema: CompiledSchema,
}

fn compiled(kind: &str) -> Option<&'static Compiled> {
    static APP: OnceLock<Option<Compiled>> = OnceLock::new();
    static BP: OnceLock<Option<Compiled>> = OnceLock::new();
    let cell = match kind {
        "Application" => &APP,
        "Blueprint" => &BP,
        _ => return None,
    };
    cell.get_or_init(|| {
        let mut pruned = prune_schema(super::crd_schema(kind)?)?;
        escape_rules(&mut pruned);
        let schema = compile_schema(&pruned);
        Some(Compiled { pruned, schema })
    })
    .as_ref()
}

thread_local! {
    // The CEL function registry; `Validator` is `Send` but not `Sync`, so one per thread.
    static VALIDATOR: Validator = Validator::new();
}

/// Splits a kube-cel field path such as `spec.allowTo[0].ports[1]` into segments.
fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(name.to_owned());
        }
        while let Some(close) = rest.find(']') {
            out.push(rest[1..close].to_owned());
            rest = &rest[close + 1..];
        }
    }
    out
}

/// Every CEL rule `json` (an object of `kind`) breaks, as problems at the node the rule sits on.
///
/// With `only_failures`, rules that could not be evaluated (e.g. on a value of the wrong type, which the
/// structural schema already reports) are left out.
pub fn problems(kind: &str, json: &Value, only_failures: bool) -> Vec<Problem> {
    let Some(c) = compiled(kind) else {
        return Vec::new();
    };
    let value = prune_value(&c.pruned, json);
    let result = VALIDATOR.with(|v| v.validate_compiled(&c.schema, &value, None));
    let Err(errors) = result else {
        return Vec::new();
    };
    errors
        .iter()
        .filter(|e| !only_failures || e.kind == ErrorKind::ValidationFailure)
        .map(|e| {
            let message = if e.kind == ErrorKind::ValidationFailure {
                e.message.clone()
            } else {
                format!("the rule could not be evaluated: {}", e.message)
            };
            Problem::field(codes::SPEC, e.rule.clone(), split_path(&e.field_path), message).with_hint(format!(
                "the CRD's x-kubernetes-validations rule `{}` must hold",
                e.rule
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn splits_paths_with_indexes() {
        assert_eq!(
            split_path("spec.allowTo[0].ports[12]"),
            ["spec", "allowTo", "0", "ports", "12"]
        );
        assert_eq!(split_path(""), Vec::<String>::new());
    }

    #[test]
    fn reserved_words_are_escaped_as_the_apiserver_requires() {
        assert_eq!(
            escape_reserved("!(has(self.namespace) && has(self.namespaceSelector))"),
            "!(has(self.__namespace__) && has(self.namespaceSelector))"
        );
        assert_eq!(
            escape_reserved("self.__namespace__ == 'a'"),
            "self.__namespace__ == 'a'"
        );
        assert_eq!(escape_reserved("self.min <= self.max"), "self.min <= self.max");
        let peer = json!({"spec": {"image": "a/b:1", "allowTo": [{"namespace": "billing"}]}});
        assert_eq!(problems("Application", &peer, false), vec![]);
        let both =
            json!({"spec": {"image": "a/b:1", "allowTo": [{"namespace": "billing", "namespaceSelector": {"a": "b"}}]}});
        assert_eq!(problems("Application", &both, false).len(), 1);
    }

    #[test]
    fn the_application_crd_carries_rules_and_they_run() {
        assert!(rules("Application").len() >= 7, "{:?}", rules("Application"));
        let bad = json!({"spec": {"image": "a/b:1", "autoscale": {"min": 5, "max": 3}}});
        let found = problems("Application", &bad, false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "self.min <= self.max");
        assert_eq!(
            found[0].location,
            crate::problem::Location::Field {
                path: vec!["spec".into(), "autoscale".into()]
            }
        );
        let good = json!({"spec": {"image": "a/b:1", "autoscale": {"min": 1, "max": 3}}});
        assert_eq!(problems("Application", &good, false), vec![]);
    }
}
