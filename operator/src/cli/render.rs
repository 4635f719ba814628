//! `plinth render`: Applications in, Kubernetes objects out, offline, like `helm template`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plinth_api::{API_VERSION, Application, Blueprint};

use super::{BlueprintSource, ObjectFormat, blueprints, exit, input, report};
use crate::problem::{Location, Problem, codes};
use crate::render::{LoadedBlueprint, Platform, Rendered, emit};
use crate::validate;
use crate::yaml::{Limits, Span};

/// Arguments of `plinth render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Application manifests: files, folders (recursive), or `-` for standard input. Blueprint manifests among them are used too.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub source: BlueprintSource,
    /// Namespace for Applications that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Platform settings (cluster DNS, default requests) as a YAML file.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: ObjectFormat,
}

/// One Application found in the inputs.
struct Found {
    file: String,
    text: String,
    root: crate::yaml::Node,
    json: serde_json::Value,
}

/// Runs `plinth render`.
pub fn run(args: &RenderArgs) -> u8 {
    let platform = match &args.platform {
        None => Platform::default(),
        Some(p) => match std::fs::read_to_string(p).map_err(|e| e.to_string()).and_then(|t| {
            let docs = crate::yaml::parse(&t, &Limits::default()).map_err(|e| format!("{}: {e}", e.pos()))?;
            let json = docs.first().map(|d| d.root.to_json()).unwrap_or_default();
            serde_json::from_value::<Platform>(json).map_err(|e| e.to_string())
        }) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                return exit::INVALID;
            }
        },
    };
    let paths = match input::expand(&args.paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (mut blueprint_objects, origins) = match blueprints::objects(&args.source) {
        Ok(b) => b,
        Err((origin, problems)) => {
            blueprints::print_problems(&origin, &problems, None);
            return exit::INVALID;
        }
    };
    let limits = Limits::default();
    let mut diags = Vec::new();
    let mut apps = Vec::new();
    for path in &paths {
        let (name, read) = input::read(path, &limits);
        let source = match read.and_then(|s| input::documents(&s, &limits).map(|d| (s, d))) {
            Ok(s) => s,
            Err(e) => {
                let pos = match &e {
                    input::ReadError::Yaml(y) => Some(y.pos()),
                    input::ReadError::Utf8(p) => Some(*p),
                    _ => None,
                };
                let p = Problem::field(codes::SYNTAX, "read", Vec::new(), e.to_string());
                diags.push(report::place(&p, &name, None, pos.map(|p| Span { start: p, end: p })));
                continue;
            }
        };
        let (src, docs) = source;
        for doc in docs {
            let json = doc.root.to_json();
            let api_version = json.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
            match (
                api_version,
                json.get("kind").and_then(|v| v.as_str()).unwrap_or_default(),
            ) {
                (API_VERSION, "Blueprint") => match validate::decode::<Blueprint>("Blueprint", json.clone()) {
                    Ok(bp) => {
                        blueprint_objects.insert(bp.metadata.name.clone().unwrap_or_default(), bp);
                    }
                    Err(problems) => diags.extend(place_all(&problems, &src.name, &src.text, &doc.root)),
                },
                (API_VERSION, "Application") => apps.push(Found {
                    file: src.name.clone(),
                    text: src.text.clone(),
                    root: doc.root,
                    json,
                }),
                (av, kind) => eprintln!(
                    "note: {}: document {} is `{av} {kind}`, not an Application; skipped",
                    src.name,
                    doc.index + 1
                ),
            }
        }
    }
    let mut loaded: BTreeMap<String, Result<LoadedBlueprint, crate::problem::Problems>> = BTreeMap::new();
    let mut outputs: Vec<Rendered> = Vec::new();
    for found in apps {
        let mut json = found.json;
        if json.pointer("/metadata/namespace").is_none()
            && let Some(meta) = json.get_mut("metadata").and_then(|m| m.as_object_mut())
        {
            meta.insert("namespace".into(), serde_json::Value::String(args.namespace.clone()));
        }
        let app: Application = match validate::decode("Application", json) {
            Ok(a) => a,
            Err(problems) => {
                diags.extend(place_all(&problems, &found.file, &found.text, &found.root));
                continue;
            }
        };
        let bp_name = app.spec.blueprint.clone();
        let Some(bp_object) = blueprint_objects.get(&bp_name) else {
            let p = Problem::field(
                codes::BLUEPRINT,
                "exists",
                vec!["spec".into(), "blueprint".into()],
                format!("no Blueprint named {bp_name:?}"),
            )
            .with_hint(format!(
                "use one of: {}, or pass --blueprints DIR",
                blueprint_objects.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            diags.extend(place_all(&[p], &found.file, &found.text, &found.root));
            continue;
        };
        let bp = loaded
            .entry(bp_name.clone())
            .or_insert_with(|| LoadedBlueprint::from_object(bp_object));
        let bp = match bp {
            Ok(bp) => bp,
            Err(problems) => {
                let origin = origins.get(&bp_name).cloned().unwrap_or_else(|| bp_name.clone());
                blueprints::print_problems(&origin, problems, Some(&bp_object.spec.templates));
                return exit::INVALID;
            }
        };
        match crate::render::render(&app, bp, &platform) {
            Ok(r) => outputs.push(r),
            Err(problems) => {
                for p in &problems.0 {
                    diags.push(match &p.location {
                        Location::Template { template, line, col } => {
                            let pos = crate::yaml::Pos::new(*line, *col);
                            let origin = origins.get(&bp_name).cloned().unwrap_or_else(|| bp_name.clone());
                            let mut d = report::place(
                                p,
                                &format!("{origin}/{template}"),
                                bp.spec.templates.get(template).map(String::as_str),
                                Some(Span { start: pos, end: pos }),
                            );
                            d.message = format!("{} (rendering {})", d.message, found.file);
                            d
                        }
                        Location::Field { .. } => {
                            place_all(std::slice::from_ref(p), &found.file, &found.text, &found.root).remove(0)
                        }
                        _ => report::place(p, &found.file, None, None),
                    });
                }
            }
        }
    }
    if !diags.is_empty() {
        report::sort(&mut diags);
        report::eprint(&diags);
        eprintln!(
            "{} problem{} found; nothing rendered",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
        return exit::INVALID;
    }
    let objects: Vec<serde_json::Value> = outputs
        .iter()
        .flat_map(|r| r.objects.iter().map(|o| o.object.to_json()))
        .collect();
    match args.output {
        ObjectFormat::Yaml => print!("{}", emit::to_yaml_stream(&objects)),
        ObjectFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            match serde_json::to_string_pretty(&list) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("internal error: cannot write JSON: {e}");
                    return exit::INTERNAL;
                }
            }
        }
    }
    exit::OK
}

fn place_all(problems: &[Problem], file: &str, text: &str, root: &crate::yaml::Node) -> Vec<report::Placed> {
    problems
        .iter()
        .map(|p| report::place(p, file, Some(text), report::span_of(root, p)))
        .collect()
}
