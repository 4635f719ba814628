//! Inputs as documents: every YAML document of every input text, parsed with positions and sorted by kind.
//!
//! `plinth render` and `plinth validate` both walk their inputs through here, so they read the same
//! documents the same way. Pure: the CLI reads the files.

use plinth_api::{API_VERSION, GROUP};

use super::finding::{Finding, Severity, point};
use crate::problem::{Problem, codes};
use crate::yaml::{self, Limits, Node, Pos};

/// One input text.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The name to show: the path as given, or `<stdin>`.
    pub file: &'a str,
    /// The text.
    pub text: &'a str,
}

/// What a document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A `plinth.dev/v1alpha1` Application.
    Application,
    /// A `plinth.dev/v1alpha1` Blueprint.
    Blueprint,
    /// Another kind, which Plinth does not validate.
    Other,
}

/// One document of an input.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Index of the input it comes from.
    pub input: usize,
    /// Index of the document in its input, from 0.
    pub index: usize,
    /// The document with positions (its JSON form is built when checked: [`Doc::json`]).
    pub root: Node,
    /// Its kind.
    pub class: Class,
    /// `apiVersion`, as written.
    pub api_version: String,
    /// `kind`, as written.
    pub kind: String,
    /// `metadata.name`, when set.
    pub name: String,
}

impl Doc {
    /// The document as JSON. Built on each call: documents are kept by the thousand, their JSON only while checked.
    pub fn json(&self) -> serde_json::Value {
        self.root.to_json()
    }

    /// Where the document starts.
    pub fn start(&self) -> Pos {
        match &self.root.value {
            yaml::Value::Map(entries) => entries.first().map_or(self.root.span.start, |(k, _)| k.span.start),
            _ => self.root.span.start,
        }
    }
}

/// Every document of the inputs, and the findings of those that cannot be read or classified.
#[derive(Debug, Default)]
pub struct Documents {
    /// Documents that are Kubernetes objects, in input order.
    pub docs: Vec<Doc>,
    /// Syntax errors, empty inputs, documents that are not objects, unknown Plinth versions.
    pub findings: Vec<Finding>,
    /// Documents that are not Kubernetes objects: `(input, document index, start)`.
    pub rejected: Vec<(usize, usize, Pos)>,
}

fn problem(code: &'static str, rule: &str, path: &[&str], message: String) -> Problem {
    Problem::field(code, rule, path.iter().map(|s| (*s).to_owned()).collect(), message)
}

