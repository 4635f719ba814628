//! The verdict on a set of inputs: every Application and Blueprint checked as the cluster and the operator
//! would check it (schema, CEL rules, validator rules, Blueprint, guardrails, full render), each finding
//! placed at `file:line:col`. Pure: the CLI reads the files and prints.

use std::collections::{BTreeMap, BTreeSet};

use plinth_api::{Application, Blueprint};
use serde::Serialize;

use super::finding::{Finding, Severity, field_span, point, template_span};
use super::inputs::{self, Class, Doc, Input};
use crate::problem::{Location, Problem, Problems, codes};
use crate::render::{LoadedBlueprint, Platform, Rendered};
use crate::yaml::{Limits, Pos};

/// How to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of Applications that set none.
    pub namespace: String,
    /// Whether documents of other kinds are errors rather than skipped.
    pub strict_kinds: bool,
    /// Whether rendered objects are also checked against their Kubernetes types.
    pub rendered: bool,
    /// Platform settings for the render dry-run.
    pub platform: Platform,
    /// Whether to keep what each Application renders (for `plinth render`).
    pub keep_rendered: bool,
    /// Worker threads for Applications; 0 for one per core.
    pub threads: usize,
    /// Parser limits per input.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: "default".into(),
            strict_kinds: false,
            rendered: false,
            platform: Platform::default(),
            keep_rendered: false,
            threads: 0,
            limits: Limits::default(),
        }
    }
}

/// The verdict on one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// At least one error.
    Invalid,
    /// Not a kind Plinth validates.
    Skipped,
}

/// One document and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentResult {
    /// The file.
    pub file: String,
    /// Index of the document in the file, from 0; `None` when the file could not be read as YAML.
    pub document: Option<usize>,
    /// Line where the document starts.
    pub line: u32,
    /// `apiVersion`, when known.
    pub api_version: String,
    /// `kind`, when known.
    pub kind: String,
    /// `metadata.name`, when known.
    pub name: String,
    /// The verdict.
    pub result: Verdict,
}

/// Everything found in a set of inputs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Findings sorted by file, line and column.
    pub findings: Vec<Finding>,
    /// Each document (and each file that could not be parsed), in input order.
    pub documents: Vec<DocumentResult>,
    /// What each valid Application renders, in input order (with [`Options::keep_rendered`]).
    pub rendered: Vec<Rendered>,
    /// Texts of the Blueprint templates findings point into, by the file name they carry.
    pub templates: BTreeMap<String, String>,
}

