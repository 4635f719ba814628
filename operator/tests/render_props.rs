//! Property tests: whatever a developer puts in a free-form field, rendering keeps the document's structure
//! and holds the value exactly, in exactly its field.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use plinth_api::Application;
use plinth_operator::render::{self, Platform, bundled, emit};
use plinth_operator::yaml;
use proptest::prelude::*;
use serde_json::{Value, json};

fn web() -> &'static render::LoadedBlueprint {
    bundled::loaded()
        .expect("bundled blueprints load")
        .get("web")
        .expect("web blueprint")
}

/// The paths of every key in a value, with leaves replaced by their type: the document's shape.
fn shape(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, item) in m {
                shape(item, &format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                shape(item, &format!("{path}/{i}"), out);
            }
        }
        leaf => out.push(format!(
            "{path}:{}",
            match leaf {
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "null",
            }
        )),
    }
}

fn app(spec: Value) -> Application {
    serde_json::from_value(json!({
        "apiVersion": "plinth.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "prop", "namespace": "props"},
        "spec": spec,
    }))
    .expect("application")
}

/// Renders, writes the objects as YAML the way `plinth render` prints them, and reads them back.
fn render_and_reparse(a: &Application) -> Vec<Value> {
    let rendered = render::render(a, web(), &Platform::default()).unwrap_or_else(|p| panic!("render failed: {p}"));
    let objects: Vec<Value> = rendered.objects.iter().map(|o| o.object.to_json()).collect();
    let text = emit::to_yaml_stream(rendered.objects.iter().map(|o| &o.object)).expect("prints");
    let back: Vec<Value> = yaml::parse(&text, &yaml::Limits::default())
        .expect("printed YAML parses")
        .iter()
        .map(|d| d.root.to_json())
        .collect();
    assert_eq!(back, objects, "printed YAML must read back as the same objects");
    back
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn spec_with(env_value: &str, arg: &str, file: &str, annotation: &str, replicas: i32, port: i32) -> Value {
    json!({
        "image": "ghcr.io/acme/app:1.0.0",
        "replicas": replicas,
        "port": port,
        "env": [{"name": "FREE", "value": env_value}],
        "args": [arg],
        "command": [arg],
        "config": {"file.txt": file},
        "values": {"annotations": {"note": annotation}},
    })
}

/// Any string, half the time built from the characters that mean something in YAML or Handlebars.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z \n\r\t\"'{}:#&*!|>%@`,?\\[\\]\\\\\u{85}\u{2028}\u{feff}-]{0,24}"
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Hostile strings in env values, args, command, config files and values stay exactly themselves,
    /// and the rendered documents have exactly the shape they have for harmless strings.
    #[test]
    fn free_form_strings_never_change_structure(
        env_value in hostile(),
        arg in hostile(),
        file in hostile(),
        annotation in hostile(),
        replicas in 0i32..=50,
        port in 1i32..=65535,
    ) {
        let objects = render_and_reparse(&app(spec_with(&env_value, &arg, &file, &annotation, replicas, port)));
        let baseline = render_and_reparse(&app(spec_with("x", "x", "x", "x", replicas, port)));
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for o in &objects { shape(o, "", &mut got); }
        for o in &baseline { shape(o, "", &mut want); }
        prop_assert_eq!(got, want);

        let deployment = find(&objects, "Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        prop_assert_eq!(&container["env"][0]["value"], &json!(env_value));
        prop_assert_eq!(&container["args"], &json!([arg.clone()]));
        prop_assert_eq!(&container["command"], &json!([arg]));
        prop_assert_eq!(&container["ports"][0]["containerPort"], &json!(port));
        prop_assert_eq!(&deployment["spec"]["replicas"], &json!(replicas));
        prop_assert_eq!(&deployment["spec"]["template"]["metadata"]["annotations"]["note"], &json!(annotation));
        prop_assert_eq!(&find(&objects, "ConfigMap")["data"]["file.txt"], &json!(file));
    }

    /// The same holds for the strings the issue names, embedded anywhere in a longer string.
    #[test]
    fn known_injection_payloads_stay_values(prefix in "[a-z]{0,3}", pick in 0usize..6, suffix in "[a-z]{0,3}") {
        let payloads = ["x\nhostNetwork: true", "{{evil}}", ": # &a *a", "\"\n- a", "'}]{[", "\u{2028}\u{85}\r\n"];
        let s = format!("{prefix}{}{suffix}", payloads[pick]);
        let objects = render_and_reparse(&app(spec_with(&s, &s, &s, &s, 2, 8080)));
        let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
        prop_assert!(pod.get("hostNetwork").is_none());
        prop_assert_eq!(&pod["containers"][0]["env"][0]["value"], &json!(s));
    }
}

#[test]
fn every_rendered_pod_is_restricted_and_every_object_labelled() {
    for (name, spec) in [
        ("web", json!({"image": "a/b:1", "port": 80})),
        ("worker", json!({"image": "a/b:1", "blueprint": "worker"})),
    ] {
        let a = app(spec);
        let bp = bundled::loaded().expect("bundled").get(name).expect("blueprint");
        let rendered = render::render(&a, bp, &Platform::default()).expect("renders");
        for o in &rendered.objects {
            let labels = o.object.metadata().labels.clone().unwrap_or_default();
            for key in [
                plinth_api::labels::NAME,
                plinth_api::labels::INSTANCE,
                plinth_api::labels::MANAGED_BY,
                plinth_api::labels::PART_OF,
                plinth_api::labels::APPLICATION,
                plinth_api::labels::BLUEPRINT,
            ] {
                assert!(
                    labels.contains_key(key),
                    "{name}: {} lacks label {key}",
                    o.object.kind()
                );
            }
            assert_eq!(o.object.metadata().namespace.as_deref(), Some("props"));
            if let render::Object::Deployment(d) = &o.object {
                let pod = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod");
                assert_eq!(render::security::restricted_violations(pod), vec![], "{name}");
                assert_eq!(
                    pod.automount_service_account_token,
                    Some(false),
                    "no token unless permissions are asked for"
                );
                let requests = pod.containers[0]
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.clone())
                    .unwrap_or_default();
                assert!(
                    requests.contains_key("cpu") && requests.contains_key("memory"),
                    "requests always set"
                );
            }
        }
    }
}

#[test]
fn no_policy_gap_ingress_is_denied_unless_asked() {
    let objects = render_and_reparse(&app(json!({"image": "a/b:1", "port": 80})));
    let np = find(&objects, "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"], json!([]));
    // Only DNS is allowed out.
    let egress = np["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0]["ports"][0]["port"], json!(53));
}

#[test]
fn rendering_is_byte_identical_across_runs() {
    let a = app(spec_with("v", "a", "f", "n", 3, 8080));
    let print = || {
        let rendered = render::render(&a, web(), &Platform::default()).expect("renders");
        emit::to_yaml_stream(rendered.objects.iter().map(|o| &o.object)).expect("prints")
    };
    let first = print();
    for _ in 0..20 {
        let again = print();
        assert_eq!(again, first);
    }
}
