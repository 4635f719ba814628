//! Writes JSON values as block-style YAML, deterministically, quoting every string that could be read as anything else.

use super::escape::push_quoted;
use crate::yaml::plain_is_string;

/// One YAML document (without the `---` separator) for a JSON value.
pub fn to_yaml(v: &serde_json::Value) -> String {
    let mut out = String::new();
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        serde_json::Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            write_scalar(&mut out, other);
            out.push('\n');
        }
    }
    out
}

/// Many documents separated by `---`.
pub fn to_yaml_stream<'a>(docs: impl IntoIterator<Item = &'a serde_json::Value>) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&to_yaml(d));
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn is_block(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => !m.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, m: &serde_json::Map<String, serde_json::Value>, level: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || level > 0 {
            indent(out, level);
        }
        write_string(out, k);
        out.push(':');
        write_child(out, v, level);
    }
}

fn write_seq(out: &mut String, a: &[serde_json::Value], level: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 || level > 0 {
            indent(out, level);
        }
        out.push('-');
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                // The first key follows the dash; the rest align under it.
                let mut first = true;
                for (k, item) in m {
                    if !first {
                        indent(out, level + 2);
                    }
                    first = false;
                    write_string(out, k);
                    out.push(':');
                    write_child(out, item, level + 2);
                }
            }
            _ => write_child(out, v, level),
        }
    }
}

fn write_child(out: &mut String, v: &serde_json::Value, level: usize) {
    if is_block(v) {
        out.push('\n');
        match v {
            serde_json::Value::Object(m) => write_map(out, m, level + 2),
            serde_json::Value::Array(a) => write_seq(out, a, level + 2),
            _ => {}
        }
    } else {
        out.push(' ');
        write_scalar(out, v);
        out.push('\n');
    }
}

fn write_scalar(out: &mut String, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => out.push_str(&n.to_string()),
        serde_json::Value::String(s) => write_string(out, s),
        serde_json::Value::Array(_) => out.push_str("[]"),
        serde_json::Value::Object(_) => out.push_str("{}"),
    }
}

/// A string plain when that reads back as the same string, else double-quoted.
fn write_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        push_quoted(out, s);
    }
}

fn is_plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else { return false };
    if !(first.is_ascii_alphanumeric() || matches!(first, b'/' | b'.' | b'_')) {
        return false;
    }
    let mut prev = 0u8;
    for &b in bytes {
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'/' | b'@' | b'+' | b'=' | b',' | b'(' | b')' | b'*'
            )
            || (b == b':' && prev != b' ')
            || (b == b' ' && prev != b':');
        // ": " starts a mapping value and " #" a comment: both stay quoted.
        if !ok || (b == b'#' && prev == b' ') {
            return false;
        }
        prev = b;
    }
    !matches!(prev, b' ' | b':') && !s.contains(": ") && plain_is_string(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;
    use serde_json::json;

    fn round_trip(v: &serde_json::Value) -> serde_json::Value {
        let text = to_yaml(v);
        let docs = yaml::parse(&text, &yaml::Limits::default()).expect("emitted YAML parses");
        docs.first().map_or(serde_json::Value::Null, |d| d.root.to_json())
    }

    #[test]
    fn writes_block_yaml_that_reads_back() {
        let v = json!({
            "apiVersion": "apps/v1",
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}, "annotations": {}},
            "spec": {"replicas": 3, "list": [{"a": 1, "b": [1, 2]}, "s", [], {}], "flags": ["yes", "no", "on", "1", "1.5", "null", "~", "", "a: b", "#x", " lead", "trail ", "é"]}
        });
        assert_eq!(round_trip(&v), v);
        assert!(to_yaml(&v).contains("apiVersion: apps/v1\n"));
    }
}
