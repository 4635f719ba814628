//! The CRDs' CEL `x-kubernetes-validations` rules, compiled once and evaluated offline at the node each rule sits on.
//!
//! The expressions are read from the generated CRD schema ([`super::crd_schema`]), so a rule is written once,
//! in `api/`, and the cluster and `plinth validate` run the same text. Rules that need `oldSelf` (transition
//! rules) do not apply on create and are skipped.

use std::sync::OnceLock;

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

/// A schema node on the way to CEL rules: its compiled rules and the children that lead to more.
struct RuleNode {
    /// The node's rules, compiled once.
    rules: Vec<CompiledRule>,
    /// Properties that lead to rules.
    props: Vec<(String, RuleNode)>,
    /// Array items, when they lead to rules.
    items: Option<Box<RuleNode>>,
    /// Map values (`additionalProperties`), when they lead to rules.
    values: Option<Box<RuleNode>>,
}

struct CompiledRule {
    /// The expression as evaluated (reserved words escaped).
    rule: String,
    message: Option<String>,
    /// The program, or why the expression does not compile.
    program: Result<kube_cel::cel::Program, String>,
}

fn build(schema: &Value) -> Option<RuleNode> {
    let obj = schema.as_object()?;
    let rules: Vec<CompiledRule> = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let rule = escape_reserved(r.get("rule")?.as_str()?);
            // Transition rules compare with the old object: nothing to compare with on create.
            if rule.contains("oldSelf") {
                return None;
            }
            let program = kube_cel::cel::Program::compile(&rule).map_err(|e| e.to_string());
            Some(CompiledRule {
                message: r.get("message").and_then(Value::as_str).map(str::to_owned),
                rule,
                program,
            })
        })
        .collect();
    let props: Vec<(String, RuleNode)> = obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| build(v).map(|n| (k.clone(), n)))
        .collect();
    let items = obj.get("items").and_then(build).map(Box::new);
    let values = obj
        .get("additionalProperties")
        .filter(|v| v.is_object())
        .and_then(build)
        .map(Box::new);
    if rules.is_empty() && props.is_empty() && items.is_none() && values.is_none() {
        return None;
    }
    Some(RuleNode {
        rules,
        props,
        items,
        values,
    })
}

fn tree(kind: &str) -> Option<&'static RuleNode> {
    static APP: OnceLock<Option<RuleNode>> = OnceLock::new();
    static BP: OnceLock<Option<RuleNode>> = OnceLock::new();
    let cell = match kind {
        "Application" => &APP,
        "Blueprint" => &BP,
        _ => return None,
    };
    cell.get_or_init(|| build(super::crd_schema(kind)?)).as_ref()
}

thread_local! {
    // The CEL context with the Kubernetes extension functions; not `Sync`, so one per thread.
    static BASE: kube_cel::cel::Context<'static> = {
        use kube_cel::KubeCelExt as _;
        kube_cel::cel::Context::default().with_all()
    };
}

/// A property name as CEL rules see it (Kubernetes CEL escaping).
fn escape_field(name: &str) -> String {
    if RESERVED.contains(&name) {
        return format!("__{name}__");
    }
    if !name.contains(['_', '.', '-', '/']) {
        return name.to_owned();
    }
    name.replace("__", "__underscores__")
        .replace('.', "__dot__")
        .replace('-', "__dash__")
        .replace('/', "__slash__")
}

/// A property name's schema and rule node below an object's schema and rule node.
fn child_of<'a>(schema: &'a Value, node: Option<&'a RuleNode>, key: &str) -> (&'a Value, Option<&'a RuleNode>) {
    let declared = schema.get("properties").and_then(|p| p.get(key));
    let child_node = node.and_then(|n| match n.props.iter().find(|(p, _)| p == key) {
        Some((_, c)) => Some(c),
        None if declared.is_none() => n.values.as_deref(),
        None => None,
    });
    let extra = schema.get("additionalProperties").filter(|a| a.is_object());
    (declared.or(extra).unwrap_or(&Value::Null), child_node)
}

