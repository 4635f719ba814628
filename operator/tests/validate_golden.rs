//! Golden tests of `plinth validate`: every input under `inputs/validate/fail` is refused with the
//! snapshotted, located diagnostics and exit code 1; the `pass` inputs are valid; every report format
//! carries the same findings; every CEL rule of the CRDs fires on a fixture; hostile input gives a finding.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use std::path::Path;
use std::process::{Command, Stdio};

use plinth_operator::validate::{self, Input, Options, Severity};

fn plinth_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/validate"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plinth runs");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        std::io::Write::write_all(&mut pipe, bytes).expect("write stdin");
    }
    drop(pipe);
    let out = child.wait_with_output().expect("plinth ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plinth(args: &[&str]) -> (i32, String, String) {
    plinth_with_stdin(args, None)
}

fn fixture(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/validate");
    path.strip_prefix(&root).unwrap_or(path).display().to_string()
}

#[test]
fn fail_inputs_are_refused_with_located_diagnostics() {
    insta::glob!("inputs/validate/fail/*.*", |path| {
        let file = fixture(path);
        let (code, stdout, stderr) = plinth(&["validate", &file]);
        assert_eq!(code, 1, "exit code for {file}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("{file}:")),
            "diagnostics must name the file: {stdout}"
        );
        insta::assert_snapshot!(format!("exit code: {code}\n{stdout}{stderr}"));
    });
}

