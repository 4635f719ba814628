//! `plinth blueprints`: list, show and export the Blueprints `plinth render` would use.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Subcommand;
use plinth_api::Blueprint;

use super::{BlueprintSource, exit, report};
use crate::problem::Problems;
use crate::render::{LoadedBlueprint, bundled, emit};

/// `plinth blueprints …`
#[derive(Debug, Subcommand)]
pub enum BlueprintsCommand {
    /// List the available Blueprints.
    List(BlueprintSource),
    /// Show a Blueprint: description, parameters, defaults, guardrails and templates.
    Show {
        /// Blueprint name.
        name: String,
        #[command(flatten)]
        source: BlueprintSource,
    },
    /// Print Blueprints as manifests to apply to a cluster (all when no name is given).
    Export {
        /// Blueprint names.
        names: Vec<String>,
        #[command(flatten)]
        source: BlueprintSource,
    },
    /// Show offline which Applications a Blueprint change would alter and how: a unified diff per rendered
    /// object and a summary. Exits 1 when anything changes or breaks, 0 when nothing does.
    Diff(super::diff::DiffArgs),
}

/// Blueprint objects by name, and where each came from (for diagnostics).
pub type Catalog = (BTreeMap<String, Blueprint>, BTreeMap<String, String>);

/// Blueprint objects by name, and where each came from (a folder, or `<bundled>/NAME`): the bundled ones,
/// overridden by those in `--blueprints DIR`.
pub fn objects(source: &BlueprintSource) -> Result<Catalog, (String, Problems)> {
    let all = bundled::objects().map_err(|p| ("bundled blueprints".to_owned(), p))?;
    let mut origins: BTreeMap<String, String> = all.keys().map(|k| (k.clone(), format!("<bundled>/{k}"))).collect();
    let mut all = all;
    if let Some(dir) = &source.blueprints {
        for (folder, bp) in from_dir(dir)? {
            let name = bp.metadata.name.clone().unwrap_or_default();
            origins.insert(name.clone(), folder);
            all.insert(name, bp);
        }
    }
    Ok((all, origins))
}

/// Reads one Blueprint folder, or a folder of them, with each folder's path.
pub fn from_dir(dir: &Path) -> Result<Vec<(String, Blueprint)>, (String, Problems)> {
    let folders: Vec<std::path::PathBuf> = if dir.join("blueprint.yaml").exists() {
        vec![dir.to_path_buf()]
    } else {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                (
                    dir.display().to_string(),
                    Problems::one(load_problem(dir, format!("cannot list the folder: {e}"))),
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("blueprint.yaml").exists())
            .collect();
        v.sort();
        v
    };
    if folders.is_empty() {
        return Err((
            dir.display().to_string(),
            Problems::one(load_problem(dir, "no blueprint.yaml here or in its sub-folders".into())),
        ));
    }
    let mut out = Vec::new();
    for folder in folders {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&folder).map_err(|e| {
            (
                folder.display().to_string(),
                Problems::one(load_problem(&folder, e.to_string())),
            )
        })?;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let text = std::fs::read(&path).ok().and_then(|b| String::from_utf8(b).ok());
                files.push((name, text));
            }
        }
        let bp = bundled::from_files(
            &folder.display().to_string(),
            files.iter().map(|(n, t)| (n.as_str(), t.as_deref())),
        )
        .map_err(|p| (folder.display().to_string(), p))?;
        out.push((folder.display().to_string(), bp));
    }
    Ok(out)
}

fn load_problem(dir: &Path, message: String) -> crate::problem::Problem {
    crate::problem::Problem {
        code: crate::problem::codes::BLUEPRINT,
        rule: "load".into(),
        location: crate::problem::Location::Blueprint {
            name: dir.display().to_string(),
        },
        message,
        hint: None,
    }
}

