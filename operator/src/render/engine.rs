//! The renderer: Application + Blueprint + platform settings in, typed objects or problems out. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use plinth_api::Application;
use plinth_api::application::is_dns_subdomain;
use validator::Validate;

use super::blueprint::LoadedBlueprint;
use super::context::{self, Platform};
use super::objects::Object;
use super::{guardrails, security, slots, typed};
use crate::problem::{Location, Problem, Problems, codes};
use crate::schema;
use crate::validate::validator_problems;
use crate::yaml;

/// One object a template rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// The template it came from.
    pub template: String,
    /// The object, with namespace and standard labels set.
    pub object: Object,
}

/// The complete desired state of one Application, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Objects in apply order, then by name.
    pub objects: Vec<RenderedObject>,
    /// Name of the Blueprint used.
    pub blueprint: String,
    /// Content hash of the Blueprint used.
    pub blueprint_hash: String,
}

/// Whether `s` is a DNS-1035 label (what a Service name must be): starts with a letter, at most 63 characters.
pub fn is_dns1035_label(s: &str) -> bool {
    plinth_api::application::is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Validates an Application against its Blueprint (schema rules, guardrails, parameters) without rendering.
pub fn check(app: &Application, bp: &LoadedBlueprint, platform: &Platform) -> Result<serde_json::Value, Problems> {
    let mut problems = Vec::new();
    let name = app.metadata.name.as_deref().unwrap_or_default();
    if !is_dns1035_label(name) {
        problems.push(
            Problem::field(
                codes::SPEC,
                "name",
                vec!["metadata".into(), "name".into()],
                format!("Application name {name:?} must be a DNS label that starts with a letter (it names a Service)"),
            )
            .with_hint("use at most 63 lower-case letters, digits and `-`, starting with a letter"),
        );
    }
    match app.metadata.namespace.as_deref() {
        Some(ns) if plinth_api::application::is_dns_label(ns) => {}
        Some(ns) => problems.push(Problem::field(
            codes::SPEC,
            "namespace",
            vec!["metadata".into(), "namespace".into()],
            format!("namespace {ns:?} is not a valid namespace name"),
        )),
        None => problems.push(
            Problem::field(
                codes::SPEC,
                "namespace",
                vec!["metadata".into()],
                "the Application has no namespace",
            )
            .with_hint("set metadata.namespace, or pass --namespace to plinth render"),
        ),
    }
    if let Err(e) = app.spec.validate() {
        problems.extend(validator_problems(&e, vec!["spec".into()]));
    }
    if app.spec.blueprint != bp.name {
        problems.push(Problem::field(
            codes::BLUEPRINT,
            "blueprint",
            vec!["spec".into(), "blueprint".into()],
            format!(
                "the Application uses Blueprint {:?}, not {:?}",
                app.spec.blueprint, bp.name
            ),
        ));
    }
    if !problems.is_empty() {
        // Guardrails assume a valid spec.
        return Err(Problems(problems));
    }
    problems.extend(guardrails::check(app, bp, platform));
    let mut values = bp.spec.defaults.values.clone().unwrap_or_else(|| serde_json::json!({}));
    if let Some(user) = &app.spec.values {
        merge(&mut values, user);
    }
    if let Some(params) = &bp.spec.parameters {
        for v in schema::validate(params, &values) {
            let mut path = vec!["spec".to_owned(), "values".to_owned()];
            path.extend(v.path);
            let mut p = Problem::field(codes::VALUES, v.rule, path, v.message);
            p.hint = v.hint;
            problems.push(p);
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(Problems(problems))
    }
}

/// Renders an Application with a Blueprint into typed objects, or says every reason it cannot.
pub fn render(app: &Application, bp: &LoadedBlueprint, platform: &Platform) -> Result<Rendered, Problems> {
    let values = check(app, bp, platform)?;
    let ctx = context::build(app, bp, platform, values);
    let hb_ctx = handlebars::Context::wraps(&ctx)
        .map_err(|e| Problems::one(internal(&bp.name, format!("cannot build the template context: {e}"))))?;
    let namespace = ctx.app.namespace.clone();
    let standard = ctx.app.labels.clone();
    let selector = ctx.app.selector_labels.clone();

    let mut problems = Vec::new();
    // Objects are large: room for one per template (and a few more) up front, rather than moving them as it grows.
    let mut objects = Vec::with_capacity(bp.object_templates().len() + 4);
    // One buffer for every template's text: most texts only serve to find their parsed skeleton.
    let mut buf = Vec::with_capacity(8 * 1024);
    for template in bp.object_templates() {
        // Values go to slots; the text left is the skeleton, parsed once per distinct text (see `slots`).
        let recording = slots::Recording::start();
        buf.clear();
        if let Err(e) = bp.registry().render_with_context_to_write(template, &hb_ctx, &mut buf) {
            problems.push(template_error(bp, template, &e));
            continue;
        }
        let recorded = recording.finish();
        let values = slots::resolve(&recorded, hb_ctx.data());
        let Ok(text) = std::str::from_utf8(&buf) else {
            problems.push(internal(
                &bp.name,
                format!("template {template} wrote text that is not UTF-8"),
            ));
            continue;
        };
        let skeleton = match bp.skeletons().get_or_parse(template, text, &OUTPUT_LIMITS) {
            Ok(s) => s,
            Err(e) => {
                problems.push(output_problem(bp, template, &hb_ctx, &e));
                continue;
            }
        };
        for doc in skeleton.docs() {
            // Straight into the typed object; what that refuses is filled as JSON and decoded the careful
            // way, which says what is wrong and where.
            if let Some(object) = typed::object(doc, &values) {
                objects.push(RenderedObject {
                    template: template.to_owned(),
                    object,
                });
                continue;
            }
            match slots::Skeleton::fill_doc(doc, &values)
                .map_err(|e| vec![output_problem(bp, template, &hb_ctx, &e)])
                .and_then(|json| decode(template, json))
            {
                Ok(o) => objects.push(o),
                Err(mut p) => problems.append(&mut p),
            }
        }
    }
    for o in &mut objects {
        problems.extend(finish(o, &namespace, &standard));
    }
    problems.extend(check_scope(&objects, &selector, bp));
    let mut seen = BTreeMap::new();
    for o in &objects {
        if let Some(first) = seen.insert((o.object.kind(), o.object.name().to_owned()), o.template.clone()) {
            problems.push(rendered(
                o,
                "duplicate",
                Vec::new(),
                format!(
                    "{} {:?} is rendered twice (also by {first})",
                    o.object.kind(),
                    o.object.name()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    objects.sort_by(|a, b| (a.object.apply_rank(), a.object.name()).cmp(&(b.object.apply_rank(), b.object.name())));
    Ok(Rendered {
        objects,
        blueprint: bp.name.clone(),
        blueprint_hash: bp.hash.clone(),
    })
}

/// Bounds on one template's output.
const OUTPUT_LIMITS: yaml::Limits = yaml::Limits {
    max_bytes: 4 * 1024 * 1024,
    max_depth: 64,
    max_nodes: 200_000,
};

/// A template's output that is not a set of objects: where, why, and the output line as it reads with values.
fn output_problem(
    bp: &LoadedBlueprint,
    template: &str,
    hb_ctx: &handlebars::Context,
    e: &slots::SkeletonError,
) -> Problem {
    let at = |path: &[String]| Location::Rendered {
        template: template.to_owned(),
        kind: String::new(),
        name: String::new(),
        path: path.to_vec(),
    };
    let (rule, pos, message, hint, path) = match e {
        slots::SkeletonError::Yaml(e) => (
            "yaml",
            e.pos(),
            format!(
                "the template's output is not valid YAML at output line {}: {e}",
                e.pos().line
            ),
            "print values whole ({{value}} or {{concat a \"-suffix\"}}), never inside quotes or next to other text",
            Vec::new(),
        ),
        slots::SkeletonError::Embedded(pos) => (
            "embedded",
            *pos,
            format!("at output line {} a value is printed inside a longer scalar", pos.line),
            "print values whole ({{value}} or {{concat a \"-suffix\"}}), never inside quotes, block scalars or next to other text",
            Vec::new(),
        ),
        slots::SkeletonError::KeyNotString { path, found } => (
            "key",
            yaml::Pos::default(),
            format!("a mapping key printed with {{{{json …}}}} is {found}, not a string"),
            "print keys as strings: {{key}}",
            path.clone(),
        ),
        slots::SkeletonError::DuplicateKey { path, key } => (
            "key",
            yaml::Pos::default(),
            format!("the key {key:?} appears twice in one mapping"),
            "give every key of a mapping one entry",
            path.clone(),
        ),
    };
    // The output as it reads with the values in place (rendered again, without slots), for the message.
    let line = (pos.line > 0)
        .then(|| bp.registry().render_with_context(template, hb_ctx).ok())
        .flatten()
        .and_then(|text| {
            text.lines()
                .nth(pos.line.saturating_sub(1) as usize)
                .map(|l| l.trim().to_owned())
        });
    Problem {
        code: codes::RENDERED,
        rule: rule.into(),
        location: at(&path),
        message: match line {
            Some(line) => format!("{message}; the line is `{line}`"),
            None => message,
        },
        hint: Some(hint.into()),
    }
}

fn internal(bp: &str, message: String) -> Problem {
    Problem {
        code: codes::TEMPLATE,
        rule: "internal".into(),
        location: Location::Blueprint { name: bp.to_owned() },
        message,
        hint: None,
    }
}

pub(super) fn template_error(bp: &LoadedBlueprint, template: &str, e: &handlebars::RenderError) -> Problem {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(1);
    // Positions in a partial written into the template are reported in the partial, as Handlebars would.
    let name = e.template_name.as_deref().unwrap_or(template);
    let col = e.column_no.unwrap_or(1);
    let (file, line, col) = match e.line_no {
        Some(line) => bp.source_position(name, line, col),
        None => (name.to_owned(), 1, col),
    };
    // Named by its file, as every other problem of a Blueprint is: `_pod.hbs`, not the partial's name `pod`.
    let file = bp.file_of(&file);
    let (reason, hint) = match e.reason() {
        handlebars::RenderErrorReason::MissingVariable(path) => (
            format!("`{}` does not exist in the template context", path.as_deref().unwrap_or("?")),
            Some("templates see app, blueprint, image, replicas, autoscale, containerPorts, servicePorts, env, resources, probes, command, args, permissions, serviceAccount, network, config, disruptionBudget, values and platform; guard optional values with {{#if …}}".to_owned()),
        ),
        other => (other.to_string(), None),
    };
    Problem {
        code: codes::TEMPLATE,
        rule: "render".into(),
        location: Location::Template {
            template: file,
            line: clamp(line),
            col: clamp(col),
        },
        message: format!("template failed to render: {reason}"),
        hint,
    }
}

fn rendered(o: &RenderedObject, rule: &str, path: Vec<String>, message: String) -> Problem {
    Problem {
        code: codes::RENDERED,
        rule: rule.into(),
        location: Location::Rendered {
            template: o.template.clone(),
            kind: o.object.kind().into(),
            name: o.object.name().into(),
            path,
        },
        message,
        hint: None,
    }
}

fn decode(template: &str, json: serde_json::Value) -> Result<RenderedObject, Vec<Problem>> {
    let at = |kind: &str, name: &str, path: Vec<String>| Location::Rendered {
        template: template.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        path,
    };
    let str_at = |key: &str| {
        json.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (str_at("apiVersion"), str_at("kind"));
    let name = json
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut ignored = Vec::new();
    match Object::from_json(&api_version, &kind, json, &mut ignored) {
        None => {
            let allowed: Vec<String> = Object::ALLOWED.iter().map(|(a, k)| format!("{a} {k}")).collect();
            Err(vec![Problem {
                code: codes::RENDERED,
                rule: "kind".into(),
                location: at(&kind, &name, Vec::new()),
                message: format!("`{api_version} {kind}` is not a kind Plinth renders"),
                hint: Some(format!(
                    "templates may render only namespaced kinds: {}",
                    allowed.join(", ")
                )),
            }])
        }
        Some(Err((path, message))) => Err(vec![Problem {
            code: codes::RENDERED,
            rule: "type".into(),
            location: at(&kind, &name, path),
            message,
            hint: None,
        }]),
        Some(Ok(object)) if ignored.is_empty() => Ok(RenderedObject {
            template: template.to_owned(),
            object,
        }),
        Some(Ok(_)) => Err(ignored
            .into_iter()
            .map(|path| {
                let field = path.last().cloned().unwrap_or_default();
                Problem {
                    code: codes::RENDERED,
                    rule: "unknown-field".into(),
                    location: at(&kind, &name, path),
                    message: format!("{kind} has no field `{field}`"),
                    hint: Some("check the spelling and nesting against the Kubernetes API reference".into()),
                }
            })
            .collect()),
    }
}

/// Sets namespace and standard labels; refuses other namespaces, bad names and conflicting labels.
fn finish(o: &mut RenderedObject, namespace: &str, standard: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let kind = o.object.kind();
    let name = o.object.name().to_owned();
    let name_ok = if kind == "Service" {
        is_dns1035_label(&name)
    } else {
        is_dns_subdomain(&name) && !name.is_empty()
    };
    if !name_ok {
        problems.push(rendered(
            o,
            "name",
            vec!["metadata".into(), "name".into()],
            format!("{kind} name {name:?} is not a valid name"),
        ));
    }
    let meta = o.object.metadata_mut();
    match meta.namespace.as_deref() {
        None => meta.namespace = Some(namespace.to_owned()),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            let ns = ns.to_owned();
            problems.push(rendered(o, "namespace", vec!["metadata".into(), "namespace".into()], format!("renders into namespace {ns:?}; templates may only write into the Application's namespace {namespace:?}")));
            return problems;
        }
    }
    if meta.generate_name.is_some() {
        meta.generate_name = None;
        problems.push(rendered(
            o,
            "name",
            vec!["metadata".into(), "generateName".into()],
            "generateName is not allowed: every object needs a stable name to be updated and pruned".into(),
        ));
        return problems;
    }
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    let mut conflicts = Vec::new();
    for (k, v) in standard {
        match labels.get(k) {
            Some(existing) if existing != v => conflicts.push((k.clone(), existing.clone(), v.clone())),
            _ => {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, existing, v) in conflicts {
        problems.push(rendered(
            o,
            "labels",
            vec!["metadata".into(), "labels".into(), k.clone()],
            format!("label {k} is {existing:?}, but Plinth sets it to {v:?}; leave it out"),
        ));
    }
    problems
}

fn selects(sel: Option<&BTreeMap<String, String>>, required: &BTreeMap<String, String>) -> bool {
    sel.is_some_and(|s| required.iter().all(|(k, v)| s.get(k) == Some(v)))
}

fn label_selector_selects(sel: Option<&LabelSelector>, required: &BTreeMap<String, String>) -> bool {
    selects(sel.and_then(|s| s.match_labels.as_ref()), required)
}

/// Refuses objects that reach beyond the Application: selectors of other pods, foreign roles, escalated RBAC, unsafe pods.
fn check_scope(objects: &[RenderedObject], selector: &BTreeMap<String, String>, bp: &LoadedBlueprint) -> Vec<Problem> {
    let mut problems = Vec::new();
    let names = |kind: &str| -> BTreeSet<&str> {
        objects
            .iter()
            .filter(|o| o.object.kind() == kind)
            .map(|o| o.object.name())
            .collect()
    };
    let (roles, accounts, deployments) = (names("Role"), names("ServiceAccount"), names("Deployment"));
    let hint = format!(
        "select the app's pods with {}",
        serde_json::to_string(selector).unwrap_or_default()
    );
    for o in objects {
        let mut refuse = |rule: &str, path: &[&str], message: String| {
            let mut p = rendered(o, rule, path.iter().map(|s| (*s).to_owned()).collect(), message);
            if rule == "selector" {
                p.hint = Some(hint.clone());
            }
            problems.push(p);
        };
        match &o.object {
            Object::Deployment(d) => {
                let spec = d.spec.as_ref();
                if !label_selector_selects(spec.map(|s| &s.selector), selector) {
                    refuse(
                        "selector",
                        &["spec", "selector", "matchLabels"],
                        "the Deployment's selector must include the app's selector labels".into(),
                    );
                }
                let template = spec.map(|s| &s.template);
                if !selects(
                    template
                        .and_then(|t| t.metadata.as_ref())
                        .and_then(|m| m.labels.as_ref()),
                    selector,
                ) {
                    refuse(
                        "selector",
                        &["spec", "template", "metadata", "labels"],
                        "the pod template must carry the app's selector labels".into(),
                    );
                }
                if let Some(pod) = template.and_then(|t| t.spec.as_ref()) {
                    for (path, message) in security::restricted_violations(pod) {
                        let mut full = vec!["spec".to_owned(), "template".to_owned(), "spec".to_owned()];
                        full.extend(path);
                        let mut p = rendered(
                            o,
                            "restricted",
                            full,
                            format!("pod breaks the \"restricted\" Pod Security Standard: {message}"),
                        );
                        p.code = codes::POD_SECURITY;
                        problems.push(p);
                    }
                } else {
                    refuse(
                        "pod",
                        &["spec", "template", "spec"],
                        "the Deployment has no pod spec".into(),
                    );
                }
            }
            Object::Service(s) => {
                let spec = s.spec.as_ref();
                if !selects(spec.and_then(|s| s.selector.as_ref()), selector) {
                    refuse(
                        "selector",
                        &["spec", "selector"],
                        "the Service's selector must include the app's selector labels".into(),
                    );
                }
                if spec
                    .and_then(|s| s.external_ips.as_ref())
                    .is_some_and(|ips| !ips.is_empty())
                {
                    refuse(
                        "externalIPs",
                        &["spec", "externalIPs"],
                        "externalIPs can intercept other traffic in the cluster and are not allowed".into(),
                    );
                }
            }
            Object::NetworkPolicy(n) => {
                if !label_selector_selects(n.spec.as_ref().and_then(|s| s.pod_selector.as_ref()), selector) {
                    refuse(
                        "selector",
                        &["spec", "podSelector", "matchLabels"],
                        "a NetworkPolicy may only select the app's own pods".into(),
                    );
                }
            }
            Object::PodDisruptionBudget(p) => {
                if !label_selector_selects(p.spec.as_ref().and_then(|s| s.selector.as_ref()), selector) {
                    refuse(
                        "selector",
                        &["spec", "selector", "matchLabels"],
                        "a PodDisruptionBudget may only select the app's own pods".into(),
                    );
                }
            }
            Object::HorizontalPodAutoscaler(h) => {
                let target = h.spec.as_ref().map(|s| &s.scale_target_ref);
                if !target.is_some_and(|t| t.kind == "Deployment" && deployments.contains(t.name.as_str())) {
                    refuse(
                        "scaleTargetRef",
                        &["spec", "scaleTargetRef"],
                        "a HorizontalPodAutoscaler may only scale a Deployment of this app".into(),
                    );
                }
            }
            Object::RoleBinding(rb) => {
                if rb.role_ref.kind != "Role" || !roles.contains(rb.role_ref.name.as_str()) {
                    refuse(
                        "roleRef",
                        &["roleRef"],
                        format!(
                            "a RoleBinding may only bind a Role this app renders, not {} {:?}",
                            rb.role_ref.kind, rb.role_ref.name
                        ),
                    );
                }
                for (i, s) in rb.subjects.iter().flatten().enumerate() {
                    let own_ns = s
                        .namespace
                        .as_deref()
                        .is_none_or(|ns| Some(ns) == o.object.metadata().namespace.as_deref());
                    if s.kind != "ServiceAccount" || !own_ns || !accounts.contains(s.name.as_str()) {
                        refuse(
                            "subjects",
                            &["subjects", &i.to_string()],
                            format!(
                                "a RoleBinding may only bind this app's ServiceAccounts, not {} {:?}",
                                s.kind, s.name
                            ),
                        );
                    }
                }
            }
            Object::Role(r) => {
                for (i, rule) in r.rules.iter().flatten().enumerate() {
                    if rule.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        refuse(
                            "rules",
                            &["rules", &i.to_string()],
                            "nonResourceURLs are cluster-scoped and cannot be granted by a Role".into(),
                        );
                    }
                    for group in rule.api_groups.iter().flatten() {
                        for resource in rule.resources.iter().flatten() {
                            for verb in &rule.verbs {
                                if !guardrails::permission_allowed(&bp.spec.policy, group, resource, verb) {
                                    refuse(
                                        "rules",
                                        &["rules", &i.to_string()],
                                        format!(
                                            "the Role grants `{verb}` on `{resource}`, which the Blueprint's policy.allowedPermissions does not allow"
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            Object::ServiceAccount(_) | Object::ConfigMap(_) => {}
        }
    }
    problems
}

/// Deep-merges `over` into `base`: objects merge key by key, anything else is replaced.
pub fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}