/// Parses every input and classifies its documents.
///
/// Inputs are parsed on up to `threads` threads, a file at a time; the result is in input order.
pub fn parse(inputs: &[Input<'_>], limits: &Limits, threads: usize) -> Documents {
    let indexed: Vec<(usize, &Input<'_>)> = inputs.iter().enumerate().collect();
    let shares = super::parallel::map_ordered(&indexed, threads, 1, |one| {
        parse_share(std::slice::from_ref(one), limits)
    });
    let mut out = Documents::default();
    for mut share in shares {
        out.docs.append(&mut share.docs);
        out.findings.append(&mut share.findings);
        out.rejected.append(&mut share.rejected);
    }
    out
}

fn parse_share(inputs: &[(usize, &Input<'_>)], limits: &Limits) -> Documents {
    let mut out = Documents::default();
    for &(i, input) in inputs {
        let text = input.text.strip_prefix('\u{feff}').unwrap_or(input.text);
        let docs = match yaml::parse(text, limits) {
            Ok(d) => d,
            Err(e) => {
                let rule = match &e {
                    yaml::YamlError::DuplicateKey { .. } => "duplicate-key",
                    yaml::YamlError::TooDeep { .. } => "depth",
                    yaml::YamlError::TooManyNodes { .. } => "size",
                    yaml::YamlError::TooLarge { .. } => "size",
                    yaml::YamlError::Tag { .. } | yaml::YamlError::TagMismatch { .. } => "tag",
                    yaml::YamlError::Syntax { message, .. } if message.contains("recursion limit") => "depth",
                    yaml::YamlError::Syntax { .. } | yaml::YamlError::ComplexKey { .. } => "syntax",
                };
                let p = problem(codes::SYNTAX, rule, &[], e.to_string());
                out.findings
                    .push(Finding::at(input.file, None, point(e.pos()), &p, Severity::Error));
                continue;
            }
        };
        if docs.is_empty() {
            let p = problem(
                codes::SYNTAX,
                "empty",
                &[],
                "the file holds no YAML documents; nothing to validate".into(),
            );
            out.findings.push(Finding::at(
                input.file,
                None,
                point(Pos::new(1, 1)),
                &p,
                Severity::Warning,
            ));
            continue;
        }
        for d in docs {
            let (index, start) = (d.index, d.root.span.start);
            match classify(i, input.file, d, &mut out.findings) {
                Some(doc) => out.docs.push(doc),
                None => out.rejected.push((i, index, start)),
            }
        }
    }
    out
}

fn classify(input: usize, file: &str, d: yaml::Document, findings: &mut Vec<Finding>) -> Option<Doc> {
    let mut reject = |root: &Node, rule: &str, path: &[&str], message: String, hint: &str| {
        let p = problem(codes::SYNTAX, rule, path, message).with_hint(hint);
        let span = super::finding::field_span(root, &p);
        findings.push(Finding::at(file, Some(d.index), span, &p, Severity::Error));
    };
    if !matches!(d.root.value, yaml::Value::Map(_)) {
        reject(
            &d.root,
            "object",
            &[],
            format!(
                "the document is {}, not a Kubernetes object",
                article(d.root.value.type_name())
            ),
            "a manifest is a mapping with apiVersion, kind, metadata and spec",
        );
        return None;
    }
    let field = |k: &str| d.root.get(k).and_then(Node::as_str).map(str::to_owned);
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        let missing = if field("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        let p = problem(
            codes::SYNTAX,
            "required",
            &[missing],
            format!("the document has no `{missing}` string; it is not a Kubernetes object"),
        )
        .with_hint(format!(
            "add `{missing}:`, e.g. `apiVersion: {API_VERSION}` and `kind: Application`"
        ));
        let span = d
            .root
            .locate_key([missing])
            .unwrap_or_else(|| super::finding::field_span(&d.root, &Problem::field("", "", Vec::new(), "")));
        findings.push(Finding::at(file, Some(d.index), span, &p, Severity::Error));
        return None;
    };
    let class = match (api_version.as_str(), kind.as_str()) {
        (API_VERSION, "Application") => Class::Application,
        (API_VERSION, "Blueprint") => Class::Blueprint,
        (av, k) if av.split('/').next() == Some(GROUP) => {
            let known = matches!(k, "Application" | "Blueprint");
            let (path, message, hint) = if known {
                (
                    "apiVersion",
                    format!("`{av}` is not a version Plinth serves"),
                    format!("use `apiVersion: {API_VERSION}`"),
                )
            } else {
                (
                    "kind",
                    format!("`{k}` is not a kind of the {GROUP} API group"),
                    match crate::schema::nearest(k, ["Application", "Blueprint"].into_iter()) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => "Plinth's kinds are Application and Blueprint".into(),
                    },
                )
            };
            reject(&d.root, "kind", &[path], message, &hint);
            return None;
        }
        _ => Class::Other,
    };
    let name = d
        .root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_owned();
    Some(Doc {
        input,
        index: d.index,
        root: d.root,
        class,
        api_version,
        kind,
        name,
    })
}

fn article(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        "null" => "empty".into(),
        _ => format!("a {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_on_threads_gives_the_same_documents_and_findings_in_input_order() {
        let texts: Vec<(String, String)> = (0..9)
            .map(|i| {
                let text = match i % 4 {
                    0 => format!(
                        "apiVersion: plinth.dev/v1alpha1\nkind: Application\nmetadata:\n  name: a{i}\nspec:\n  image: x:1\n---\n- not an object\n"
                    ),
                    1 => "a: [unclosed\n".to_owned(),
                    2 => String::new(),
                    _ => format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"),
                };
                (format!("f{i}.yaml"), text)
            })
            .collect();
        let inputs: Vec<Input<'_>> = texts.iter().map(|(f, t)| Input { file: f, text: t }).collect();
        let one = parse(&inputs, &Limits::default(), 1);
        assert_eq!(one.docs.len(), 5, "{one:?}");
        assert_eq!(one.findings.len(), 7, "{one:?}");
        for threads in [2, 3, 16] {
            assert_eq!(
                format!("{:?}", parse(&inputs, &Limits::default(), threads)),
                format!("{one:?}"),
                "{threads} threads"
            );
        }
    }
}
