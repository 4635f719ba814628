//! Rendered objects checked against their Kubernetes types (`plinth validate --rendered`): the apiserver's
//! field rules that typed decoding alone does not catch (names, labels, ports, quantities, probes, volumes).

use std::collections::BTreeSet;

use plinth_api::application::{is_dns_label, is_dns_subdomain, is_label_key, is_label_value};
use serde_json::Value;

use crate::problem::{Location, Problem, codes};
use crate::render::{Rendered, RenderedObject};

struct Checker<'a> {
    object: &'a RenderedObject,
    out: Vec<Problem>,
}

impl Checker<'_> {
    fn refuse(&mut self, path: &[String], rule: &str, message: String) {
        self.out.push(Problem {
            code: codes::RENDERED,
            rule: rule.into(),
            location: Location::Rendered {
                template: self.object.template.clone(),
                kind: self.object.object.kind().into(),
                name: self.object.object.name().into(),
                path: path.to_vec(),
            },
            message,
            hint: Some("fix the Blueprint template that renders it".into()),
        });
    }
}

fn at(base: &[String], more: &[&str]) -> Vec<String> {
    let mut p = base.to_vec();
    p.extend(more.iter().map(|s| (*s).to_owned()));
    p
}

fn items<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Every Kubernetes field rule the rendered objects break.
pub fn check(rendered: &Rendered) -> Vec<Problem> {
    let mut out = Vec::new();
    for o in &rendered.objects {
        let json = o.object.to_json();
        let mut c = Checker {
            object: o,
            out: Vec::new(),
        };
        metadata(&mut c, &json);
        let spec = json.get("spec").unwrap_or(&Value::Null);
        match o.object.kind() {
            "Deployment" => {
                if let Some(pod) = spec.pointer("/template/spec") {
                    pod_spec(&mut c, pod, &["spec".into(), "template".into(), "spec".into()]);
                }
                if spec
                    .pointer("/selector/matchLabels")
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty())
                {
                    c.refuse(
                        &at(&[], &["spec", "selector"]),
                        "selector",
                        "a Deployment needs a non-empty selector".into(),
                    );
                }
            }
            "Service" => {
                let mut names = BTreeSet::new();
                let ports = items(spec, "ports");
                for (i, p) in ports.iter().enumerate() {
                    let base = at(&[], &["spec", "ports", &i.to_string()]);
                    port_number(&mut c, p.get("port"), &at(&base, &["port"]));
                    match p.get("name").and_then(Value::as_str) {
                        Some(n) if !names.insert(n.to_owned()) => {
                            c.refuse(
                                &at(&base, &["name"]),
                                "unique",
                                format!("port name `{n}` is used twice"),
                            );
                        }
                        None if ports.len() > 1 => {
                            c.refuse(
                                &base,
                                "required",
                                "each port of a Service with several ports needs a name".into(),
                            );
                        }
                        _ => {}
                    }
                    if let Some(t) = p.get("targetPort") {
                        target_port(&mut c, t, &at(&base, &["targetPort"]));
                    }
                }
            }
            "HorizontalPodAutoscaler" => {
                let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
                let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
                if min < 1 {
                    c.refuse(
                        &at(&[], &["spec", "minReplicas"]),
                        "minimum",
                        format!("minReplicas must be at least 1, is {min}"),
                    );
                }
                if max < min {
                    c.refuse(
                        &at(&[], &["spec", "maxReplicas"]),
                        "range",
                        format!("maxReplicas {max} is below minReplicas {min}"),
                    );
                }
            }
            "PodDisruptionBudget" if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() => {
                c.refuse(
                    &at(&[], &["spec"]),
                    "exclusive",
                    "set minAvailable or maxUnavailable, not both".into(),
                );
            }
            "ConfigMap" => {
                let mut total = 0usize;
                for key in ["data", "binaryData"] {
                    for (k, v) in json.get(key).and_then(Value::as_object).into_iter().flatten() {
                        total += k.len() + v.as_str().map_or(0, str::len);
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
                        if !ok {
                            c.refuse(
                                &at(&[], &[key, k]),
                                "key",
                                format!("`{k}` is not a valid ConfigMap key"),
                            );
                        }
                    }
                }
                if total > 1024 * 1024 {
                    c.refuse(
                        &[],
                        "size",
                        format!("the ConfigMap holds {total} bytes, more than 1 MiB"),
                    );
                }
            }
            "NetworkPolicy" => {
                for dir in ["ingress", "egress"] {
                    for (i, rule) in items(spec, dir).iter().enumerate() {
                        for (j, p) in items(rule, "ports").iter().enumerate() {
                            let base = at(&[], &["spec", dir, &i.to_string(), "ports", &j.to_string()]);
                            if let Some(port) = p.get("port") {
                                target_port(&mut c, port, &at(&base, &["port"]));
                            }
                        }
                        let peers = if dir == "ingress" { "from" } else { "to" };
                        for (j, peer) in items(rule, peers).iter().enumerate() {
                            if let Some(cidr) = peer.pointer("/ipBlock/cidr").and_then(Value::as_str)
                                && let Err(m) = plinth_api::application::parse_cidr(cidr)
                            {
                                let path = at(
                                    &[],
                                    &["spec", dir, &i.to_string(), peers, &j.to_string(), "ipBlock", "cidr"],
                                );
                                c.refuse(&path, "cidr", m);
                            }
                        }
                    }
                }
            }
            "Role" => {
                for (i, r) in items(&json, "rules").iter().enumerate() {
                    if items(r, "verbs").is_empty() {
                        c.refuse(
                            &at(&[], &["rules", &i.to_string(), "verbs"]),
                            "required",
                            "a rule needs at least one verb".into(),
                        );
                    }
                }
            }
            _ => {}
        }
        out.append(&mut c.out);
    }
    out
}

