//! Machine-readable reports of an [`Outcome`]: JSON (schema in `docs/validate-output.md`), JUnit XML,
//! SARIF 2.1.0 and GitHub Actions workflow commands. Pure: each returns the text to print.

use serde::Serialize;
use serde_json::json;

use super::engine::{DocumentResult, Outcome, Verdict};
use super::finding::{Finding, Severity};

/// Version of the JSON report's schema; bumped only on incompatible changes.
pub const JSON_VERSION: u32 = 1;

/// Counts over a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Input files read.
    pub files: usize,
    /// Documents seen (and files that could not be parsed).
    pub documents: usize,
    /// Documents that passed every check.
    pub valid: usize,
    /// Documents with at least one error.
    pub invalid: usize,
    /// Documents of kinds Plinth does not validate.
    pub skipped: usize,
    /// Findings of severity error.
    pub errors: usize,
    /// Findings of severity warning.
    pub warnings: usize,
    /// Findings of severity note.
    pub notes: usize,
}

/// Counts the outcome of `files` inputs.
pub fn totals(outcome: &Outcome, files: usize) -> Totals {
    let count = |v: Verdict| outcome.documents.iter().filter(|d| d.result == v).count();
    let sev = |s: Severity| outcome.findings.iter().filter(|f| f.severity == s).count();
    Totals {
        files,
        documents: outcome.documents.len(),
        valid: count(Verdict::Valid),
        invalid: count(Verdict::Invalid),
        skipped: count(Verdict::Skipped),
        errors: sev(Severity::Error),
        warnings: sev(Severity::Warning),
        notes: sev(Severity::Note),
    }
}

/// The JSON report.
pub fn to_json(outcome: &Outcome, files: usize) -> String {
    let report = json!({
        "version": JSON_VERSION,
        "valid": !outcome.has_errors(),
        "totals": totals(outcome, files),
        "findings": outcome.findings,
        "documents": outcome.documents,
    });
    serde_json::to_string_pretty(&report).unwrap_or_default()
}

/// One line of summary, e.g. `3 documents: 2 valid, 1 invalid; 2 errors`.
pub fn summary(t: &Totals) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}: {} valid, {} invalid, {} skipped; {}, {}",
        plural(t.documents, "document"),
        t.valid,
        t.invalid,
        t.skipped,
        plural(t.errors, "error"),
        plural(t.warnings, "warning"),
    )
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn belongs(f: &Finding, d: &DocumentResult) -> bool {
    f.file == d.file && f.document == d.document
}

fn line_of(f: &Finding) -> String {
    let mut s = format!("{}: {} [{}]", f.location(), f.message, f.rule);
    if !f.path.is_empty() {
        s = format!("{} at {}: {} [{}]", f.location(), f.path, f.message, f.rule);
    }
    if let Some(h) = &f.hint {
        s.push_str(&format!("\n  hint: {h}"));
    }
    s
}

/// JUnit XML: one test suite per file, one test case per document.
pub fn to_junit(outcome: &Outcome) -> String {
    let mut files: Vec<&str> = Vec::new();
    for d in &outcome.documents {
        if !files.contains(&d.file.as_str()) {
            files.push(&d.file);
        }
    }
    let t = totals(outcome, files.len());
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"plinth validate\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
        t.documents, t.invalid, t.skipped
    ));
    for file in files {
        let docs: Vec<&DocumentResult> = outcome.documents.iter().filter(|d| d.file == file).collect();
        let failures = docs.iter().filter(|d| d.result == Verdict::Invalid).count();
        let skipped = docs.iter().filter(|d| d.result == Verdict::Skipped).count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
            xml_escape(file),
            docs.len()
        ));
        for d in docs {
            let name = match d.document {
                Some(i) if d.kind.is_empty() => format!("document {}", i + 1),
                Some(i) => format!("document {} {} {}", i + 1, d.kind, d.name),
                None => "file".to_owned(),
            };
            out.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                xml_escape(name.trim_end()),
                xml_escape(file),
                xml_escape(file),
                d.line
            ));
            match d.result {
                Verdict::Valid => out.push_str("/>\n"),
                Verdict::Skipped => out.push_str(&format!(
                    "><skipped message=\"{}\"/></testcase>\n",
                    xml_escape(&format!("{} {} is not a Plinth kind", d.api_version, d.kind))
                )),
                Verdict::Invalid => {
                    let own: Vec<&Finding> = outcome
                        .findings
                        .iter()
                        .filter(|f| belongs(f, d) && f.severity == Severity::Error)
                        .collect();
                    let first = own.first().map_or_else(
                        || "the document fails a Blueprint template; see the findings in the template".to_owned(),
                        |f| f.message.clone(),
                    );
                    let body: Vec<String> = own.iter().map(|f| line_of(f)).collect();
                    out.push_str(&format!(
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                        xml_escape(&first),
                        xml_escape(own.first().map_or("plinth::template", |f| f.code.as_str())),
                        xml_escape(&body.join("\n"))
                    ));
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// SARIF 2.1.0 with a region (line and column) per result.
pub fn to_sarif(outcome: &Outcome) -> String {
    let mut rules: Vec<&str> = outcome.findings.iter().map(|f| f.code.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let results: Vec<serde_json::Value> = outcome
        .findings
        .iter()
        .map(|f| {
            let mut message = f.message.clone();
            if !f.path.is_empty() {
                message = format!("{}: {message}", f.path);
            }
            if let Some(h) = &f.hint {
                message.push_str(&format!(" (hint: {h})"));
            }
            json!({
                "ruleId": f.code,
                "ruleIndex": rules.iter().position(|r| *r == f.code).unwrap_or(0),
                "level": match f.severity { Severity::Error => "error", Severity::Warning => "warning", Severity::Note => "note" },
                "message": {"text": message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.file.trim_start_matches("./")},
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "endLine": f.end_line,
                            "endColumn": f.end_column,
                        }
                    },
                    "logicalLocations": if f.path.is_empty() { json!([]) } else { json!([{"fullyQualifiedName": f.path, "kind": "member"}]) },
                }],
                "properties": {"rule": f.rule, "path": f.path},
            })
        })
        .collect();
    let report = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "plinth",
                "informationUri": "https://github.com/plinth-dev/plinth",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|r| json!({"id": r, "name": r.trim_start_matches("plinth::")})).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&report).unwrap_or_default()
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn gh_escape_property(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…::message`.
pub fn to_github(outcome: &Outcome) -> String {
    let mut out = String::new();
    for f in &outcome.findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let mut message = if f.path.is_empty() {
            f.message.clone()
        } else {
            format!("{}: {}", f.path, f.message)
        };
        if let Some(h) = &f.hint {
            message.push_str(&format!("\nhint: {h}"));
        }
        out.push_str(&format!(
            "::{level} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
            gh_escape_property(&f.file),
            f.line,
            f.column,
            f.end_line,
            f.end_column,
            gh_escape_property(&format!("{} {}", f.code, f.rule)),
            gh_escape_data(&message)
        ));
    }
    out
}
