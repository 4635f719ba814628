//! Golden tests of `plinth blueprints diff`: the blast radius of a Blueprint change, offline.
//!
//! `inputs/rollout/diff/web-v1` is the bundled `web` Blueprint; `web-v2` drops the PodDisruptionBudget, adds a
//! scale-down window to the HorizontalPodAutoscaler and lowers `policy.maxReplicas` to 5. `apps/shop.yaml`
//! holds one Application per outcome: changed, changed differently, unchanged, broken, and one of another Blueprint.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use std::process::Command;

fn plinth(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("plinth runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const V1: &str = "tests/inputs/rollout/diff/web-v1";
const V2: &str = "tests/inputs/rollout/diff/web-v2";
const APPS: &str = "tests/inputs/rollout/diff/apps";

fn snapshot((code, stdout, stderr): (i32, String, String)) -> String {
    format!("exit code: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}")
}

#[test]
fn a_change_shows_a_unified_diff_per_object_and_exits_1() {
    let out = plinth(&["blueprints", "diff", V1, V2, APPS]);
    assert_eq!(out.0, 1, "{}", out.2);
    insta::assert_snapshot!(snapshot(out));
}

#[test]
fn stat_lists_applications_and_the_summary_only() {
    let out = plinth(&["blueprints", "diff", "--stat", V1, V2, APPS]);
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(!out.1.contains("@@"), "no hunks with --stat: {}", out.1);
    insta::assert_snapshot!(snapshot(out));
}

#[test]
fn no_change_exits_0_and_says_every_application_is_unchanged() {
    let out = plinth(&["blueprints", "diff", V1, V1, APPS]);
    assert_eq!(out.0, 0, "{}", out.2);
    insta::assert_snapshot!(snapshot(out));
}

#[test]
fn manifests_and_folders_give_the_same_diff() {
    let dir = std::env::temp_dir().join(format!("plinth-bp-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut manifests = Vec::new();
    for (folder, file) in [(V1, "v1.yaml"), (V2, "v2.yaml")] {
        let (code, text, stderr) = plinth(&["blueprints", "export", "--blueprints", folder, "web"]);
        assert_eq!(code, 0, "{stderr}");
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write");
        manifests.push(path.display().to_string());
    }
    let from_folders = plinth(&["blueprints", "diff", V1, V2, APPS]);
    let from_manifests = plinth(&["blueprints", "diff", &manifests[0], &manifests[1], APPS]);
    assert_eq!(from_manifests, from_folders);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn only_applications_of_the_blueprint_are_compared() {
    let (_, stdout, _) = plinth(&["blueprints", "diff", V1, V2, APPS]);
    assert!(
        !stdout.contains("mailer"),
        "the worker Application is skipped: {stdout}"
    );
    assert!(stdout.contains("4 Applications compared"), "{stdout}");
}

#[test]
fn a_missing_blueprint_is_invalid_input() {
    let out = plinth(&["blueprints", "diff", "no-such-blueprint", V2, APPS]);
    assert_eq!(out.0, 1);
    assert!(out.1.is_empty(), "nothing on stdout: {}", out.1);
    insta::assert_snapshot!(snapshot(out));
}

#[test]
fn a_new_blueprint_that_does_not_compile_is_reported_with_its_template_position() {
    let out = plinth(&[
        "blueprints",
        "diff",
        V1,
        "tests/inputs/render/blueprints/triple-stash",
        APPS,
    ]);
    assert_eq!(out.0, 1);
    assert!(out.1.is_empty(), "nothing on stdout: {}", out.1);
    insta::assert_snapshot!(snapshot(out));
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(plinth(&["blueprints", "diff", V1, V2]).0, 2);
}
