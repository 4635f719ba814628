//! Fuzzing the validator's entry point with proptest: whatever the input (random text, random bytes
//! decoded, valid manifests with random edits), `plinth validate` returns findings placed inside the
//! text, never panics, and a valid manifest stays valid.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use plinth_operator::validate::{self, Options, Severity};
use proptest::prelude::*;

const VALID: &str = "apiVersion: plinth.dev/v1alpha1
kind: Application
metadata:
  name: checkout
  namespace: shop
spec:
  image: ghcr.io/acme/checkout:1.4.2
  port: 8080
  autoscale: {min: 2, max: 5}
  env:
    - {name: A, value: x}
    - name: B
      secret: {name: s, key: k}
  allowFrom: [{app: frontend}, {namespace: edge, ports: [{port: 80, endPort: 90}]}]
  allowTo: [{cidr: 203.0.113.0/24, except: [203.0.113.128/25]}]
  health: {http: {path: /healthz}}
  values: {annotations: {a: b}}
";

/// Every finding points at a line and column that exist in `text` (or at 1:1 for the file as a whole).
fn assert_placed_inside(text: &str, outcome: &validate::Outcome) {
    let lines: Vec<&str> = text.split('\n').collect();
    for f in &outcome.findings {
        if f.file != "fuzz.yaml" {
            continue;
        }
        assert!(f.line >= 1 && f.column >= 1, "{f:?}");
        let line = lines.get(f.line as usize - 1);
        assert!(
            line.is_some() || (f.line, f.column) == (1, 1),
            "line {} outside the text of {} lines: {f:?}",
            f.line,
            lines.len()
        );
        if let Some(l) = line {
            assert!(
                (f.column as usize) <= l.chars().count() + 1,
                "column {} beyond line {:?}: {f:?}",
                f.column,
                l
            );
        }
    }
}

fn run(text: &str) -> validate::Outcome {
    validate::validate_text("fuzz.yaml", text, &Options::default())
}

#[test]
fn the_unmutated_manifest_is_valid() {
    let outcome = run(VALID);
    assert!(!outcome.has_errors(), "{:?}", outcome.findings);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_gives_findings_inside_the_text_never_a_panic(text in "\\PC{0,400}") {
        let outcome = run(&text);
        assert_placed_inside(&text, &outcome);
    }

    #[test]
    fn yaml_like_text_gives_findings_inside_the_text(
        text in "([a-z:\\-\\[\\]{}&*!|>'\" #,0-9]|\n|  ){0,300}"
    ) {
        let outcome = run(&text);
        assert_placed_inside(&text, &outcome);
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_read_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(text) = plinth_operator::cli::input::decode(bytes) {
            let outcome = run(&text);
            assert_placed_inside(&text, &outcome);
        }
    }

    #[test]
    fn edits_of_a_valid_manifest_are_placed_inside_it(
        at in 0usize..VALID.len(),
        cut in 0usize..12,
        insert in "[a-z0-9:\\-\\[\\]{}\" ]{0,8}|\n  [a-z]{1,8}: [0-9a-z]{0,6}",
    ) {
        let mut text = VALID.to_owned();
        let start = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + cut).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        let outcome = run(&text);
        assert_placed_inside(&text, &outcome);
        // The CEL rules give the verdict kube-cel's own validator gives, node for node.
        if let Ok(docs) = plinth_operator::yaml::parse(&text, &plinth_operator::yaml::Limits::default()) {
            for d in docs {
                let json = d.root.to_json();
                let key = |v: Vec<plinth_operator::problem::Problem>| {
                    let mut v: Vec<String> = v.into_iter().map(|p| format!("{:?} {}", p.location, p.rule)).collect();
                    v.sort();
                    v
                };
                prop_assert_eq!(
                    key(validate::cel::problems("Application", &json, true)),
                    key(validate::cel::problems_by_kube_cel("Application", &json, true))
                );
            }
        }
        // Errors always say what and where.
        for f in outcome.findings.iter().filter(|f| f.severity == Severity::Error) {
            prop_assert!(!f.message.is_empty() && !f.rule.is_empty(), "{f:?}");
        }
    }
}
