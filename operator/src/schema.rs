//! A validator for the OpenAPI v3 schema subset that CRDs use (structural schemas), over JSON values.
//!
//! One validator serves the CRD schemas of `Application` and `Blueprint` and each Blueprint's parameter
//! schema, so a rule is never written twice. Unknown fields are errors, as with the apiserver's strict
//! field validation; the violation names the field and, for a typo, the nearest known field.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::Value;

/// One way a value does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending value: keys and decimal indexes.
    pub path: Vec<String>,
    /// The schema keyword that failed, e.g. `type`, `maximum`, `unknown-field`.
    pub rule: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// How to fix it, when there is something to say.
    pub hint: Option<String>,
}

impl Violation {
    /// The path as `spec.allowTo[0].cidr`.
    pub fn dotted_path(&self) -> String {
        dotted(&self.path)
    }
}

/// Renders path segments as `a.b[0].c`.
pub fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            s.push('[');
            s.push_str(seg);
            s.push(']');
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
    }
    s
}

/// Checks `value` against `schema`, collecting every violation (up to a bound).
pub fn validate(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    check(schema, value, &mut path, &mut out);
    out
}

const MAX_VIOLATIONS: usize = 100;

fn push(out: &mut Vec<Violation>, path: &[String], rule: &'static str, message: String, hint: Option<String>) {
    if out.len() < MAX_VIOLATIONS {
        out.push(Violation {
            path: path.to_vec(),
            rule,
            message,
            hint,
        });
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, path: &mut Vec<String>, out: &mut Vec<Violation>) {
    let Some(s) = schema.as_object() else { return };
    if value.is_null() && (s.get("nullable").and_then(Value::as_bool) == Some(true) || !s.contains_key("type")) {
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !int_or_string
        && !any.is_empty()
        && any.iter().all(|alt| !validate_at(alt, value, path).is_empty())
    {
        push(
            out,
            path,
            "anyOf",
            format!("value matches none of the {} allowed forms", any.len()),
            None,
        );
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for alt in all {
            check(alt, value, path, out);
        }
    }
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            push(
                out,
                path,
                "type",
                format!("expected an integer or a string, found {}", type_name(value)),
                None,
            );
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == t
            || (t == "number" && actual == "integer")
            || (t == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0 && value.is_number()));
        if !ok {
            let hint = match (t, value) {
                ("string", Value::Bool(_) | Value::Number(_)) => Some(format!("quote it: \"{value}\"")),
                ("integer" | "number", Value::String(v)) if v.parse::<f64>().is_ok() => {
                    Some(format!("remove the quotes: {v}"))
                }
                _ => None,
            };
            push(
                out,
                path,
                "type",
                format!("expected {}, found {actual}", article(t)),
                hint,
            );
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        push(
            out,
            path,
            "enum",
            format!("{value} is not an allowed value"),
            Some(format!("use one of {}", list.join(", "))),
        );
    }
    match value {
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(0.0), path, out),
        Value::String(v) => check_string(s, v, path, out),
        Value::Array(items) => check_array(s, items, path, out),
        Value::Object(map) => check_object(s, map, path, out),
        Value::Null | Value::Bool(_) => {}
    }
}

fn validate_at(schema: &Value, value: &Value, path: &mut Vec<String>) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, path, &mut out);
    out
}

fn article(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

fn check_number(s: &serde_json::Map<String, Value>, n: f64, path: &[String], out: &mut Vec<Violation>) {
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            push(out, path, "minimum", format!("{n} is below the minimum of {min}"), None);
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            push(out, path, "maximum", format!("{n} is above the maximum of {max}"), None);
        }
    }
    if let Some(format) = s.get("format").and_then(Value::as_str) {
        let (lo, hi) = match format {
            "int32" => (f64::from(i32::MIN), f64::from(i32::MAX)),
            "uint16" => (0.0, 65535.0),
            _ => (f64::MIN, f64::MAX),
        };
        if n < lo || n > hi {
            push(out, path, "format", format!("{n} does not fit {format}"), None);
        }
    }
}

fn check_string(s: &serde_json::Map<String, Value>, v: &str, path: &[String], out: &mut Vec<Violation>) {
    let len = v.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        push(
            out,
            path,
            "minLength",
            format!("must be at least {min} characters long"),
            None,
        );
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        push(
            out,
            path,
            "maxLength",
            format!("must be at most {max} characters long, is {len}"),
            None,
        );
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        match pattern_matches(pattern, v) {
            Some(true) => {}
            Some(false) => match KNOWN_PATTERNS.iter().find(|(p, _)| *p == pattern) {
                Some((_, what)) => push(out, path, "pattern", format!("`{v}` is not {what}"), None),
                None => push(
                    out,
                    path,
                    "pattern",
                    format!("`{v}` does not match the pattern `{pattern}`"),
                    None,
                ),
            },
            None => push(
                out,
                path,
                "pattern",
                format!("the schema's pattern `{pattern}` is not a valid regular expression"),
                None,
            ),
        }
    }
}