/// Converts `value` to a CEL value as the apiserver presents it to rules (declared fields escaped, map keys as
/// they are, schema defaults filled in), evaluating on the way the rules of every node below `node`: each
/// node's rules see the value converted for its parent, so a subtree is converted once however many rules
/// sit in it. Problems come out parent first.
fn convert(value: &Value, schema: &Value, node: Option<&RuleNode>, walk: &mut Walk<'_>) -> kube_cel::cel::Value {
    use kube_cel::cel::Value as C;
    use kube_cel::cel::objects::{Key, Map};
    use std::sync::Arc;
    let start = walk.out.len();
    let converted = match value {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => C::Int(i),
            (None, Some(u)) => C::UInt(u),
            _ => C::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => C::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            let item_node = node.and_then(|n| n.items.as_deref());
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                walk.path.push(i.to_string());
                list.push(convert(item, item_schema, item_node, walk));
                walk.path.pop();
            }
            C::List(Arc::new(list))
        }
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let is_map = !matches!(schema.get("additionalProperties"), None | Some(Value::Bool(false)));
            let mut out = std::collections::HashMap::with_capacity(map.len());
            for (k, v) in map {
                let (child_schema, child_node) = child_of(schema, node, k);
                walk.path.push(k.clone());
                let child = convert(v, child_schema, child_node, walk);
                walk.path.pop();
                let key = if is_map { k.clone() } else { escape_field(k) };
                out.insert(Key::String(Arc::new(key)), child);
            }
            for (k, p) in props.into_iter().flatten() {
                if !map.contains_key(k)
                    && let Some(d) = p.get("default")
                {
                    // Defaults are filled in, not validated: no rule node below them, so nothing is found.
                    out.insert(Key::String(Arc::new(escape_field(k))), convert(d, p, None, walk));
                }
            }
            C::Map(Map { map: Arc::new(out) })
        }
    };
    if let Some(node) = node.filter(|n| !n.rules.is_empty() && !value.is_null()) {
        let mine = run_rules(node, &converted, walk);
        walk.out.splice(start..start, mine);
    }
    converted
}

/// Where a walk stands and what it found.
struct Walk<'a> {
    path: Vec<String>,
    only_failures: bool,
    out: &'a mut Vec<Problem>,
}

fn run_rules(node: &RuleNode, value: &kube_cel::cel::Value, walk: &Walk<'_>) -> Vec<Problem> {
    let mut found = Vec::new();
    BASE.with(|base| {
        let mut ctx = base.new_inner_scope();
        ctx.add_variable_from_value("self", value.clone());
        for r in &node.rules {
            let failed = match &r.program {
                Err(e) => Some(format!("the rule does not compile: {e}")),
                Ok(program) => match program.execute(&ctx) {
                    Ok(kube_cel::cel::Value::Bool(true)) => None,
                    Ok(kube_cel::cel::Value::Bool(false)) => {
                        Some(r.message.clone().unwrap_or_else(|| format!("failed rule: {}", r.rule)))
                    }
                    Ok(_) => (!walk.only_failures).then(|| format!("rule \"{}\" did not evaluate to bool", r.rule)),
                    Err(e) => (!walk.only_failures).then(|| format!("the rule could not be evaluated: {e}")),
                },
            };
            if let Some(message) = failed {
                found.push(
                    Problem::field(codes::SPEC, r.rule.clone(), walk.path.clone(), message).with_hint(format!(
                        "the CRD's x-kubernetes-validations rule `{}` must hold",
                        r.rule
                    )),
                );
            }
        }
    });
    found
}

/// Walks the rule tree down to the nodes with rules; from each, [`convert`] takes over for its subtree.
fn evaluate(node: &RuleNode, schema: &Value, value: &Value, walk: &mut Walk<'_>) {
    if value.is_null() {
        return;
    }
    if !node.rules.is_empty() {
        convert(value, schema, Some(node), walk);
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if let (child_schema, Some(child)) = child_of(schema, Some(node), k) {
                    walk.path.push(k.clone());
                    evaluate(child, child_schema, v, walk);
                    walk.path.pop();
                }
            }
        }
        Value::Array(items) => {
            if let Some(child) = &node.items {
                let item_schema = schema.get("items").unwrap_or(&Value::Null);
                for (i, v) in items.iter().enumerate() {
                    walk.path.push(i.to_string());
                    evaluate(child, item_schema, v, walk);
                    walk.path.pop();
                }
            }
        }
        _ => {}
    }
}

