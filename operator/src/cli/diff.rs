//! `plinth blueprints diff OLD NEW PATH...`: which Applications a Blueprint change would alter and how, offline;
//! `plinth diff PATH...`: what the operator would change in a live cluster for Applications (server-side dry-run).
//!
//! Exit codes: 0 nothing changes, 1 something changes or breaks (a finding, like `diff` and `kubectl diff`) or the
//! input is invalid (then stdout is empty and stderr says why), 2 usage, 3 internal.

use std::path::{Path, PathBuf};

use kube::ResourceExt as _;
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

/// Reads the Applications under `paths` that use one of `names` (all when `names` is empty).
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
            if names.is_empty() || names.contains(&app.spec.blueprint.as_str()) {
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

/// Arguments of `plinth diff`.
#[derive(Debug, clap::Args)]
pub struct LiveDiffArgs {
    /// Application manifests: files or folders (recursive).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Namespace for Applications that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Platform settings as a YAML file: the same the operator runs with.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Kubeconfig file; the usual discovery when left out.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

/// Runs `plinth diff`.
pub fn run_live(args: &LiveDiffArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("internal error: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = super::rollout::Target {
            blueprint: String::new(),
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        let client = match super::rollout::client(&target).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        };
        match live(&client, args).await {
            Ok((text, changed)) => {
                print!("{text}");
                if changed { exit::INVALID } else { exit::OK }
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        }
    })
}

/// Drops what the server sets and the operator never does, so that only a change the operator makes shows.
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                m.remove(k);
            }
            if m.get("annotations")
                .is_some_and(|a| a.as_object().is_some_and(serde_json::Map::is_empty))
            {
                m.remove("annotations");
            }
        }
    }
    v
}

/// The text of `plinth diff` and whether anything would change.
///
/// # Errors
/// When the cluster cannot be read, or an Application does not render.
pub async fn live(client: &kube::Client, args: &LiveDiffArgs) -> Result<(String, bool), String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    use std::fmt::Write as _;
    let platform = super::validate::load_platform(args.platform.as_deref())?;
    let served = crate::reconcile::kinds::Served::discover(client)
        .await
        .map_err(|e| format!("discover the API server's versions: {e}"))?;
    let apps = applications(&args.paths, &args.namespace, &[])?;
    let mut out = String::new();
    let (mut changed, mut created) = (0usize, 0usize);
    for mut app in apps {
        let ns = app.metadata.namespace.clone().unwrap_or_default();
        let name = app.metadata.name.clone().unwrap_or_default();
        let bp = Api::<Blueprint>::all(client.clone())
            .get_opt(&app.spec.blueprint)
            .await
            .map_err(|e| format!("read Blueprint {}: {e}", app.spec.blueprint))?
            .ok_or_else(|| {
                format!(
                    "Application {ns}/{name}: no Blueprint {:?} in the cluster",
                    app.spec.blueprint
                )
            })?;
        let live_app = Api::<Application>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(|e| format!("read Application {ns}/{name}: {e}"))?;
        let (revision, spec) =
            crate::rollout::controller::spec_for(client, &crate::rollout::controller::revisions_namespace(), &app, &bp)
                .await
                .map_err(|e| crate::reconcile::error_chain(&e))?;
        let loaded = LoadedBlueprint::compile(&bp.name_any(), spec)
            .map_err(|p| format!("Blueprint {}: {p}", app.spec.blueprint))?;
        let rendered = crate::render::render(&app, &loaded, &platform)
            .map_err(|p| format!("Application {ns}/{name} does not render: {p}"))?;
        let Some(live_app) = live_app else {
            let _ = writeln!(
                out,
                "+ Application {ns}/{name}: not in the cluster; the operator would create:"
            );
            for o in &rendered.objects {
                let _ = writeln!(out, "    {} {}", o.object.kind(), o.object.name());
                created += 1;
            }
            continue;
        };
        app.metadata.uid.clone_from(&live_app.metadata.uid);
        let desired = crate::reconcile::desired::build(&rendered, &app, &served).map_err(|e| e.to_string())?;
        let _ = writeln!(
            out,
            "Application {ns}/{name} (Blueprint {} revision {}):",
            app.spec.blueprint,
            revision.map_or_else(|| "current".to_owned(), |r| r.to_string())
        );
        for o in &desired.objects {
            let Some(ar) = served.resource(o.key.kind) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let current = api
                .get_opt(&o.key.name)
                .await
                .map_err(|e| format!("read {}: {e}", o.key))?;
            let params = PatchParams::apply("plinth").force().dry_run();
            let after = api
                .patch(&o.key.name, &params, &Patch::Apply(&o.json))
                .await
                .map_err(|e| format!("dry-run apply of {}: {e}", o.key))?;
            let key = &o.key;
            let yaml = |o: &DynamicObject| {
                serde_json::to_value(o)
                    .map_err(|e| e.to_string())
                    .and_then(|v| crate::render::emit::to_yaml(&comparable(v)).map_err(|e| e.to_string()))
                    .map_err(|e| format!("print {key}: {e}"))
            };
            let after = yaml(&after)?;
            let label = format!("{} {ns}/{}", o.key.kind.name(), o.key.name);
            match current {
                None => {
                    created += 1;
                    let _ = writeln!(out, "+ {label} would be created");
                    out.push_str(&crate::rollout::diff::unified_text(&label, "", &after));
                }
                Some(c) => {
                    let before = yaml(&c)?;
                    if before != after {
                        changed += 1;
                        let _ = writeln!(out, "~ {label} would change");
                        out.push_str(&crate::rollout::diff::unified_text(&label, &before, &after));
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "{changed} objects would change, {created} would be created");
    Ok((out, changed + created > 0))
}
