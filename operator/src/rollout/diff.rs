//! Blast radius of a Blueprint change: render Applications with the old and the new Blueprint and compare. Pure.

use std::collections::BTreeMap;

use plinth_api::Application;
use similar::TextDiff;

use crate::problem::Problems;
use crate::render::{LoadedBlueprint, Platform, Rendered, emit, render};

/// How one rendered object changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Rendered only by the new Blueprint: the operator would create it.
    Added,
    /// Rendered only by the old Blueprint: the operator would prune it.
    Removed,
    /// Rendered by both, differently: the operator would apply the new content.
    Changed,
}

impl Change {
    /// `added`, `removed` or `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// One object that differs, with a unified diff of its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    /// `Kind namespace/name`.
    pub object: String,
    /// What happens to it.
    pub change: Change,
    /// Unified diff, `--- old/…` to `+++ new/…`, three lines of context.
    pub unified: String,
}

/// What a Blueprint change does to one Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both render the same objects.
    Unchanged,
    /// Both render, and these objects differ (in apply order of the new render, removed ones last).
    Changed(Vec<ObjectDiff>),
    /// It renders with the old Blueprint but not with the new one: the rollout would fail for it.
    Breaks(Problems),
    /// It did not render with the old Blueprint and renders with the new one: every object is added.
    Fixed(Vec<ObjectDiff>),
    /// It renders with neither.
    FailsBoth(Problems),
}

/// The comparison for one Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationDiff {
    /// `namespace/name`.
    pub application: String,
    /// What changes.
    pub outcome: Outcome,
}

/// Counts over every compared Application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Applications compared (those that use the Blueprint).
    pub applications: usize,
    /// Applications whose objects would change (including those that render only with the new Blueprint).
    pub changed: usize,
    /// Applications whose objects stay the same.
    pub unchanged: usize,
    /// Applications that render with the old Blueprint but not with the new one.
    pub broken: usize,
    /// Applications that render with neither.
    pub failing: usize,
    /// Objects changed, added and removed, over all Applications.
    pub objects_changed: usize,
    /// Objects added.
    pub objects_added: usize,
    /// Objects removed.
    pub objects_removed: usize,
}

impl Summary {
    /// Whether anything would change or break.
    pub fn has_changes(&self) -> bool {
        self.changed > 0 || self.broken > 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{} compared: {} changed ({} changed, {} added, {} removed), {} unchanged, {} broken by the new Blueprint, {} failing with both",
            plural(self.applications, "Application", "Applications"),
            self.changed,
            plural(self.objects_changed, "object", "objects"),
            self.objects_added,
            self.objects_removed,
            self.unchanged,
            self.broken,
            self.failing,
        )
    }
}

/// `Kind namespace/name` of a rendered object.
fn key(o: &crate::render::RenderedObject) -> String {
    let meta = o.object.metadata();
    format!(
        "{} {}/{}",
        o.object.kind(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A unified diff of two texts, `--- old/<object>` to `+++ new/<object>`, three lines of context.
pub fn unified_text(object: &str, old: &str, new: &str) -> String {
    unified(object, old, new)
}

fn unified(object: &str, old: &str, new: &str) -> String {
    let path = object.replace(' ', "/");
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("old/{path}"), &format!("new/{path}"))
        .to_string()
}

/// The objects that differ between two renders of one Application, as unified diffs of their YAML.
pub fn objects(old: &Rendered, new: &Rendered) -> Vec<ObjectDiff> {
    let yaml = |r: &Rendered| -> BTreeMap<String, String> {
        r.objects
            .iter()
            .map(|o| (key(o), emit::to_yaml(&o.object).unwrap_or_else(|e| format!("# {e}\n"))))
            .collect()
    };
    let (before, after) = (yaml(old), yaml(new));
    let mut out = Vec::new();
    for o in &new.objects {
        let k = key(o);
        let now = &after[&k];
        match before.get(&k) {
            Some(was) if was == now => {}
            Some(was) => out.push(ObjectDiff {
                unified: unified(&k, was, now),
                object: k,
                change: Change::Changed,
            }),
            None => out.push(ObjectDiff {
                unified: unified(&k, "", now),
                object: k,
                change: Change::Added,
            }),
        }
    }
    for o in &old.objects {
        let k = key(o);
        if !after.contains_key(&k) {
            out.push(ObjectDiff {
                unified: unified(&k, &before[&k], ""),
                object: k,
                change: Change::Removed,
            });
        }
    }
    out
}

/// Renders one Application with both Blueprints and compares.
pub fn application(
    app: &Application,
    old: &LoadedBlueprint,
    new: &LoadedBlueprint,
    platform: &Platform,
) -> ApplicationDiff {
    let application = format!(
        "{}/{}",
        app.metadata.namespace.as_deref().unwrap_or_default(),
        app.metadata.name.as_deref().unwrap_or_default()
    );
    // Each side renders the Application as if it named that side's Blueprint (they differ only when comparing two
    // Blueprints of different names, and then the `plinth.dev/blueprint` label shows it).
    let with = |bp: &LoadedBlueprint| {
        if app.spec.blueprint == bp.name {
            render(app, bp, platform)
        } else {
            let mut renamed = app.clone();
            renamed.spec.blueprint.clone_from(&bp.name);
            render(&renamed, bp, platform)
        }
    };
    let outcome = match (with(old), with(new)) {
        (Ok(o), Ok(n)) => {
            let d = objects(&o, &n);
            if d.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Changed(d)
            }
        }
        (Ok(_), Err(p)) => Outcome::Breaks(p),
        (Err(_), Ok(n)) => {
            let empty = Rendered {
                objects: Vec::new(),
                blueprint: n.blueprint.clone(),
                blueprint_hash: String::new(),
            };
            Outcome::Fixed(objects(&empty, &n))
        }
        (Err(_), Err(p)) => Outcome::FailsBoth(p),
    };
    ApplicationDiff { application, outcome }
}

/// Counts what changes.
pub fn summary(diffs: &[ApplicationDiff]) -> Summary {
    let mut s = Summary {
        applications: diffs.len(),
        ..Summary::default()
    };
    for d in diffs {
        match &d.outcome {
            Outcome::Unchanged => s.unchanged += 1,
            Outcome::Changed(objects) | Outcome::Fixed(objects) => {
                s.changed += 1;
                for o in objects {
                    match o.change {
                        Change::Added => s.objects_added += 1,
                        Change::Removed => s.objects_removed += 1,
                        Change::Changed => s.objects_changed += 1,
                    }
                }
            }
            Outcome::Breaks(_) => s.broken += 1,
            Outcome::FailsBoth(_) => s.failing += 1,
        }
    }
    s
}