/// Patterns the CRDs use, with what they mean to a person.
const KNOWN_PATTERNS: &[(&str, &str)] = &[(
    plinth_api::quantity::PATTERN,
    "a Kubernetes quantity such as `250m`, `1`, `512Mi` or `2Gi`",
)];

fn pattern_matches(pattern: &str, v: &str) -> Option<bool> {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(read) = cache.read()
        && let Some(re) = read.get(pattern)
    {
        return re.as_ref().map(|r| r.is_match(v));
    }
    let compiled = regex::RegexBuilder::new(pattern).size_limit(1 << 20).build().ok();
    let result = compiled.as_ref().map(|r| r.is_match(v));
    if let Ok(mut write) = cache.write()
        && write.len() < 1024
    {
        write.insert(pattern.to_owned(), compiled);
    }
    result
}

fn check_array(s: &serde_json::Map<String, Value>, items: &[Value], path: &mut Vec<String>, out: &mut Vec<Violation>) {
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        push(
            out,
            path,
            "minItems",
            format!("needs at least {min} items, has {}", items.len()),
            None,
        );
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        push(
            out,
            path,
            "maxItems",
            format!("may have at most {max} items, has {}", items.len()),
            None,
        );
    }
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            path.push(i.to_string());
            check(item_schema, item, path, out);
            path.pop();
        }
    }
}

fn check_object(
    s: &serde_json::Map<String, Value>,
    map: &serde_json::Map<String, Value>,
    path: &mut Vec<String>,
    out: &mut Vec<Violation>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                push(
                    out,
                    path,
                    "required",
                    format!("missing required field `{r}`"),
                    Some(format!("add `{r}:`")),
                );
            }
        }
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let additional = s.get("additionalProperties");
    for (key, v) in map {
        path.push(key.clone());
        if let Some(prop) = props.and_then(|p| p.get(key)) {
            check(prop, v, path, out);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            check(extra, v, path, out);
        } else if !(preserve
            || additional.and_then(Value::as_bool) == Some(true)
            || (props.is_none() && additional.is_none()))
        {
            let hint = props
                .and_then(|p| nearest(key, p.keys().map(String::as_str)))
                .map(|n| format!("did you mean `{n}`?"));
            let hint = hint.or_else(|| {
                props.map(|p| format!("known fields: {}", p.keys().cloned().collect::<Vec<_>>().join(", ")))
            });
            push(out, path, "unknown-field", format!("unknown field `{key}`"), hint);
        }
        path.pop();
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        push(
            out,
            path,
            "minProperties",
            format!("needs at least {min} entries"),
            None,
        );
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        push(
            out,
            path,
            "maxProperties",
            format!("may have at most {max} entries"),
            None,
        );
    }
}

/// The candidate closest to `word` by edit distance, when close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) + usize::from(c.len() > 6))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "ports": {"type": "array", "items": {"type": "object", "properties": {"port": {"type": "integer"}}}},
                "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        })
    }

    #[test]
    fn accepts_a_matching_value() {
        let v = json!({"image": "x", "replicas": 3, "mode": "a", "ports": [{"port": 1}], "values": {"any": {"thing": 1}}, "labels": {"a": "b"}});
        assert_eq!(validate(&schema(), &v), vec![]);
    }

    #[test]
    fn reports_each_violation_with_its_path() {
        let v = json!({"replicas": "3", "mode": "c", "ports": [{"port": 1}, {"prot": 2}], "labels": {"a": 1}});
        let found: Vec<(String, &str)> = validate(&schema(), &v)
            .iter()
            .map(|x| (x.dotted_path(), x.rule))
            .collect();
        assert_eq!(
            found,
            vec![
                ("".to_owned(), "required"),
                ("labels.a".to_owned(), "type"),
                ("mode".to_owned(), "enum"),
                ("ports[1].prot".to_owned(), "unknown-field"),
                ("replicas".to_owned(), "type"),
            ]
        );
    }

    #[test]
    fn suggests_the_nearest_field_for_a_typo() {
        let v = json!({"image": "x", "replicsa": 3});
        let found = validate(&schema(), &v);
        assert_eq!(found[0].hint.as_deref(), Some("did you mean `replicas`?"));
    }

    #[test]
    fn bounds_are_checked() {
        let v = json!({"image": "x", "replicas": 11});
        assert_eq!(validate(&schema(), &v)[0].rule, "maximum");
    }
}
