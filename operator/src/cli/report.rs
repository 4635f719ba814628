//! Printing problems as compiler-style diagnostics: `file:line:col`, the source line, a marker and the fix.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::problem::{Location, Problem};
use crate::yaml::{Node, Pos, Span};

/// A problem placed in a source text, ready to print.
#[derive(Debug)]
pub struct Placed {
    /// Stable code, e.g. `plinth::guardrail`.
    pub code: String,
    /// The message.
    pub message: String,
    /// The fix.
    pub help: Option<String>,
    /// The file name and text shown.
    pub source: Option<NamedSource<String>>,
    /// The span within the text.
    pub span: Option<SourceSpan>,
    /// The label under the marker.
    pub label: String,
    /// The file (or template) name.
    pub file: String,
    /// `file:line:col` (or the best known location).
    pub location: String,
    /// 1-based line and column, when known.
    pub pos: Option<Pos>,
}

impl fmt::Display for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Placed {}

impl Diagnostic for Placed {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.label.clone()),
            span,
        ))))
    }
}

/// Where a problem's field path points in a document: the key for unknown or missing fields, else the value.
pub fn span_of(root: &Node, problem: &Problem) -> Option<Span> {
    let Location::Field { path } = &problem.location else {
        return None;
    };
    let segs = path.iter().map(String::as_str);
    if problem.rule == "unknown-field"
        && let Some(k) = root.locate_key(segs.clone())
    {
        return Some(k);
    }
    Some(root.locate(segs))
}

fn source_span(text: &str, span: Span) -> SourceSpan {
    let start = span.start.byte_offset(text);
    let end = span.end.byte_offset(text).max(start);
    // Mark one line at most: the start of the node is what matters.
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let end = end.min(line_end).max(start + usize::from(start < text.len()));
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

/// Places a problem at a position of a named text.
pub fn place(problem: &Problem, file: &str, text: Option<&str>, span: Option<Span>) -> Placed {
    let pos = span.map(|s| s.start);
    let location = match pos {
        Some(p) => format!("{file}:{}:{}", p.line, p.col),
        None => file.to_owned(),
    };
    let (source, sspan) = match (text, span) {
        (Some(t), Some(s)) => (
            Some(NamedSource::new(file, t.to_owned()).with_language("yaml")),
            Some(source_span(t, s)),
        ),
        _ => (None, None),
    };
    Placed {
        code: problem.code.to_owned(),
        message: match &problem.location {
            Location::Field { path } if !path.is_empty() => {
                format!("{}: {}", problem.location, problem.message)
            }
            Location::Field { .. } | Location::Template { .. } => problem.message.clone(),
            other => format!("{other}: {}", problem.message),
        },
        help: problem.hint.clone(),
        source,
        span: sspan,
        label: problem.rule.clone(),
        file: file.to_owned(),
        location,
        pos,
    }
}

/// Sorts diagnostics by file, then line and column.
pub fn sort(diags: &mut [Placed]) {
    diags.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
}

/// Prints diagnostics to standard error, with colours only when it is a terminal.
pub fn eprint(diags: &[Placed]) {
    use std::io::IsTerminal as _;
    let theme = if std::io::stderr().is_terminal() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(120);
    for d in diags {
        let mut s = String::new();
        if handler.render_report(&mut s, d).is_err() {
            s = format!("{}: {}\n", d.location, d.message);
        }
        eprintln!("{}: error[{}]: {}", d.location, d.code, d.message);
        eprint!("{s}");
    }
}