/// Every CEL rule `json` (an object of `kind`) breaks, as problems at the node the rule sits on.
///
/// Only the subtrees under nodes that carry rules are converted, each once. With `only_failures`, rules that
/// could not be evaluated (e.g. on a value of the wrong type, which the structural schema already reports)
/// are left out.
pub fn problems(kind: &str, json: &Value, only_failures: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    if let (Some(t), Some(schema)) = (tree(kind), super::crd_schema(kind)) {
        let mut walk = Walk {
            path: Vec::new(),
            only_failures,
            out: &mut out,
        };
        evaluate(t, schema, json, &mut walk);
    }
    out
}

/// The same verdict through kube-cel's own validator (which walks and converts every node): the oracle
/// that [`problems`] is tested against.
pub fn problems_by_kube_cel(kind: &str, json: &Value, only_failures: bool) -> Vec<Problem> {
    use kube_cel::{ErrorKind, Validator, compile_schema};
    thread_local! {
        static VALIDATOR: Validator = Validator::new();
    }
    let Some(schema) = super::crd_schema(kind) else {
        return Vec::new();
    };
    let mut schema = schema.clone();
    escape_rules(&mut schema);
    let compiled = compile_schema(&schema);
    let Err(errors) = VALIDATOR.with(|v| v.validate_compiled(&compiled, json, None)) else {
        return Vec::new();
    };
    errors
        .iter()
        .filter(|e| !only_failures || e.kind == ErrorKind::ValidationFailure)
        .map(|e| {
            Problem::field(
                codes::SPEC,
                e.rule.clone(),
                split_path(&e.field_path),
                e.message.clone(),
            )
        })
        .collect()
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

    fn verdicts(found: Vec<Problem>) -> Vec<(crate::problem::Location, String)> {
        let mut v: Vec<_> = found.into_iter().map(|p| (p.location, p.rule)).collect();
        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        v
    }

    #[test]
    fn the_fast_evaluator_agrees_with_kube_cel() {
        let cases = [
            json!({"spec": {"image": "a/b:1", "replicas": 2, "autoscale": {"min": 5, "max": 3}, "port": 1, "ports": [{"name": "a", "port": 1}]}}),
            json!({"spec": {"image": "a/b:1", "env": [{"name": "A"}, {"name": "B", "value": "x", "configMap": {"name": "c", "key": "k"}}, {"name": "C", "value": "y"}]}}),
            json!({"spec": {"image": "a/b:1", "health": {}, "allowFrom": [{"namespace": "a", "namespaceSelector": {"x": "y"}}, {"cidr": "10.0.0.0/8", "app": "b"}, {"except": ["1.2.3.4/32"], "app": "c"}]}}),
            json!({"spec": {"image": "a/b:1", "allowTo": [{"app": "a", "ports": [{"port": 9, "endPort": 1}, {"port": 1, "endPort": 9}, {"port": 5}]}]}}),
            json!({"spec": {"image": "a/b:1", "autoscale": {"min": 1, "max": 3}, "health": {"tcp": {}}, "allowTo": [{"namespace": "n"}]}}),
            json!({"spec": {"image": "a/b:1", "autoscale": {"min": "x", "max": 3}}}),
        ];
        for c in cases {
            for only in [true, false] {
                let fast = verdicts(problems("Application", &c, only));
                let oracle = verdicts(problems_by_kube_cel("Application", &c, only));
                if only {
                    assert_eq!(fast, oracle, "{c}");
                } else {
                    // Evaluation errors carry each library's wording; the nodes and rules agree.
                    assert_eq!(fast.len(), oracle.len(), "{c}: {fast:?} vs {oracle:?}");
                }
            }
        }
    }
}