/// Prints Blueprint problems, with template source lines where they point into a template.
pub fn print_problems(origin: &str, problems: &Problems, templates: Option<&BTreeMap<String, String>>) {
    let placed: Vec<report::Placed> = problems
        .0
        .iter()
        .map(|p| match (&p.location, templates) {
            (crate::problem::Location::Template { template, line, col }, Some(t)) => {
                let pos = crate::yaml::Pos::new(*line, *col);
                report::place(
                    p,
                    &format!("{origin}/{template}"),
                    t.get(template).map(String::as_str),
                    Some(crate::yaml::Span { start: pos, end: pos }),
                )
            }
            _ => report::place(p, origin, None, None),
        })
        .collect();
    report::eprint(&placed);
}

/// Runs `plinth blueprints …`.
pub fn run(cmd: &BlueprintsCommand) -> u8 {
    let source = match cmd {
        BlueprintsCommand::List(s)
        | BlueprintsCommand::Show { source: s, .. }
        | BlueprintsCommand::Export { source: s, .. } => s,
        BlueprintsCommand::Diff(args) => return super::diff::run(args),
    };
    let (all, origins) = match objects(source) {
        Ok(a) => a,
        Err((origin, problems)) => {
            print_problems(&origin, &problems, None);
            return exit::INVALID;
        }
    };
    match cmd {
        BlueprintsCommand::List(_) => {
            println!("{:<16} {:<9} DESCRIPTION", "NAME", "TEMPLATES");
            for (name, bp) in &all {
                let description = bp.spec.description.lines().next().unwrap_or_default();
                println!("{name:<16} {:<9} {description}", bp.spec.templates.len());
            }
            exit::OK
        }
        BlueprintsCommand::Show { name, .. } => {
            let Some(bp) = all.get(name) else {
                eprintln!(
                    "error: no Blueprint named {name:?}; available: {}",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                return exit::INVALID;
            };
            match LoadedBlueprint::from_object(bp) {
                Ok(loaded) => {
                    println!(
                        "Name:        {name}\nRevision:    {}\nDescription: {}",
                        loaded.hash,
                        bp.spec.description.trim()
                    );
                    let section = |title: &str, v: serde_json::Value| {
                        println!("{title}:");
                        match emit::to_yaml(&v) {
                            Ok(text) => text.lines().for_each(|line| println!("  {line}")),
                            Err(e) => println!("  # {e}"),
                        }
                    };
                    section("Defaults", serde_json::to_value(&bp.spec.defaults).unwrap_or_default());
                    section("Policy", serde_json::to_value(&bp.spec.policy).unwrap_or_default());
                    if let Some(p) = &bp.spec.parameters {
                        section("Parameters", p.clone());
                    }
                    println!("Templates:");
                    for t in bp.spec.templates.keys() {
                        println!("  {t}");
                    }
                    exit::OK
                }
                Err(problems) => {
                    print_problems(
                        origins.get(name).map_or(name.as_str(), String::as_str),
                        &problems,
                        Some(&bp.spec.templates),
                    );
                    exit::INVALID
                }
            }
        }
        BlueprintsCommand::Export { names, .. } => {
            let mut docs = Vec::new();
            for (name, bp) in &all {
                if names.is_empty() || names.contains(name) {
                    docs.push(serde_json::to_value(bp).unwrap_or_default());
                }
            }
            if let Some(missing) = names.iter().find(|n| !all.contains_key(*n)) {
                eprintln!(
                    "error: no Blueprint named {missing:?}; available: {}",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                return exit::INVALID;
            }
            print_stream(&docs)
        }
        // Handled before the catalog is read.
        BlueprintsCommand::Diff(args) => super::diff::run(args),
    }
}

/// Prints documents as a YAML stream.
pub(super) fn print_stream<T: serde::Serialize>(docs: &[T]) -> u8 {
    match emit::to_yaml_stream(docs) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("internal error: {e}");
            exit::INTERNAL
        }
    }
}