#[test]
fn pass_inputs_are_valid() {
    let (code, stdout, stderr) = plinth(&["validate", "pass"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("6 documents: 5 valid, 0 invalid, 1 skipped; 0 errors"),
        "{stdout}"
    );
    // Other kinds are refused only when asked.
    let (code, stdout, _) = plinth(&["validate", "--strict-kinds", "pass"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("refused (--strict-kinds)"), "{stdout}");
}

#[test]
fn every_finding_has_a_position_a_path_and_a_rule_and_findings_are_sorted() {
    let (code, stdout, _) = plinth(&["validate", "-o", "json", "fail"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["version"], 1);
    assert_eq!(report["valid"], false);
    let findings = report["findings"].as_array().expect("findings");
    assert!(findings.len() >= 28, "{}", findings.len());
    let mut last = (String::new(), 0, 0);
    for f in findings {
        let line = f["line"].as_u64().expect("line");
        let col = f["column"].as_u64().expect("column");
        assert!(line >= 1 && col >= 1, "{f}");
        assert!(!f["rule"].as_str().expect("rule").is_empty(), "{f}");
        assert!(!f["message"].as_str().expect("message").is_empty(), "{f}");
        assert!(
            f["path"].is_string() && f["severity"].is_string() && f["code"].is_string(),
            "{f}"
        );
        let key = (f["file"].as_str().expect("file").to_owned(), line, col);
        assert!(key >= last, "findings out of order: {last:?} then {key:?}");
        last = key;
    }
    let totals = &report["totals"];
    assert_eq!(totals["errors"].as_u64(), Some(findings.len() as u64));
    assert_eq!(
        totals["documents"],
        totals["valid"].as_u64().expect("valid")
            + totals["invalid"].as_u64().expect("invalid")
            + totals["skipped"].as_u64().expect("skipped")
    );
    // A typo gets the nearest field name; an enum the allowed values.
    let typo = findings
        .iter()
        .find(|f| f["rule"] == "unknown-field" && f["file"] == "fail/unknown-field-typo.yaml")
        .expect("typo finding");
    assert_eq!(typo["hint"], "did you mean `replicas`?");
    assert_eq!((typo["line"].as_u64(), typo["column"].as_u64()), (Some(8), Some(3)));
    assert_eq!(typo["path"], "spec.replicsa");
    let en = findings.iter().find(|f| f["rule"] == "enum").expect("enum finding");
    assert!(en["hint"].as_str().expect("hint").contains("\"TCP\""));
}

#[test]
fn sarif_junit_and_github_carry_the_same_places() {
    let file = "fail/multi-document.yaml";
    let (code, json, _) = plinth(&["validate", "-o", "json", file]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let places: Vec<(u64, u64)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| (f["line"].as_u64().expect("line"), f["column"].as_u64().expect("column")))
        .collect();
    assert_eq!(places, [(18, 9), (20, 25)]);

    let (code, sarif, _) = plinth(&["validate", "-o", "sarif", file]);
    assert_eq!(code, 1);
    let sarif: serde_json::Value = serde_json::from_str(&sarif).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let regions: Vec<(u64, u64)> = sarif["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let region = &r["locations"][0]["physicalLocation"]["region"];
            (
                region["startLine"].as_u64().expect("startLine"),
                region["startColumn"].as_u64().expect("startColumn"),
            )
        })
        .collect();
    assert_eq!(regions, places);

    let (code, github, _) = plinth(&["validate", "-o", "github", file]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = github.lines().collect();
    assert_eq!(lines.len(), 2, "{github}");
    assert!(
        lines[0].starts_with("::error file=fail/multi-document.yaml,line=18,col=9,"),
        "{}",
        lines[0]
    );

    let (code, junit, _) = plinth(&["validate", "-o", "junit", file]);
    assert_eq!(code, 1);
    assert_eq!(
        junit.matches("<testcase ").count(),
        2,
        "one test case per document: {junit}"
    );
    assert_eq!(junit.matches("<failure ").count(), 1, "{junit}");
    insta::assert_snapshot!("junit", junit);
    insta::assert_snapshot!("github", github);
}

#[test]
fn stdin_is_read_with_a_dash() {
    let text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/validate/fail/bounds.yaml"))
        .expect("fixture");
    let (code, stdout, _) = plinth_with_stdin(&["validate", "-"], Some(&text));
    assert_eq!(code, 1);
    assert!(
        stdout.contains("<stdin>:8:13: error[plinth::spec]: spec.replicas: 5000 is above the maximum of 1000"),
        "{stdout}"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(plinth(&["validate"]).0, 2);
    assert_eq!(plinth(&["validate", "no-such-file.yaml"]).0, 2);
    assert_eq!(plinth(&["validate", "-o", "xml", "pass"]).0, 2);
    assert_eq!(plinth(&["validate", "--blueprints", "no-such-dir", "pass"]).0, 2);
}

#[test]
fn every_cel_rule_of_the_crds_fires_on_a_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/validate/fail");
    let mut fired = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("text");
        let Ok(docs) = plinth_operator::yaml::parse(&text, &plinth_operator::yaml::Limits::default()) else {
            continue;
        };
        for d in docs {
            let json = d.root.to_json();
            if let Some(kind) = json["kind"].as_str() {
                let found = validate::cel::problems(kind, &json, true);
                let oracle = validate::cel::problems_by_kube_cel(kind, &json, true);
                assert_eq!(
                    found.iter().map(|p| (&p.location, &p.rule)).collect::<Vec<_>>(),
                    oracle.iter().map(|p| (&p.location, &p.rule)).collect::<Vec<_>>(),
                    "kube-cel's validator disagrees"
                );
                for p in found {
                    fired.insert((kind.to_owned(), p.rule));
                }
            }
        }
    }
    for kind in ["Application", "Blueprint"] {
        for rule in validate::cel::rules(kind) {
            let escaped = validate::cel::escape_reserved(&rule.rule);
            assert!(
                fired.contains(&(kind.to_owned(), escaped)),
                "no fail fixture breaks the {kind} CEL rule `{}` at {:?}",
                rule.rule,
                rule.path
            );
        }
    }
    assert!(fired.len() >= 9, "{fired:?}");
}

fn check_one(file: &str, bytes: Vec<u8>) -> validate::Outcome {
    match plinth_operator::cli::input::decode(bytes) {
        Ok(text) => validate::validate_text(file, &text, &Options::default()),
        Err(e) => panic!("{file}: not text: {e}"),
    }
}

#[test]
fn hostile_input_gives_a_finding_never_a_crash() {
    // A YAML bomb: each level multiplies the one before by ten.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 { "a".to_owned() } else { format!("l{}", i - 1) };
        bomb.push_str(&format!("l{i}: &l{i} [{}]\n", vec![format!("*{prev}"); 10].join(", ")));
    }
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_block = (0..200)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect::<String>();
    let huge = format!("a: \"{}\"\n", "x".repeat(4 * 1024 * 1024));
    for (name, text, rule) in [
        ("bomb.yaml", bomb.as_str(), "size"),
        ("deep.yaml", deep.as_str(), "depth"),
        ("deep-block.yaml", deep_block.as_str(), "depth"),
        ("huge.yaml", huge.as_str(), "size"),
        ("tab.yaml", "a:\n\t- b\n", "syntax"),
        ("scalar.yaml", "just a string\n", "object"),
    ] {
        let outcome = check_one(name, text.as_bytes().to_vec());
        let errors: Vec<_> = outcome
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(!errors.is_empty(), "{name}: no finding");
        assert!(
            errors.iter().any(|f| f.rule == rule),
            "{name}: expected a `{rule}` finding, got {errors:?}"
        );
    }
    let empty = validate::validate_text("empty.yaml", "", &Options::default());
    assert_eq!(empty.findings.len(), 1);
    assert_eq!(empty.findings[0].severity, Severity::Warning);
    assert_eq!(empty.findings[0].rule, "empty");

    // Binary and invalid UTF-8, through the command line.
    let dir = std::env::temp_dir().join(format!("plinth-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("binary.yaml"), b"\x7fELF\x02\x01\x01\x00\x00\x00").expect("write");
    std::fs::write(dir.join("latin1.yaml"), b"a: 1\nb: caf\xe9\n").expect("write");
    std::fs::write(dir.join("empty.yaml"), b"").expect("write");
    let (code, stdout, _) = plinth(&["validate", "-o", "json", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let rules: Vec<(&str, &str, u64, u64)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["file"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default(),
                f["rule"].as_str().unwrap_or_default(),
                f["line"].as_u64().unwrap_or_default(),
                f["column"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("binary.yaml", "binary", 1, 1),
            ("empty.yaml", "empty", 1, 1),
            ("latin1.yaml", "utf8", 2, 7)
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn template_errors_point_into_the_blueprint_manifest() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/validate/fail/blueprint-template-error.yaml"),
    )
    .expect("fixture");
    let outcome = validate::check(
        &[Input {
            file: "t.yaml",
            text: &text,
        }],
        Default::default(),
        Default::default(),
        &Options::default(),
    );
    let f = outcome
        .findings
        .iter()
        .find(|f| f.code == "plinth::template")
        .expect("template finding");
    // `{{values.size}}` on line 16, after the 8-space indentation of the block scalar.
    assert_eq!((f.line, f.column), (16, 15), "{f:?}");
    assert_eq!(&text.lines().nth(15).expect("line")[14..], "{{values.size}}");
}

#[test]
fn the_json_schema_is_valid_json_for_each_kind() {
    for args in [
        vec!["schema"],
        vec!["schema", "--kind", "Application"],
        vec!["schema", "--kind", "Blueprint"],
    ] {
        let (code, stdout, stderr) = plinth(&args);
        assert_eq!(code, 0, "{stderr}");
        let schema: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}

#[test]
fn rendered_objects_are_checked_against_their_kubernetes_types_with_rendered() {
    let file = "rendered/bad-kubernetes-fields.yaml";
    let (code, _, _) = plinth(&["validate", file]);
    assert_eq!(code, 0, "without --rendered only Plinth's own rules apply");
    let (code, stdout, _) = plinth(&["validate", "--rendered", "-o", "json", file]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let mut rules: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["rule"].as_str().unwrap_or_default())
        .collect();
    rules.sort_unstable();
    assert_eq!(rules, ["dns_label", "probe", "range"]);
    // Placed at the Application's `blueprint:` value, the closest the input has to a rendered object.
    assert!(
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["line"] == 43 && f["column"] == 14)
    );
}