impl Outcome {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// The Blueprints Applications may use.
struct Blueprints {
    /// Every Blueprint object, by name: bundled, then `--blueprints`, then those among the inputs.
    objects: BTreeMap<String, Blueprint>,
    /// Where each Blueprint not among the inputs comes from (a folder, or `<bundled>/NAME`).
    origins: BTreeMap<String, String>,
    /// Compiled Blueprints by name, for those Applications use.
    loaded: BTreeMap<String, Result<LoadedBlueprint, Problems>>,
    /// Blueprints among the inputs: name to the index of their document.
    from_inputs: BTreeMap<String, usize>,
    /// Blueprints among the inputs that are invalid: name to `file:line`.
    broken: BTreeMap<String, String>,
}

/// What checking one Application found.
struct AppResult {
    problems: Vec<Problem>,
    blueprint: Option<String>,
    rendered: Option<Rendered>,
}

/// Checks every document of `inputs`. `blueprints` are the Blueprints known besides those among the inputs,
/// and `origins` where each comes from (a folder, or `<bundled>/NAME`), to name their templates.
pub fn check(
    inputs: &[Input<'_>],
    blueprints: BTreeMap<String, Blueprint>,
    origins: BTreeMap<String, String>,
    options: &Options,
) -> Outcome {
    let parsed = inputs::parse(inputs, &options.limits, thread_count(options));
    let mut out = Outcome {
        findings: parsed.findings,
        ..Outcome::default()
    };
    let docs = parsed.docs;
    // Per document: whether it has an error, filled as findings come.
    let mut invalid: BTreeSet<(usize, usize)> = BTreeSet::new();
    for f in &out.findings {
        if f.severity == Severity::Error
            && let Some(i) = inputs.iter().position(|x| x.file == f.file)
        {
            invalid.insert((i, f.document.unwrap_or(usize::MAX)));
        }
    }

    // Blueprints among the inputs first: Applications may use them.
    let mut bps = Blueprints {
        objects: blueprints,
        origins,
        loaded: BTreeMap::new(),
        from_inputs: BTreeMap::new(),
        broken: BTreeMap::new(),
    };
    for (di, doc) in docs.iter().enumerate() {
        if doc.class != Class::Blueprint {
            continue;
        }
        let file = inputs[doc.input].file;
        let json = doc.json();
        let mut problems = super::cel::problems("Blueprint", &json, false);
        let decoded: Result<Blueprint, Vec<Problem>> = super::decode("Blueprint", json);
        let mut ok = false;
        match decoded {
            Err(p) => problems.extend(p),
            Ok(bp) => {
                let name = bp.metadata.name.clone().unwrap_or_default();
                match LoadedBlueprint::from_object(&bp) {
                    Ok(loaded) => {
                        ok = problems.is_empty();
                        bps.loaded.insert(name.clone(), Ok(loaded));
                    }
                    Err(p) => problems.extend(p.0),
                }
                bps.from_inputs.insert(name.clone(), di);
                bps.objects.insert(name, bp);
            }
        }
        if !ok {
            let name = if doc.name.is_empty() { "?" } else { doc.name.as_str() };
            bps.broken
                .insert(name.to_owned(), format!("{file}:{}", doc.start().line));
            bps.loaded.remove(name);
            invalid.insert((doc.input, doc.index));
        }
        for p in &problems {
            out.findings.push(place_in_doc(p, file, inputs[doc.input].text, doc));
        }
    }

    // Compile the Blueprints the Applications use, once each.
    let apps: Vec<&Doc> = docs.iter().filter(|d| d.class == Class::Application).collect();
    let wanted: BTreeSet<String> = apps
        .iter()
        .map(|d| {
            d.root
                .get("spec")
                .and_then(|s| s.get("blueprint"))
                .and_then(crate::yaml::Node::as_str)
                .unwrap_or("web")
                .to_owned()
        })
        .collect();
    let to_compile: Vec<(String, &Blueprint)> = wanted
        .into_iter()
        .filter(|name| !bps.loaded.contains_key(name) && !bps.broken.contains_key(name))
        .filter_map(|name| bps.objects.get(&name).map(|obj| (name, obj)))
        .collect();
    // Each on its own thread: compiling templates is most of the work done before the Applications.
    let compiled = super::parallel::map_ordered(&to_compile, thread_count(options), 1, |(_, obj)| {
        LoadedBlueprint::from_object(obj)
    });
    for ((name, obj), loaded) in to_compile.iter().zip(compiled) {
        if let Err(problems) = &loaded {
            for p in &problems.0 {
                out.findings
                    .push(place_in_blueprint(p, &bps, name, obj, &mut out.templates));
            }
        }
        bps.loaded.insert(name.clone(), loaded);
    }

    // The Applications, in parallel: each check is pure and independent.
    let results = run_parallel(&apps, &bps, options);
    for (doc, result) in apps.iter().zip(results) {
        let file = inputs[doc.input].file;
        let text = inputs[doc.input].text;
        if !result.problems.is_empty() {
            invalid.insert((doc.input, doc.index));
        }
        for p in &result.problems {
            out.findings.push(place_app_problem(
                p,
                file,
                text,
                doc,
                &result,
                &bps,
                &docs,
                inputs,
                &mut out.templates,
            ));
        }
        if let Some(r) = result.rendered {
            out.rendered.push(r);
        }
    }

    // Other kinds.
    for doc in docs.iter().filter(|d| d.class == Class::Other) {
        let file = inputs[doc.input].file;
        let severity = if options.strict_kinds {
            invalid.insert((doc.input, doc.index));
            Severity::Error
        } else {
            Severity::Note
        };
        let p = Problem::field(
            codes::SYNTAX,
            "kind",
            vec!["kind".into()],
            format!(
                "`{} {}` is not a Plinth kind; {}",
                doc.api_version,
                doc.kind,
                if options.strict_kinds {
                    "refused (--strict-kinds)"
                } else {
                    "skipped"
                }
            ),
        )
        .with_hint("plinth validate checks plinth.dev/v1alpha1 Application and Blueprint documents");
        let span = doc.root.get("kind").map_or_else(|| point(doc.start()), |n| n.span);
        out.findings
            .push(Finding::at(file, Some(doc.index), span, &p, severity));
    }

    // One result per document, and per file that could not be read as YAML.
    let mut results: Vec<DocumentResult> = Vec::new();
    for doc in &docs {
        let result = if invalid.contains(&(doc.input, doc.index)) {
            Verdict::Invalid
        } else if doc.class == Class::Other {
            Verdict::Skipped
        } else {
            Verdict::Valid
        };
        results.push(DocumentResult {
            file: inputs[doc.input].file.to_owned(),
            document: Some(doc.index),
            line: doc.start().line,
            api_version: doc.api_version.clone(),
            kind: doc.kind.clone(),
            name: doc.name.clone(),
            result,
        });
    }
    for (input, index, pos) in &parsed.rejected {
        results.push(DocumentResult {
            file: inputs[*input].file.to_owned(),
            document: Some(*index),
            line: pos.line,
            api_version: String::new(),
            kind: String::new(),
            name: String::new(),
            result: Verdict::Invalid,
        });
    }
    for (i, input) in inputs.iter().enumerate() {
        if invalid.contains(&(i, usize::MAX)) {
            results.push(DocumentResult {
                file: input.file.to_owned(),
                document: None,
                line: 1,
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
                result: Verdict::Invalid,
            });
        }
    }
    let order: BTreeMap<&str, usize> = inputs.iter().enumerate().map(|(i, x)| (x.file, i)).collect();
    let rank = |file: &str| order.get(file).copied().unwrap_or(usize::MAX);
    results.sort_by_key(|r| (rank(&r.file), r.document.unwrap_or(usize::MAX)));
    out.documents = results;
    out.findings.sort_by(|a, b| {
        (rank(&a.file), &a.file, a.line, a.column, &a.rule).cmp(&(rank(&b.file), &b.file, b.line, b.column, &b.rule))
    });
    out.findings.dedup();
    for f in &mut out.findings {
        if let Some(input) = inputs.iter().find(|x| x.file == f.file) {
            let start = super::finding::clamp(input.text, f.pos());
            let end = super::finding::clamp(input.text, Pos::new(f.end_line, f.end_column)).max(start);
            (f.line, f.column, f.end_line, f.end_column) = (start.line, start.col, end.line, end.col);
        }
    }
    // Thousands of parsed documents: freed on every thread rather than one after another on this one.
    drop(apps);
    super::parallel::drop_in_parts(docs, thread_count(options));
    out
}

/// Threads to check with: `--jobs`, or one per available core.
fn thread_count(options: &Options) -> usize {
    match options.threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    }
}

fn run_parallel(apps: &[&Doc], bps: &Blueprints, options: &Options) -> Vec<AppResult> {
    // A few Applications are not worth a thread; many go in small batches, taken in turn.
    let threads = if apps.len() < 64 { 1 } else { thread_count(options) };
    super::parallel::map_ordered(apps, threads, 16, |d| check_application(d, bps, options))
}

/// Checks one Application: structural schema, CEL rules, typed decode, Blueprint, validator rules,
/// guardrails, parameters and the full render.
fn check_application(doc: &Doc, bps: &Blueprints, options: &Options) -> AppResult {
    let mut json = doc.json();
    if json.pointer("/metadata/namespace").is_none()
        && let Some(meta) = json.get_mut("metadata").and_then(|m| m.as_object_mut())
    {
        meta.insert("namespace".into(), serde_json::Value::String(options.namespace.clone()));
    }
    let schema_problems: Vec<Problem> = super::crd_schema("Application")
        .map(|s| crate::schema::validate(s, &json))
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let mut p = Problem::field(codes::SPEC, v.rule, v.path, v.message);
            p.hint = v.hint;
            p
        })
        .collect();
    let cel = super::cel::problems("Application", &json, !schema_problems.is_empty());
    let mut result = AppResult {
        problems: Vec::new(),
        blueprint: None,
        rendered: None,
    };
    if !schema_problems.is_empty() {
        result.problems = schema_problems;
        result.problems.extend(cel);
        return result;
    }
    // Decoding from a borrowed value is the fast path; the path-tracking decoder runs only to say where.
    let decoded = <Application as serde::Deserialize>::deserialize(&json)
        .or_else(|_| serde_path_to_error::deserialize::<_, Application>(&json));
    let app: Application = match decoded {
        Ok(a) => a,
        Err(e) => {
            let path: Vec<String> = e.path().iter().map(|s| s.to_string()).filter(|s| s != "?").collect();
            result.problems = vec![Problem::field(codes::SPEC, "type", path, e.into_inner().to_string())];
            result.problems.extend(cel);
            return result;
        }
    };
    let name = app.spec.blueprint.clone();
    result.blueprint = Some(name.clone());
    let bp = match bps.loaded.get(&name) {
        Some(Ok(bp)) => bp,
        Some(Err(_)) => {
            result.problems.push(Problem::field(
                codes::BLUEPRINT,
                "blueprint",
                vec!["spec".into(), "blueprint".into()],
                format!("Blueprint {name:?} does not compile; see its findings"),
            ));
            result.problems.extend(cel);
            return result;
        }
        None => {
            let p = match bps.broken.get(&name) {
                Some(at) => Problem::field(
                    codes::BLUEPRINT,
                    "blueprint",
                    vec!["spec".into(), "blueprint".into()],
                    format!("Blueprint {name:?} ({at}) is invalid; see its findings"),
                ),
                None => {
                    let known: Vec<&str> = bps.objects.keys().map(String::as_str).collect();
                    let list = format!("use one of: {}, or pass --blueprints DIR", known.join(", "));
                    let hint = match crate::schema::nearest(&name, known.iter().copied()) {
                        Some(n) => format!("did you mean `{n}`? {list}"),
                        None => list,
                    };
                    Problem::field(
                        codes::BLUEPRINT,
                        "exists",
                        vec!["spec".into(), "blueprint".into()],
                        format!("no Blueprint named {name:?}"),
                    )
                    .with_hint(hint)
                }
            };
            result.problems.push(p);
            result.problems.extend(cel);
            return result;
        }
    };
    match crate::render::render(&app, bp, &options.platform) {
        Ok(r) => {
            if options.rendered {
                result.problems.extend(super::kube::check(&r));
            }
            if options.keep_rendered && result.problems.is_empty() && cel.is_empty() {
                result.rendered = Some(r);
            }
        }
        Err(problems) => result.problems.extend(problems.0),
    }
    // The validator rules repeat the CEL rules for API servers without CEL, with a more specific message
    // ("autoscale.min (5) must not exceed autoscale.max (3)"); where both failed on a node, keep that one.
    let validator_nodes: Vec<Location> = result
        .problems
        .iter()
        .filter(|p| p.code == codes::SPEC)
        .map(|p| p.location.clone())
        .collect();
    result
        .problems
        .extend(cel.into_iter().filter(|p| !validator_nodes.contains(&p.location)));
    result
}

