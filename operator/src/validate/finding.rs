//! Findings: problems placed at `file:line:col`, with the field path, the rule, the message and the fix.

use serde::Serialize;

use crate::problem::{Location, Problem};
use crate::schema::dotted;
use crate::yaml::{Node, Pos, Span};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object would be refused; sets exit code 1.
    Error,
    /// Worth a look; does not change the exit code.
    Warning,
    /// For information, e.g. a document of a kind Plinth does not validate.
    Note,
}

impl Severity {
    /// `error`, `warning` or `note`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One finding, at an exact place of an input file (or of a Blueprint template).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The file as given (`<stdin>` for standard input), or `<blueprint>/<template>` for a template.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub column: u32,
    /// Line where the offending node ends.
    pub end_line: u32,
    /// Column where the offending node ends (exclusive).
    pub end_column: u32,
    /// Index of the YAML document in the file, from 0; `None` for the file as a whole.
    pub document: Option<usize>,
    /// Field path from the object's root, e.g. `spec.allowTo[0].cidr`; empty for the whole document.
    pub path: String,
    /// The rule that failed: a schema keyword (`maximum`, `unknown-field`), a CEL expression, a
    /// validator or guardrail name (`maxReplicas`), `syntax`, `kind`, `render`, ….
    pub rule: String,
    /// Stable category, e.g. `plinth::spec`, `plinth::guardrail`.
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    /// A finding at a span of a file.
    pub fn at(file: &str, document: Option<usize>, span: Span, problem: &Problem, severity: Severity) -> Finding {
        let end = if span.end > span.start { span.end } else { span.start };
        Finding {
            file: file.to_owned(),
            line: span.start.line.max(1),
            column: span.start.col.max(1),
            end_line: end.line.max(1),
            end_column: end.col.max(1),
            document,
            // A path into the input; a rendered object's path is in the message, as it is not in the file.
            path: match &problem.location {
                Location::Field { path } => dotted(path),
                Location::Rendered { .. } | Location::Template { .. } | Location::Blueprint { .. } => String::new(),
            },
            rule: problem.rule.clone(),
            code: problem.code.to_owned(),
            severity,
            message: match &problem.location {
                Location::Field { .. } | Location::Template { .. } => problem.message.clone(),
                other => format!("{other}: {}", problem.message),
            },
            hint: problem.hint.clone(),
        }
    }

    /// `file:line:col`.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file, self.line, self.column)
    }

    /// The start position.
    pub fn pos(&self) -> Pos {
        Pos::new(self.line, self.column)
    }

    /// The span of the offending node.
    pub fn span(&self) -> Span {
        Span {
            start: self.pos(),
            end: Pos::new(self.end_line, self.end_column),
        }
    }
}

/// A point span.
pub fn point(pos: Pos) -> Span {
    Span { start: pos, end: pos }
}

/// Where a field problem points in its document: the key for an unknown field or a missing required
/// field (the key of the object that lacks it), else the offending node.
pub fn field_span(root: &Node, problem: &Problem) -> Span {
    let path: &[String] = match &problem.location {
        Location::Field { path } => path,
        _ => &[],
    };
    let segs = path.iter().map(String::as_str);
    if matches!(problem.rule.as_str(), "unknown-field" | "required")
        && let Some(k) = root.locate_key(segs.clone())
    {
        return k;
    }
    if path.is_empty() {
        // The whole object: point at its first key rather than at the document as a block.
        if let crate::yaml::Value::Map(entries) = &root.value
            && let Some((k, _)) = entries.first()
        {
            return k.span;
        }
    }
    // A mapping under a key (e.g. `spec:`): the key names it best; the mapping's span starts at its first child.
    if let Some(k) = root.locate_key(segs.clone())
        && matches!(root_at(root, path).map(|n| &n.value), Some(crate::yaml::Value::Map(_)))
    {
        return k;
    }
    root.locate(segs)
}

fn root_at<'a>(root: &'a Node, path: &[String]) -> Option<&'a Node> {
    let mut node = root;
    for seg in path {
        node = match &node.value {
            crate::yaml::Value::Map(_) => node.get(seg)?,
            crate::yaml::Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Where a template position lands in a Blueprint manifest that holds the template at `spec.templates.<name>`:
/// exact for block scalars (`|`), else the start of the template's value.
pub fn template_span(root: &Node, text: &str, template: &str, line: u32, col: u32) -> Span {
    let path = ["spec", "templates", template];
    let (Some(node), Some(key)) = (
        root.get("spec")
            .and_then(|s| s.get("templates"))
            .and_then(|t| t.get(template)),
        root.locate_key(path),
    ) else {
        return root.locate(["spec", "templates"]);
    };
    // A block scalar (`key: |`): content starts on the line after the key, at the first line's indentation.
    let lines: Vec<&str> = text.lines().collect();
    let key_line = key.start.line as usize;
    let after_key = lines
        .get(key_line.saturating_sub(1))
        .and_then(|l| l.split_once(':'))
        .map(|(_, rest)| rest.trim_start());
    if !after_key.is_some_and(|r| r.starts_with(['|', '>'])) {
        return node.span;
    }
    let indent = lines
        .iter()
        .skip(key_line)
        .find(|l| !l.trim().is_empty())
        .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
    point(Pos::new(
        key.start.line.saturating_add(line),
        col.saturating_add(u32::try_from(indent).unwrap_or(0)),
    ))
}

/// `pos` moved inside `text` (lines split at `\n`, columns in characters, one past the end allowed): the
/// parser counts a lone `\r` as a line break, editors and [`Pos::byte_offset`] do not.
pub fn clamp(text: &str, pos: Pos) -> Pos {
    let lines: Vec<&str> = text.split('\n').collect();
    let line = (pos.line.max(1) as usize).min(lines.len().max(1));
    let width = lines.get(line - 1).map_or(0, |l| l.chars().count());
    let col = (pos.col.max(1) as usize).min(width + 1);
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}
