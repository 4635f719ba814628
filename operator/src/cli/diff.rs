//! `plinth blueprints diff OLD NEW PATH...`: which Applications a Blueprint change would alter and how, offline.
//!
//! Exit codes: 0 nothing changes, 1 something changes or breaks (a finding, like `diff` and `kubectl diff`) or the
//! input is invalid (then stdout is empty and stderr says why), 2 usage, 3 internal.

use std::path::{Path, PathBuf};

use plinth_api::{Application, Blueprint};

use super::{exit, input};
use crate::render::{LoadedBlueprint, bundled};
use crate::rollout::diff::{self, Outcome};
use crate::yaml::Limits;

/// Arguments of `plinth blueprints diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The Blueprint as it is: a Blueprint folder, a manifest holding one Blueprint, or a bundled Blueprint's name.
    pub old: String,
    /// The Blueprint as it would be, in the same forms.
    pub new: String,
    /// Application manifests: files or folders (recursive). Applications of other Blueprints, and other kinds, are skipped.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Namespace for Applications that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Platform settings (cluster DNS, default requests) as a YAML file.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Print only which Applications change and the summary, without the object diffs.
    #[arg(long)]
    pub stat: bool,
}

/// Loads one side: a folder, a manifest file, or a bundled name.
fn load_blueprint(arg: &str, side: &str) -> Result<Blueprint, String> {
    let path = Path::new(arg);
    if path.is_dir() {
        let mut all = super::blueprints::from_dir(path).map_err(|(origin, p)| format!("{side} {origin}: {p}"))?;
        return match all.len() {
            1 => Ok(all.remove(0).1),
            n => Err(format!(
                "{side} {arg}: the folder holds {n} Blueprints; name the folder of the one to compare"
            )),
        };
    }
    if path.is_file() {
        let (name, read) = input::read(path, &Limits::default());
        let source = read.map_err(|e| format!("{side} {name}: {e}"))?;
        let docs = input::documents(&source, &Limits::default()).map_err(|e| format!("{side} {name}: {e}"))?;
        let mut blueprints: Vec<serde_json::Value> = docs
            .iter()
            .map(|d| d.root.to_json())
            .filter(|j| j["kind"] == "Blueprint")
            .collect();
        if blueprints.len() != 1 {
            return Err(format!(
                "{side} {name}: holds {} Blueprint manifests; give a file with exactly one",
                blueprints.len()
            ));
        }
        return crate::validate::decode::<Blueprint>("Blueprint", blueprints.remove(0)).map_err(|problems| {
            let first = problems.first().map(ToString::to_string).unwrap_or_default();
            format!("{side} {name}: not a valid Blueprint: {first}")
        });
    }
    let bundled = bundled::objects().map_err(|p| format!("bundled Blueprints: {p}"))?;
    bundled.get(arg).cloned().ok_or_else(|| {
        format!(
            "{side} {arg:?} is neither a file, a folder, nor a bundled Blueprint ({})",
            bundled.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

fn compile(bp: &Blueprint, side: &str, origin: &str) -> Result<LoadedBlueprint, u8> {
    LoadedBlueprint::from_object(bp).map_err(|problems| {
        super::blueprints::print_problems(&format!("{side} {origin}"), &problems, Some(&bp.spec.templates));
        exit::INVALID
    })
}

/// Reads the Applications under `paths` that use one of `names`.
fn applications(paths: &[PathBuf], namespace: &str, names: &[&str]) -> Result<Vec<Application>, String> {
    let limits = Limits::default();
    let mut out = Vec::new();
    for path in input::expand(paths)? {
        let (name, read) = input::read(&path, &limits);
        let source = read.map_err(|e| format!("{name}: {e}"))?;
        let docs = input::documents(&source, &limits).map_err(|e| format!("{name}: {e}"))?;
        for (i, doc) in docs.iter().enumerate() {
            let json = doc.root.to_json();
            if json["kind"] != "Application" {
                continue;
            }
            let mut app = crate::validate::decode::<Application>("Application", json).map_err(|problems| {
                let first = problems.first().map(ToString::to_string).unwrap_or_default();
                format!(
                    "{name}: document {}: not a valid Application: {first}; `plinth validate {name}` shows every problem",
                    i + 1
                )
            })?;
            if app.metadata.namespace.is_none() {
                app.metadata.namespace = Some(namespace.to_owned());
            }
            if names.contains(&app.spec.blueprint.as_str()) {
                out.push(app);
            }
        }
    }
    Ok(out)
}

/// Runs `plinth blueprints diff`.
pub fn run(args: &DiffArgs) -> u8 {
    let platform = match super::validate::load_platform(args.platform.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (old, new) = match (load_blueprint(&args.old, "OLD"), load_blueprint(&args.new, "NEW")) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (old, new) = match (compile(&old, "OLD", &args.old), compile(&new, "NEW", &args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let apps = match applications(&args.paths, &args.namespace, &[old.name.as_str(), new.name.as_str()]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let diffs: Vec<diff::ApplicationDiff> = apps
        .iter()
        .map(|a| diff::application(a, &old, &new, &platform))
        .collect();
    print!("{}", report(&diffs, &old, &new, args.stat));
    if diff::summary(&diffs).has_changes() {
        exit::INVALID
    } else {
        exit::OK
    }
}

/// The text `plinth blueprints diff` prints: per Application, what changes, then the summary.
pub fn report(diffs: &[diff::ApplicationDiff], old: &LoadedBlueprint, new: &LoadedBlueprint, stat: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name = if old.name == new.name {
        old.name.clone()
    } else {
        format!("{} -> {}", old.name, new.name)
    };
    let _ = writeln!(out, "Blueprint {name}: {} -> {}", short(&old.hash), short(&new.hash));
    for d in diffs {
        match &d.outcome {
            Outcome::Unchanged => {
                let _ = writeln!(out, "= Application {}: unchanged", d.application);
            }
            Outcome::Changed(objects) | Outcome::Fixed(objects) => {
                let what = if matches!(d.outcome, Outcome::Fixed(_)) {
                    ", renders only with the new Blueprint"
                } else {
                    ""
                };
                let list: Vec<String> = objects
                    .iter()
                    .map(|o| format!("{} {}", o.object, o.change.as_str()))
                    .collect();
                let _ = writeln!(out, "~ Application {}{what}: {}", d.application, list.join(", "));
                if !stat {
                    for o in objects {
                        out.push_str(&o.unified);
                    }
                }
            }
            Outcome::Breaks(problems) => {
                let _ = writeln!(
                    out,
                    "! Application {}: does not render with the new Blueprint:",
                    d.application
                );
                for p in &problems.0 {
                    let _ = writeln!(out, "    {p}");
                }
            }
            Outcome::FailsBoth(problems) => {
                let _ = writeln!(
                    out,
                    "! Application {}: renders with neither Blueprint: {problems}",
                    d.application
                );
            }
        }
    }
    let _ = writeln!(out, "{}", diff::summary(diffs));
    out
}

/// `sha256:` and the first 12 hex digits.
fn short(hash: &str) -> &str {
    hash.get(..19).unwrap_or(hash)
}