/// Places a problem of a document of the inputs (an Application or a Blueprint manifest).
fn place_in_doc(p: &Problem, file: &str, text: &str, doc: &Doc) -> Finding {
    let span = match &p.location {
        Location::Field { .. } => field_span(&doc.root, p),
        Location::Template { template, line, col } if doc.class == Class::Blueprint => {
            template_span(&doc.root, text, template, *line, *col)
        }
        _ => doc
            .root
            .get("spec")
            .and_then(|s| s.get("blueprint"))
            .map_or_else(|| point(doc.start()), |n| n.span),
    };
    Finding::at(file, Some(doc.index), span, p, Severity::Error)
}

/// Places a problem of a Blueprint that is not among the inputs: template problems in the template.
fn place_in_blueprint(
    p: &Problem,
    bps: &Blueprints,
    name: &str,
    bp: &Blueprint,
    templates: &mut BTreeMap<String, String>,
) -> Finding {
    let origin = bps.origins.get(name).map_or(name, String::as_str);
    match &p.location {
        Location::Template { template, line, col } => {
            let file = format!("{origin}/{template}");
            if let Some(t) = bp.spec.templates.get(template) {
                templates.insert(file.clone(), t.clone());
            }
            Finding::at(&file, None, point(Pos::new(*line, *col)), p, Severity::Error)
        }
        _ => Finding::at(
            &format!("{origin}/blueprint.yaml"),
            None,
            point(Pos::new(1, 1)),
            p,
            Severity::Error,
        ),
    }
}

#[allow(clippy::too_many_arguments, reason = "one call site; the pieces a placement needs")]
fn place_app_problem(
    p: &Problem,
    file: &str,
    text: &str,
    doc: &Doc,
    result: &AppResult,
    bps: &Blueprints,
    docs: &[Doc],
    inputs: &[Input<'_>],
    templates: &mut BTreeMap<String, String>,
) -> Finding {
    if let (Location::Template { template, line, col }, Some(bp)) = (&p.location, &result.blueprint) {
        // A template failed for this Application: point into the template, where the fix is.
        if let Some(&di) = bps.from_inputs.get(bp) {
            let bp_doc = &docs[di];
            let input = inputs[bp_doc.input];
            let mut f = Finding::at(
                input.file,
                Some(bp_doc.index),
                template_span(&bp_doc.root, input.text, template, *line, *col),
                p,
                Severity::Error,
            );
            f.message = format!("{} (rendering {file})", f.message);
            return f;
        }
        if let Some(obj) = bps.objects.get(bp) {
            let mut f = place_in_blueprint(p, bps, bp, obj, templates);
            f.message = format!("{} (rendering {file})", f.message);
            return f;
        }
    }
    place_in_doc(p, file, text, doc)
}
