//! Safe YAML scalars: every value a template prints becomes exactly one quoted scalar, whatever it holds.
//!
//! Output is pure printable ASCII inside double quotes; every other character is escaped. No value can
//! end the scalar, start a new line, open a comment, an anchor, a tag or a flow collection, so user input
//! can never change the structure of a rendered document.

use std::fmt::Write as _;

/// The Handlebars escape function: a slot while rendering for objects (see [`super::slots`]), else [`yaml_quote`].
pub fn escape(s: &str) -> String {
    super::slots::record(|| serde_json::Value::String(s.to_owned())).unwrap_or_else(|| yaml_quote(s))
}

/// Quotes `s` as a YAML double-quoted scalar that holds exactly `s`.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// Appends `s` to `out` as a YAML double-quoted scalar.
pub fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Writes a JSON value as one YAML flow node (JSON syntax, strings quoted by [`push_quoted`]).
pub fn push_flow(out: &mut String, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        serde_json::Value::String(s) => push_quoted(out, s),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_flow(out, item);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_quoted(out, k);
                out.push_str(": ");
                push_flow(out, item);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn round_trip(s: &str) -> String {
        let doc = format!("key: {}\nnext: 1\n", yaml_quote(s));
        let docs = yaml::parse(&doc, &yaml::Limits::default()).expect("parses");
        let root = &docs[0].root;
        assert_eq!(
            root.get("next").map(|n| n.to_json()),
            Some(serde_json::json!(1)),
            "structure changed for {s:?}"
        );
        root.get("key").and_then(|n| n.as_str()).expect("string").to_owned()
    }

    #[test]
    fn hostile_strings_stay_one_scalar() {
        for s in [
            "x\nhostNetwork: true",
            "{{evil}}",
            ": # &a *a",
            "\"quoted\"",
            "back\\slash",
            "tab\there",
            "é ü 日本 😀",
            "\u{2028}\u{85}\u{7f}\u{feff}",
            "- item",
            "",
            "null",
            "true",
            "'",
            "--- \n...",
        ] {
            assert_eq!(round_trip(s), s);
        }
    }

    #[test]
    fn output_is_printable_ascii() {
        let q = yaml_quote("a\u{0}b\u{1F600}c\u{7f}");
        assert!(q.chars().all(|c| (' '..='~').contains(&c)), "{q}");
    }
}
