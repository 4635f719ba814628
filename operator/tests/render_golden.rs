//! Golden tests of `plinth render`: every input under `inputs/render/pass` renders to its snapshot, and every
//! input under `inputs/render/fail` is refused with the snapshotted diagnostics and exit code 1.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use std::path::Path;
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

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

const BLUEPRINTS: &str = "tests/inputs/render/blueprints";

#[test]
fn pass_inputs_render_to_their_snapshots() {
    insta::glob!("inputs/render/pass/*.yaml", |path| {
        let (code, stdout, stderr) = plinth(&["render", &relative(path)]);
        assert_eq!(code, 0, "{stderr}");
        insta::assert_snapshot!(stdout);
    });
}

#[test]
fn fail_inputs_are_refused_with_located_diagnostics() {
    insta::glob!("inputs/render/fail/*.yaml", |path| {
        let file = relative(path);
        let (code, stdout, stderr) = plinth(&["render", "--blueprints", BLUEPRINTS, &file]);
        assert_eq!(code, 1, "exit code for {file}: {stderr}");
        assert!(
            stdout.is_empty(),
            "nothing may be rendered when anything fails: {stdout}"
        );
        assert!(
            stderr.contains(&format!("{file}:")) || stderr.contains("blueprints/"),
            "diagnostics must name the file: {stderr}"
        );
        insta::assert_snapshot!(format!("exit code: {code}\n{stderr}"));
    });
}

#[test]
fn render_is_deterministic() {
    let args = ["render", "tests/inputs/render/pass"];
    let first = plinth(&args);
    for _ in 0..3 {
        assert_eq!(plinth(&args), first);
    }
}

#[test]
fn json_output_is_a_list_of_the_same_objects() {
    let (code, yaml_out, _) = plinth(&["render", "tests/inputs/render/pass/checkout-ten-lines.yaml"]);
    assert_eq!(code, 0);
    let (code, json_out, _) = plinth(&[
        "render",
        "-o",
        "json",
        "tests/inputs/render/pass/checkout-ten-lines.yaml",
    ]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&json_out).expect("JSON");
    assert_eq!(list["kind"], "List");
    let docs = plinth_operator::yaml::parse(&yaml_out, &plinth_operator::yaml::Limits::default()).expect("YAML");
    let from_yaml: Vec<serde_json::Value> = docs.iter().map(|d| d.root.to_json()).collect();
    assert_eq!(list["items"].as_array().expect("items"), &from_yaml);
    let kinds: Vec<&str> = from_yaml.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "NetworkPolicy",
            "Service",
            "Deployment",
            "PodDisruptionBudget"
        ]
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/render/pass/worker.yaml"))
        .expect("fixture");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["render", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &text).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: mailer"));
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(plinth(&["render"]).0, 2);
    assert_eq!(plinth(&["no-such-command"]).0, 2);
    assert_eq!(plinth(&["render", "--output", "xml", "x.yaml"]).0, 2);
}

#[test]
fn crds_print_both_definitions() {
    let (code, out, _) = plinth(&["crds"]);
    assert_eq!(code, 0);
    let docs = plinth_operator::yaml::parse(&out, &plinth_operator::yaml::Limits::default()).expect("YAML");
    let names: Vec<String> = docs
        .iter()
        .map(|d| {
            d.root.to_json()["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["applications.plinth.dev", "blueprints.plinth.dev"]);
}

#[test]
fn blueprints_export_round_trips_through_render() {
    let (code, exported, _) = plinth(&["blueprints", "export", "web"]);
    assert_eq!(code, 0);
    let dir = std::env::temp_dir().join(format!("plinth-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let input = dir.join("all.yaml");
    // The exported Blueprint renamed: rendering with it must give the same objects as the bundled one, but for the blueprint label.
    let renamed = exported.replacen("name: web", "name: web-copy", 1);
    let app = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/render/pass/checkout-ten-lines.yaml"),
    )
    .expect("fixture");
    std::fs::write(
        &input,
        format!(
            "{renamed}---\n{}",
            app.replace("replicas: 3", "replicas: 3\n  blueprint: web-copy")
        ),
    )
    .expect("write");
    let (code, via_export, stderr) = plinth(&["render", input.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    let (_, bundled, _) = plinth(&["render", "tests/inputs/render/pass/checkout-ten-lines.yaml"]);
    assert_eq!(
        via_export.replace("plinth.dev/blueprint: web-copy", "plinth.dev/blueprint: web"),
        bundled
    );
    std::fs::remove_dir_all(&dir).ok();
}
