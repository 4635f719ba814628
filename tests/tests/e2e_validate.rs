//! `plinth validate` gives the same verdict as the cluster: every fixture under
//! `operator/tests/inputs/validate/{pass,fail}` is submitted (server-side dry run) to the real kube-apiserver
//! of the test control plane with the CRDs installed, and checked with `plinth validate`.
//!
//! - Rejected by the apiserver ⇒ rejected by `plinth validate`.
//! - Accepted by the apiserver but rejected by `plinth validate` ⇒ only for rules the test apiserver
//!   (v1.20.2: no CEL, unknown fields pruned rather than refused) does not enforce itself: CEL rules,
//!   unknown fields, and the operator's own verdict (validator rules, Blueprint, guardrails, render). A
//!   structural-schema finding (type, enum, bounds, pattern, required) on an object the apiserver accepts
//!   fails the test: Plinth would be stricter than the CRD.
//! - Pass fixtures: accepted by both.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::path::{Path, PathBuf};

use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use plinth_operator::validate::{Input, Options, Severity};
use plinth_tests::control_plane::ControlPlane;
use serde_json::{Value, json};

/// Schema keywords the apiserver enforces on a custom resource without CEL.
const STRUCTURAL: [&str; 12] = [
    "type",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "required",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "anyOf",
];

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../operator/tests/inputs/validate")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json"))
        .collect();
    v.sort();
    v
}

/// Installs the CRDs once per test process (both tests share the control plane).
async fn installed(cp: &ControlPlane) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| install_crds(cp)).await;
}

/// Installs the CRDs as the test apiserver takes them: the fixture removes CEL rules on servers before 1.25
/// (which have no CEL).
async fn install_crds(cp: &ControlPlane) {
    for crd in plinth_api::crds() {
        cp.install_crd(&crd).await;
    }
}

/// Submits one object with a server-side dry run: the object as the apiserver would store it (pruned and
/// defaulted) when it accepts it, else its message.
async fn submit(cp: &ControlPlane, namespace: &str, mut object: Value) -> Result<Value, String> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let gvk = GroupVersionKind::gvk(plinth_api::GROUP, plinth_api::VERSION, &kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let client = cp.client().await;
    let api: Api<DynamicObject> = if kind == "Blueprint" {
        Api::all_with(client, &ar)
    } else {
        object["metadata"]["namespace"] = json!(namespace);
        Api::namespaced_with(client, namespace, &ar)
    };
    let obj: DynamicObject = serde_json::from_value(object).map_err(|e| format!("not an object: {e}"))?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // A create whose name exists is a conflict, not a verdict: dry runs never create, so none exists.
    api.create(&params, &obj)
        .await
        .map(|o| serde_json::to_value(o).unwrap())
        .map_err(|e| e.to_string())
}

/// The operator's verdict on the objects of one fixture as the apiserver stores them: what `reconcile`
/// does before it writes (Blueprint lookup and compile, then `render::render`, which runs the validator
/// rules, guardrails and templates). `true` when the operator would refuse any of them.
fn operator_refuses_any(stored: &[Value]) -> bool {
    let mut blueprints = std::collections::BTreeMap::new();
    let mut refused = false;
    for bp in stored.iter().filter(|o| o["kind"] == "Blueprint") {
        let bp: plinth_api::Blueprint = serde_json::from_value(bp.clone()).unwrap();
        match plinth_operator::render::LoadedBlueprint::from_object(&bp) {
            Ok(loaded) => {
                blueprints.insert(bp.name_any(), loaded);
            }
            Err(_) => refused = true,
        }
    }
    let bundled = plinth_operator::render::bundled::loaded().unwrap();
    for app in stored.iter().filter(|o| o["kind"] == "Application") {
        let app: plinth_api::Application = serde_json::from_value(app.clone()).unwrap();
        let bp = blueprints
            .get(&app.spec.blueprint)
            .or_else(|| bundled.get(&app.spec.blueprint));
        refused |= match bp {
            None => true,
            Some(bp) => plinth_operator::render::render(&app, bp, &Default::default()).is_err(),
        };
    }
    refused
}

