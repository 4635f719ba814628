//! `plinth validate`: the CI gate. Applications and Blueprints checked offline as the cluster and the
//! operator would check them, each finding at `file:line:col`, as text, JSON, JUnit, SARIF or GitHub annotations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{BlueprintSource, blueprints, exit, input, report};
use crate::problem::{Problem, codes};
use crate::render::Platform;
use crate::validate::engine::{self, Options, Outcome};
use crate::validate::finding::{Finding, Severity, point};
use crate::validate::{Input, output};
use crate::yaml::{Limits, Pos};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ReportFormat {
    /// Compiler-style diagnostics with the source line and a marker.
    #[default]
    Text,
    /// One JSON document (schema in docs/validate-output.md).
    Json,
    /// JUnit XML, one test case per document.
    Junit,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
    /// GitHub Actions workflow commands (annotations on the pull request).
    Github,
}

/// Arguments of `plinth validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifests: files, folders (recursive; .yaml, .yml, .json), or `-` for standard input. Blueprint manifests among them are used too.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub source: BlueprintSource,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: ReportFormat,
    /// Refuse documents of kinds other than Application and Blueprint instead of skipping them.
    #[arg(long)]
    pub strict_kinds: bool,
    /// Also check the rendered objects against their Kubernetes types.
    #[arg(long)]
    pub rendered: bool,
    /// Namespace for Applications that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Platform settings (cluster DNS, default requests) as a YAML file.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Worker threads; one per core when 0.
    #[arg(short, long, default_value_t = 0, value_name = "N")]
    pub jobs: usize,
}

/// Inputs read from the command line: texts, and findings for what could not be read.
pub(crate) struct ReadInputs {
    /// Each readable input: its name and text.
    pub sources: Vec<input::Source>,
    /// Findings for unreadable inputs (binary, not UTF-8, too large, I/O errors).
    pub findings: Vec<Finding>,
    /// Inputs given, readable or not.
    pub files: usize,
}

/// Expands and reads the paths, on up to `threads` threads (0: one per core); an error for a path that does
/// not exist.
pub(crate) fn read_inputs(paths: &[PathBuf], limits: &Limits, threads: usize) -> Result<ReadInputs, String> {
    let paths = input::expand(paths)?;
    let mut out = ReadInputs {
        sources: Vec::new(),
        findings: Vec::new(),
        files: paths.len(),
    };
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let read_all = crate::validate::parallel::map_ordered(&paths, threads, 64, |path| input::read(path, limits));
    for (name, read) in read_all {
        match read {
            Ok(s) => out.sources.push(s),
            Err(e) => {
                let (rule, pos) = match &e {
                    input::ReadError::Io(_) => ("read", None),
                    input::ReadError::Binary => ("binary", None),
                    input::ReadError::Utf8(p) => ("utf8", Some(*p)),
                    input::ReadError::TooLarge(..) => ("size", None),
                    input::ReadError::Yaml(y) => ("syntax", Some(y.pos())),
                };
                let p = Problem::field(codes::SYNTAX, rule, Vec::new(), e.to_string());
                out.findings.push(Finding::at(
                    &name,
                    None,
                    point(pos.unwrap_or(Pos::new(1, 1))),
                    &p,
                    Severity::Error,
                ));
            }
        }
    }
    Ok(out)
}

/// Reads platform settings from a YAML file.
pub(crate) fn load_platform(path: Option<&Path>) -> Result<Platform, String> {
    let Some(p) = path else {
        return Ok(Platform::default());
    };
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let docs =
        crate::yaml::parse(&text, &Limits::default()).map_err(|e| format!("{}:{}: {e}", p.display(), e.pos()))?;
    let json = docs.first().map(|d| d.root.to_json()).unwrap_or_default();
    serde_json::from_value::<Platform>(json).map_err(|e| format!("{}: {e}", p.display()))
}