fn metadata(c: &mut Checker<'_>, json: &Value) {
    for key in ["labels", "annotations"] {
        for (k, v) in json
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let path = at(&[], &["metadata", key, k]);
            if !is_label_key(k) {
                c.refuse(
                    &path,
                    "label",
                    format!("`{k}` is not a valid {} key", &key[..key.len() - 1]),
                );
            }
            if key == "labels" && !v.as_str().is_some_and(is_label_value) {
                c.refuse(&path, "label", format!("{v} is not a valid label value"));
            }
        }
    }
}

fn port_number(c: &mut Checker<'_>, v: Option<&Value>, path: &[String]) {
    match v.and_then(Value::as_i64) {
        Some(1..=65535) => {}
        Some(n) => c.refuse(path, "range", format!("port {n} is not between 1 and 65535")),
        None => c.refuse(path, "required", "a port number is required".into()),
    }
}

fn target_port(c: &mut Checker<'_>, v: &Value, path: &[String]) {
    match v {
        Value::String(s) if is_port_name(s) => {}
        Value::String(s) => c.refuse(path, "port_name", format!("`{s}` is not a valid port name")),
        other => port_number(c, Some(other), path),
    }
}

fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn pod_spec(c: &mut Checker<'_>, pod: &Value, base: &[String]) {
    let mut volumes = BTreeSet::new();
    for (i, v) in items(pod, "volumes").iter().enumerate() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if !is_dns_label(name) {
            c.refuse(
                &at(base, &["volumes", &i.to_string(), "name"]),
                "dns_label",
                format!("volume name `{name}` is not a DNS label"),
            );
        }
        if !volumes.insert(name.to_owned()) {
            c.refuse(
                &at(base, &["volumes", &i.to_string(), "name"]),
                "unique",
                format!("volume `{name}` is defined twice"),
            );
        }
    }
    let containers = items(pod, "containers");
    if containers.is_empty() {
        c.refuse(
            &at(base, &["containers"]),
            "required",
            "a pod needs at least one container".into(),
        );
    }
    let mut names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, ct) in items(pod, list).iter().enumerate() {
            let cb = at(base, &[list, &i.to_string()]);
            let name = ct.get("name").and_then(Value::as_str).unwrap_or_default();
            if !is_dns_label(name) {
                c.refuse(
                    &at(&cb, &["name"]),
                    "dns_label",
                    format!("container name `{name}` is not a DNS label"),
                );
            } else if !names.insert(name.to_owned()) {
                c.refuse(
                    &at(&cb, &["name"]),
                    "unique",
                    format!("container name `{name}` is used twice"),
                );
            }
            if ct
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
            {
                c.refuse(&at(&cb, &["image"]), "required", "a container needs an image".into());
            }
            let mut port_names = BTreeSet::new();
            for (j, p) in items(ct, "ports").iter().enumerate() {
                let pb = at(&cb, &["ports", &j.to_string()]);
                port_number(c, p.get("containerPort"), &at(&pb, &["containerPort"]));
                if let Some(n) = p.get("name").and_then(Value::as_str) {
                    if !is_port_name(n) {
                        c.refuse(
                            &at(&pb, &["name"]),
                            "port_name",
                            format!("`{n}` is not a valid port name"),
                        );
                    } else if !port_names.insert(n.to_owned()) {
                        c.refuse(&at(&pb, &["name"]), "unique", format!("port name `{n}` is used twice"));
                    }
                }
            }
            for (j, e) in items(ct, "env").iter().enumerate() {
                let n = e.get("name").and_then(Value::as_str).unwrap_or_default();
                let ok = !n.is_empty()
                    && n.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
                    && !n.starts_with(|ch: char| ch.is_ascii_digit());
                if !ok {
                    c.refuse(
                        &at(&cb, &["env", &j.to_string(), "name"]),
                        "env_name",
                        format!("`{n}` is not a valid environment variable name"),
                    );
                }
            }
            for section in ["requests", "limits"] {
                for (k, v) in ct
                    .pointer(&format!("/resources/{section}"))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let q = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                    if plinth_api::quantity::parse(&q).is_err() {
                        c.refuse(
                            &at(&cb, &["resources", section, k]),
                            "quantity",
                            format!("`{q}` is not a Kubernetes quantity"),
                        );
                    }
                }
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if let Some(p) = ct.get(probe) {
                    let handlers = ["httpGet", "tcpSocket", "exec", "grpc"]
                        .iter()
                        .filter(|h| p.get(**h).is_some())
                        .count();
                    if handlers != 1 {
                        c.refuse(
                            &at(&cb, &[probe]),
                            "probe",
                            format!("a probe needs exactly one handler, has {handlers}"),
                        );
                    }
                }
            }
            for (j, m) in items(ct, "volumeMounts").iter().enumerate() {
                let n = m.get("name").and_then(Value::as_str).unwrap_or_default();
                if !volumes.contains(n) {
                    c.refuse(
                        &at(&cb, &["volumeMounts", &j.to_string(), "name"]),
                        "volume",
                        format!("mounts volume `{n}`, which the pod does not define"),
                    );
                }
            }
        }
    }
    if let Some(sa) = pod.get("serviceAccountName").and_then(Value::as_str)
        && !is_dns_subdomain(sa)
    {
        c.refuse(
            &at(base, &["serviceAccountName"]),
            "dns_subdomain",
            format!("`{sa}` is not a valid ServiceAccount name"),
        );
    }
}
