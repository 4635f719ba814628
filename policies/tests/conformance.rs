//! Conformance with real packets: every scenario under `tests/scenarios/`
//! runs in its own network namespaces; expected verdicts come from the
//! reference evaluator or the scenario's explicit tables.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::path::Path;

use plinth_policies::conformance::{Options, run_file};
use plinth_policies::scenario::render_text;

fn check(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(file);
    let (scenario, results) =
        run_file(&path, &Options::default()).unwrap_or_else(|e| panic!("scenario {file} could not run: {e}"));
    println!("{}", render_text(&scenario.name, &results));
    let mismatches: Vec<String> = results
        .iter()
        .flat_map(|r| r.mismatches.iter().map(move |m| format!("{} {}: {m}", r.step, r.probe)))
        .collect();
    assert!(!results.is_empty(), "scenario {file} probed nothing");
    assert!(
        mismatches.is_empty(),
        "scenario {file}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn default_deny() {
    check("default-deny.yaml");
}

#[test]
fn selectors() {
    check("selectors.yaml");
}

#[test]
fn ports() {
    check("ports.yaml");
}

#[test]
fn stacked() {
    check("stacked.yaml");
}

#[test]
fn updates() {
    check("updates.yaml");
}

#[test]
fn ipblock() {
    check("ipblock.yaml");
}

#[test]
fn ipv6() {
    check("ipv6.yaml");
}
