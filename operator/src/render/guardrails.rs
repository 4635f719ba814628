//! Blueprint guardrails: what an Application may ask for. Each refusal names the rule and the field.

use plinth_api::Application;
use plinth_api::application::{cidr_contains, parse_cidr};
use plinth_api::blueprint::Guardrails;

use super::blueprint::LoadedBlueprint;
use super::context::{Platform, resources};
use crate::problem::{Problem, codes};

fn path(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| (*s).to_owned()).collect()
}

fn refuse(rule: &str, segs: Vec<String>, message: String, hint: String) -> Problem {
    Problem::field(codes::GUARDRAIL, rule, segs, message).with_hint(hint)
}

/// Every guardrail the Application breaks.
pub fn check(app: &Application, bp: &LoadedBlueprint, platform: &Platform) -> Vec<Problem> {
    let policy: &Guardrails = &bp.spec.policy;
    let spec = &app.spec;
    let mut out = Vec::new();
    let bp_name = &bp.name;

    if let Some(max) = policy.max_replicas {
        let asked = spec.replicas.map(|r| (r, path(&["spec", "replicas"]))).or_else(|| {
            spec.autoscale
                .as_ref()
                .map(|a| (a.max, path(&["spec", "autoscale", "max"])))
        });
        if let Some((n, at)) = asked.filter(|(n, _)| *n > max) {
            out.push(refuse(
                "maxReplicas",
                at,
                format!("{n} pods asked for; Blueprint {bp_name:?} allows at most {max}"),
                format!("ask for at most {max}, or ask the platform team to raise policy.maxReplicas"),
            ));
        }
    }

    if policy.require_limits {
        let limits = resources(app, bp, platform).limits.unwrap_or_default();
        for k in ["cpu", "memory"] {
            if !limits.contains_key(k) {
                out.push(refuse(
                    "requireLimits",
                    path(&["spec", "resources", "limits"]),
                    format!("Blueprint {bp_name:?} requires a {k} limit"),
                    format!("set spec.resources.limits.{k}"),
                ));
            }
        }
    }

    if !policy.allowed_registries.is_empty()
        && !policy
            .allowed_registries
            .iter()
            .any(|p| spec.image.starts_with(p.as_str()))
    {
        out.push(refuse(
            "allowedRegistries",
            path(&["spec", "image"]),
            format!(
                "image {:?} is not from a registry Blueprint {bp_name:?} allows",
                spec.image
            ),
            format!("use an image under one of: {}", policy.allowed_registries.join(", ")),
        ));
    }

    for (i, perm) in spec.permissions.iter().enumerate() {
        for group in &perm.api_groups {
            for resource in &perm.resources {
                for (v, verb) in perm.verbs.iter().enumerate() {
                    if !permission_allowed(policy, group, resource, verb) {
                        let group_name = if group.is_empty() { "core" } else { group.as_str() };
                        out.push(refuse(
                            "allowedPermissions",
                            vec!["spec".into(), "permissions".into(), i.to_string(), "verbs".into(), v.to_string()],
                            format!("`{verb}` on `{resource}` ({group_name} API group) is not allowed by Blueprint {bp_name:?}"),
                            "remove it, or ask the platform team to add it to policy.allowedPermissions".into(),
                        ));
                    }
                }
            }
        }
    }

    let own_ns = app.metadata.namespace.as_deref().unwrap_or_default();
    for (field, peers) in [("allowFrom", &spec.allow_from), ("allowTo", &spec.allow_to)] {
        for (i, peer) in peers.iter().enumerate() {
            let at = |leaf: &str| vec!["spec".into(), field.to_owned(), i.to_string(), leaf.to_owned()];
            let crosses = peer.namespace_selector.is_some() || peer.namespace.as_deref().is_some_and(|n| n != own_ns);
            if crosses && !policy.allow_cross_namespace {
                let leaf = if peer.namespace_selector.is_some() {
                    "namespaceSelector"
                } else {
                    "namespace"
                };
                out.push(refuse(
                    "allowCrossNamespace",
                    at(leaf),
                    format!("Blueprint {bp_name:?} does not allow traffic across namespaces"),
                    format!("remove {leaf}, or use a Blueprint that allows it"),
                ));
            }
            if field == "allowTo"
                && let Some(Ok(cidr)) = peer.cidr.as_deref().map(parse_cidr)
            {
                let inside = policy
                    .allowed_egress_cidrs
                    .iter()
                    .filter_map(|c| parse_cidr(c).ok())
                    .any(|outer| cidr_contains(outer, cidr));
                if !inside {
                    let allowed = if policy.allowed_egress_cidrs.is_empty() {
                        "none".to_owned()
                    } else {
                        policy.allowed_egress_cidrs.join(", ")
                    };
                    out.push(refuse(
                            "allowedEgressCidrs",
                            at("cidr"),
                            format!("egress to {} is outside what Blueprint {bp_name:?} allows ({allowed})", peer.cidr.as_deref().unwrap_or_default()),
                            "use a range inside the allowed ones, or ask the platform team to extend policy.allowedEgressCidrs".into(),
                        ));
                }
            }
        }
    }
    out
}

/// Whether the Blueprint's policy allows `verb` on `resource` in API group `group`.
pub fn permission_allowed(policy: &Guardrails, group: &str, resource: &str, verb: &str) -> bool {
    let covers = |allowed: &[String], asked: &str| allowed.iter().any(|a| a == "*" || a == asked);
    policy
        .allowed_permissions
        .iter()
        .any(|a| covers(&a.api_groups, group) && covers(&a.resources, resource) && covers(&a.verbs, verb))
}