/// Runs the checks over read inputs; an internal error (a bug) becomes `Err` rather than a crash.
pub(crate) fn run_checks(read: &ReadInputs, source: &BlueprintSource, options: &Options) -> Result<Outcome, u8> {
    let (blueprints, origins) = match blueprints::objects(source) {
        Ok(b) => b,
        Err((origin, problems)) => {
            blueprints::print_problems(&origin, &problems, None);
            return Err(exit::INVALID);
        }
    };
    let inputs: Vec<Input<'_>> = read
        .sources
        .iter()
        .map(|s| Input {
            file: &s.name,
            text: &s.text,
        })
        .collect();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine::check(&inputs, blueprints, origins, options)
    }));
    let mut outcome = outcome.map_err(|_| {
        eprintln!("internal error: plinth validate failed; please report this with the input that caused it");
        exit::INTERNAL
    })?;
    if !read.findings.is_empty() {
        outcome.findings.extend(read.findings.iter().cloned());
        for f in &read.findings {
            outcome.documents.push(engine::DocumentResult {
                file: f.file.clone(),
                document: None,
                line: 1,
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
                result: engine::Verdict::Invalid,
            });
        }
        outcome
            .findings
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
    Ok(outcome)
}

/// Findings as compiler-style diagnostics, with the source line where the text is known.
pub(crate) fn diagnostics(outcome: &Outcome, sources: &[input::Source]) -> Vec<(Severity, report::Placed)> {
    let mut texts: HashMap<&str, &str> = sources.iter().map(|s| (s.name.as_str(), s.text.as_str())).collect();
    for (k, v) in &outcome.templates {
        texts.insert(k, v);
    }
    outcome
        .findings
        .iter()
        .map(|f| {
            let problem = Problem {
                code: codes::SPEC,
                rule: f.rule.clone(),
                location: crate::problem::Location::Field { path: Vec::new() },
                message: if f.path.is_empty() {
                    f.message.clone()
                } else {
                    format!("{}: {}", f.path, f.message)
                },
                hint: f.hint.clone(),
            };
            let text = texts.get(f.file.as_str()).copied();
            let mut placed = report::place(&problem, &f.file, text, Some(f.span()));
            placed.code.clone_from(&f.code);
            (f.severity, placed)
        })
        .collect()
}

/// Prints diagnostics: each as `file:line:col: severity[code]: message`, then the source line and marker.
pub(crate) fn print_diagnostics(diags: &[(Severity, report::Placed)], to_stdout: bool) {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    use std::io::IsTerminal as _;
    let terminal = if to_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let theme = if terminal {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(120);
    let mut out = String::new();
    for (severity, d) in diags {
        out.push_str(&format!(
            "{}: {}[{}]: {}\n",
            d.location,
            severity.as_str(),
            d.code,
            d.message
        ));
        if *severity == Severity::Note {
            continue;
        }
        let mut s = String::new();
        if handler.render_report(&mut s, d).is_ok() {
            out.push_str(&s);
        }
    }
    if to_stdout {
        print!("{out}");
    } else {
        eprint!("{out}");
    }
}

/// Runs `plinth validate`.
pub fn run(args: &ValidateArgs) -> u8 {
    let platform = match load_platform(args.platform.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Some(dir) = &args.source.blueprints
        && !dir.is_dir()
    {
        eprintln!("error: --blueprints {}: not a folder", dir.display());
        return exit::USAGE;
    }
    let options = Options {
        namespace: args.namespace.clone(),
        strict_kinds: args.strict_kinds,
        rendered: args.rendered,
        platform,
        keep_rendered: false,
        threads: args.jobs,
        limits: Limits::default(),
    };
    let read = match read_inputs(&args.paths, &options.limits, options.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let outcome = match run_checks(&read, &args.source, &options) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let text = match args.output {
        ReportFormat::Text => {
            print_diagnostics(&diagnostics(&outcome, &read.sources), true);
            let totals = output::totals(&outcome, read.files);
            println!("{}", output::summary(&totals));
            String::new()
        }
        ReportFormat::Json => output::to_json(&outcome, read.files),
        ReportFormat::Junit => output::to_junit(&outcome),
        ReportFormat::Sarif => output::to_sarif(&outcome),
        ReportFormat::Github => output::to_github(&outcome),
    };
    if !text.is_empty() {
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
    }
    if outcome.has_errors() { exit::INVALID } else { exit::OK }
}