/// The Plinth objects of a fixture (documents of other kinds, or unreadable ones, are not submitted).
fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    match plinth_operator::yaml::parse(&text, &plinth_operator::yaml::Limits::default()) {
        Ok(docs) => docs
            .iter()
            .map(|d| d.root.to_json())
            .filter(|v| {
                v["apiVersion"] == plinth_api::API_VERSION
                    && matches!(v["kind"].as_str(), Some("Application" | "Blueprint"))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn verdict(paths: &[PathBuf]) -> plinth_operator::validate::Outcome {
    let texts: Vec<(String, String)> = paths
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let inputs: Vec<Input<'_>> = texts.iter().map(|(f, t)| Input { file: f, text: t }).collect();
    let blueprints = plinth_operator::render::bundled::objects().unwrap();
    plinth_operator::validate::check(&inputs, blueprints, Default::default(), &Options::default())
}

#[tokio::test(flavor = "multi_thread")]
async fn plinth_validate_rejects_everything_the_apiserver_rejects() {
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("validate").await;
    let mut checked = 0;
    let mut rejected_by_server = 0;
    let mut mismatches = Vec::new();
    for path in fixtures("fail") {
        let outcome = verdict(std::slice::from_ref(&path));
        let errors: Vec<_> = outcome
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(
            !errors.is_empty(),
            "{}: plinth validate accepts a fail fixture",
            path.display()
        );
        let mut stored = Vec::new();
        let mut server_rejected_any = false;
        for object in objects(&path) {
            // Multi-document fixtures: judge each object by the findings in its own document.
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let doc = outcome.documents.iter().find(|d| d.name == name);
            let own: Vec<_> = errors
                .iter()
                .filter(|f| doc.is_none_or(|d| f.document == d.document || f.document.is_none()))
                .collect();
            let server = submit(cp, ns.name(), object).await;
            checked += 1;
            match (server, own.is_empty()) {
                (Err(message), true) => mismatches.push(format!(
                    "{} ({name}): the apiserver rejects it ({message}), plinth validate accepts it",
                    path.display()
                )),
                (Err(_), false) => {
                    rejected_by_server += 1;
                    server_rejected_any = true;
                }
                (Ok(object), _) => {
                    for f in own
                        .iter()
                        .filter(|f| f.code == "plinth::spec" && STRUCTURAL.contains(&f.rule.as_str()))
                    {
                        mismatches.push(format!(
                            "{} ({name}): the apiserver accepts it, but plinth validate reports a structural-schema finding the CRD does not hold: {}: {} [{}]",
                            path.display(),
                            f.location(),
                            f.message,
                            f.rule
                        ));
                    }
                    stored.push(object);
                }
            }
        }
        // What the apiserver accepts, plinth validate refuses for rules the test apiserver does not run (CEL,
        // the operator's own): the operator must refuse it too. Unknown fields excepted: the apiserver prunes
        // them, plinth validate refuses them.
        let pruned_only = errors.iter().all(|f| f.rule == "unknown-field");
        if !server_rejected_any && !stored.is_empty() && !pruned_only && !operator_refuses_any(&stored) {
            mismatches.push(format!(
                "{}: plinth validate refuses it, but the apiserver and the operator accept it",
                path.display()
            ));
        }
    }
    assert!(checked >= 20, "only {checked} objects submitted");
    // Type, enum, bounds, required, pattern, an invalid Blueprint: the apiserver's own schema refuses these.
    assert!(
        rejected_by_server >= 6,
        "the apiserver rejected only {rejected_by_server} objects"
    );
    assert!(mismatches.is_empty(), "verdicts differ:\n{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pass_fixtures_are_accepted_by_both() {
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("validate-pass").await;
    let paths = fixtures("pass");
    let outcome = verdict(&paths);
    let errors: Vec<String> = outcome
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.location(), f.message))
        .collect();
    assert!(errors.is_empty(), "plinth validate refuses pass fixtures: {errors:?}");
    let mut submitted = 0;
    let mut all_stored = Vec::new();
    for path in &paths {
        for object in objects(path) {
            let name = object["metadata"]["name"].clone();
            let stored = submit(cp, ns.name(), object)
                .await
                .unwrap_or_else(|e| panic!("{} ({name}): the apiserver rejects a pass fixture: {e}", path.display()));
            all_stored.push(stored);
            submitted += 1;
        }
    }
    assert!(submitted >= 4);
    assert!(
        !operator_refuses_any(&all_stored),
        "the operator refuses a pass fixture"
    );
}
