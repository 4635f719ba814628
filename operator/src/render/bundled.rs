//! The Blueprints shipped in the binary, from the repository's `templates/` folder.
//!
//! Each Blueprint is a folder: `blueprint.yaml` (a `Blueprint` manifest without templates) and its
//! templates, `*.yaml.hbs` for objects and `_*.hbs` for partials.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use include_dir::{Dir, include_dir};
use plinth_api::Blueprint;

use super::blueprint::LoadedBlueprint;
use crate::problem::{Location, Problem, Problems, codes};
use crate::yaml;

static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// Every bundled Blueprint as a `Blueprint` object, by name.
pub fn objects() -> Result<BTreeMap<String, Blueprint>, Problems> {
    let mut out = BTreeMap::new();
    for dir in TEMPLATES.dirs() {
        let bp = from_files(
            dir.path().display().to_string().as_str(),
            dir.files().map(|f| {
                (
                    f.path().file_name().and_then(|n| n.to_str()).unwrap_or_default(),
                    f.contents_utf8(),
                )
            }),
        )?;
        out.insert(bp.metadata.name.clone().unwrap_or_default(), bp);
    }
    Ok(out)
}

/// Builds a Blueprint object from a folder's files: `blueprint.yaml` plus templates.
pub fn from_files<'a>(
    folder: &str,
    files: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Blueprint, Problems> {
    let mut meta: Option<&str> = None;
    let mut templates = BTreeMap::new();
    for (name, text) in files {
        let Some(text) = text else {
            return Err(Problems::one(blueprint_problem(
                folder,
                format!("{name} is not UTF-8 text"),
            )));
        };
        if name == "blueprint.yaml" {
            meta = Some(text);
        } else if name.ends_with(".hbs") {
            templates.insert(name.to_owned(), text.to_owned());
        }
    }
    let meta =
        meta.ok_or_else(|| Problems::one(blueprint_problem(folder, "the folder has no blueprint.yaml".into())))?;
    let docs = yaml::parse(meta, &yaml::Limits::default())
        .map_err(|e| Problems::one(blueprint_problem(folder, format!("blueprint.yaml:{}: {e}", e.pos()))))?;
    let root = docs
        .first()
        .ok_or_else(|| Problems::one(blueprint_problem(folder, "blueprint.yaml is empty".into())))?;
    let mut json = root.root.to_json();
    if let Some(spec) = json.get_mut("spec").and_then(serde_json::Value::as_object_mut) {
        spec.insert("templates".into(), serde_json::to_value(&templates).unwrap_or_default());
    }
    serde_json::from_value(json).map_err(|e| {
        Problems::one(blueprint_problem(
            folder,
            format!("blueprint.yaml is not a Blueprint: {e}"),
        ))
    })
}

fn blueprint_problem(folder: &str, message: String) -> Problem {
    Problem {
        code: codes::BLUEPRINT,
        rule: "load".into(),
        location: Location::Blueprint {
            name: folder.to_owned(),
        },
        message,
        hint: None,
    }
}

/// The bundled Blueprints, compiled once per process.
pub fn loaded() -> Result<&'static BTreeMap<String, LoadedBlueprint>, &'static Problems> {
    static LOADED: OnceLock<Result<BTreeMap<String, LoadedBlueprint>, Problems>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            objects()?
                .into_iter()
                .map(|(name, bp)| LoadedBlueprint::from_object(&bp).map(|l| (name, l)))
                .collect()
        })
        .as_ref()
}
