//! Status: computed from what happened in one reconcile (pure), written only when it changed.
//!
//! Conditions follow the Kubernetes API conventions: Ready, Rendered, Applied, Progressing and
//! Degraded, each with a CamelCase reason, a message, `lastTransitionTime` (kept while the status
//! does not change) and `observedGeneration`. Conditions of other types are kept as they are.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use plinth_api::ApplicationStatus;
use plinth_api::application::{BlueprintRef, ResourceStatus};
use plinth_api::conditions::{APPLIED, DEGRADED, PROGRESSING, READY, RENDERED};
use serde_json::Value;

use super::desired::Desired;
use super::index::ChildMeta;
use super::kinds::Kind;
use crate::problem::{Problem, codes};

/// Longest condition message written.
const MAX_MESSAGE: usize = 2048;

/// What one reconcile found; the status follows from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The desired state is applied.
    Applied {
        /// Blueprint used.
        blueprint: BlueprintRef,
        /// Each desired object and whether it is ready.
        resources: Vec<ResourceStatus>,
        /// Available and desired pods of the Deployment, e.g. `2/3`.
        replicas: Option<String>,
        /// `Desired::hash`.
        applied_hash: String,
        /// `AppliedState::fields_hash`.
        owned_fields_hash: String,
        /// A rollout failed (e.g. `ProgressDeadlineExceeded`): Degraded, though applied.
        rollout_failure: Option<String>,
    },
    /// Validation or rendering failed: nothing was written, the last applied objects stay.
    NotRendered {
        /// CamelCase reason.
        reason: &'static str,
        /// What is wrong and where.
        message: String,
    },
    /// Rendered, but not (completely) applied: a name collision or an API error.
    NotApplied {
        /// Blueprint used.
        blueprint: BlueprintRef,
        /// CamelCase reason.
        reason: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The Condition reason for a problem code.
pub fn reason_for(code: &str) -> &'static str {
    match code {
        codes::SYNTAX | codes::SPEC => "InvalidSpec",
        codes::GUARDRAIL => "GuardrailRefused",
        codes::VALUES => "InvalidValues",
        codes::BLUEPRINT => "BlueprintInvalid",
        codes::TEMPLATE => "TemplateError",
        codes::RENDERED => "RenderedObjectRefused",
        codes::POD_SECURITY => "PodSecurityRefused",
        _ => "RenderFailed",
    }
}

/// One line per problem: where (template name:line:col, field path), what, the rule, the fix.
pub fn describe(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let mut s = format!("{}: {}", p.location, p.message);
            if p.code == codes::GUARDRAIL || p.code == codes::POD_SECURITY {
                s.push_str(&format!(" (rule {})", p.rule));
            }
            if let Some(h) = &p.hint {
                s.push_str(&format!("; {h}"));
            }
            s
        })
        .collect();
    clip(lines.join("\n"))
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The per-resource list: each desired object, ready or not, with a short message.
pub fn resources(
    desired: &Desired,
    live: impl Fn(&super::desired::ChildKey) -> Option<ChildMeta>,
) -> Vec<ResourceStatus> {
    desired
        .objects
        .iter()
        .map(|o| {
            let (ready, message) = match (o.key.kind, live(&o.key)) {
                (Kind::Deployment, Some(ChildMeta { rollout: Some(r), .. })) => {
                    let settled = r.observed_generation >= r.generation
                        && r.updated >= r.desired
                        && r.available >= r.desired
                        && r.current <= r.updated;
                    let mut m = format!("{}/{} replicas available", r.available, r.desired);
                    if let Some(f) = &r.failure {
                        m.push_str(&format!("; rollout failed: {f}"));
                    } else if !settled {
                        m.push_str(&format!("; rollout in progress ({} updated)", r.updated));
                    }
                    (settled, m)
                }
                (Kind::Deployment, _) => (false, "waiting for the Deployment's status".to_owned()),
                (_, _) => (true, String::new()),
            };
            ResourceStatus {
                api_version: o.api_version.clone(),
                kind: o.key.kind.name().to_owned(),
                name: o.key.name.clone(),
                ready,
                message,
            }
        })
        .collect()
}

/// `available/desired` of the first Deployment.
pub fn replicas(desired: &Desired, live: impl Fn(&super::desired::ChildKey) -> Option<ChildMeta>) -> Option<String> {
    desired
        .objects
        .iter()
        .find(|o| o.key.kind == Kind::Deployment)
        .and_then(|o| live(&o.key))
        .and_then(|m| m.rollout)
        .map(|r| format!("{}/{}", r.available, r.desired))
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: clip(message.into()),
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    }
}

/// Computes the new status from the previous one and this reconcile's outcome.
pub fn compute(previous: &ApplicationStatus, generation: i64, outcome: &Outcome, now: &Time) -> ApplicationStatus {
    let old = |t: &str| previous.conditions.iter().find(|c| c.type_ == t).cloned();
    let c = |t: &str, ok: bool, reason: &str, message: String| condition(t, ok, reason, message, generation, now);
    let mut next = previous.clone();
    next.observed_generation = Some(generation);
    let mut conds: Vec<Condition> = Vec::new();
    match outcome {
        Outcome::Applied {
            blueprint,
            resources,
            replicas,
            applied_hash,
            owned_fields_hash,
            rollout_failure,
        } => {
            let waiting: Vec<&ResourceStatus> = resources.iter().filter(|r| !r.ready).collect();
            let ready = waiting.is_empty();
            let bp = format!(
                "Blueprint {} revision {}",
                blueprint.name,
                blueprint.revision.unwrap_or_default()
            );
            conds.push(match (ready, rollout_failure) {
                (true, _) => c(
                    READY,
                    true,
                    "Ready",
                    format!("all {} objects are ready", resources.len()),
                ),
                (false, Some(f)) => c(READY, false, "RolloutFailed", format!("the rollout failed: {f}")),
                (false, None) => c(READY, false, "RolloutInProgress", not_ready(&waiting)),
            });
            conds.push(c(
                RENDERED,
                true,
                "Rendered",
                format!("rendered {} objects with {bp}", resources.len()),
            ));
            conds.push(c(
                APPLIED,
                true,
                "Applied",
                format!("{} objects applied", resources.len()),
            ));
            conds.push(match (ready, rollout_failure) {
                (true, _) => c(
                    PROGRESSING,
                    false,
                    "RolloutComplete",
                    "the workload runs the current spec".into(),
                ),
                (false, Some(f)) => c(PROGRESSING, false, "RolloutFailed", format!("the rollout stopped: {f}")),
                (false, None) => c(PROGRESSING, true, "RollingOut", not_ready(&waiting)),
            });
            conds.push(match rollout_failure {
                Some(f) => c(DEGRADED, true, "RolloutFailed", format!("the rollout failed: {f}")),
                None => c(DEGRADED, false, "AsExpected", "no problems".into()),
            });
            next.blueprint = Some(blueprint.clone());
            next.resources = resources.clone();
            next.replicas = replicas.clone();
            next.applied_hash = Some(applied_hash.clone());
            next.owned_fields_hash = Some(owned_fields_hash.clone());
        }
        Outcome::NotRendered { reason, message } => {
            conds.push(c(
                READY,
                false,
                reason,
                format!("the current spec is not applied: {message}"),
            ));
            conds.push(c(RENDERED, false, reason, message.clone()));
            conds.push(old(APPLIED).unwrap_or_else(|| {
                c(
                    APPLIED,
                    false,
                    "NothingApplied",
                    "nothing was applied: the Application never rendered".into(),
                )
            }));
            conds.push(old(PROGRESSING).unwrap_or_else(|| {
                c(
                    PROGRESSING,
                    false,
                    "Blocked",
                    "nothing to roll out until the Application renders".into(),
                )
            }));
            conds.push(c(
                DEGRADED,
                true,
                reason,
                format!("{message}\nthe objects applied before stay as they are"),
            ));
        }
        Outcome::NotApplied {
            blueprint,
            reason,
            message,
        } => {
            conds.push(c(
                READY,
                false,
                reason,
                format!("the current spec is not applied: {message}"),
            ));
            conds.push(c(
                RENDERED,
                true,
                "Rendered",
                format!("rendered with Blueprint {}", blueprint.name),
            ));
            conds.push(c(APPLIED, false, reason, message.clone()));
            conds.push(old(PROGRESSING).unwrap_or_else(|| {
                c(
                    PROGRESSING,
                    false,
                    "Blocked",
                    "nothing to roll out until the objects apply".into(),
                )
            }));
            conds.push(c(DEGRADED, true, reason, message.clone()));
        }
    }
    // Keep lastTransitionTime while the status does not change; keep other controllers' conditions.
    for cond in &mut conds {
        if let Some(prev) = old(&cond.type_)
            && prev.status == cond.status
        {
            cond.last_transition_time = prev.last_transition_time;
        }
    }
    let ours: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
    let others: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| !ours.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    conds.extend(others);
    next.conditions = conds;
    next
}

fn not_ready(waiting: &[&ResourceStatus]) -> String {
    let parts: Vec<String> = waiting
        .iter()
        .map(|r| {
            if r.message.is_empty() {
                format!("{} {}", r.kind, r.name)
            } else {
                format!("{} {}: {}", r.kind, r.name, r.message)
            }
        })
        .collect();
    format!("waiting for {}", parts.join(", "))
}

/// Condition types whose status or reason changed: what Events are published for.
pub fn transitions<'a>(previous: &ApplicationStatus, next: &'a ApplicationStatus) -> Vec<&'a Condition> {
    next.conditions
        .iter()
        .filter(|c| {
            !previous
                .conditions
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .collect()
}

/// Writes `next` to the status subresource unless it equals `previous`. Returns whether it wrote.
///
/// A JSON merge patch with every field of the status, absent ones as `null`, so fields that
/// no longer apply are removed.
///
/// # Errors
/// When the API call fails.
pub async fn patch_if_changed<K>(
    api: &Api<K>,
    name: &str,
    previous: &ApplicationStatus,
    next: &ApplicationStatus,
) -> Result<bool, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if previous == next {
        return Ok(false);
    }
    let mut status = serde_json::to_value(next).unwrap_or(Value::Null);
    if let Some(map) = status.as_object_mut() {
        for k in [
            "observedGeneration",
            "conditions",
            "blueprint",
            "replicas",
            "resources",
            "appliedHash",
            "ownedFieldsHash",
        ] {
            map.entry(k).or_insert(Value::Null);
        }
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(true)
}

/// Why a stored Application does not deserialize, with the field path (`spec.replicas: invalid type: ...`);
/// `None` when it does. `data` is the object without apiVersion, kind and metadata (a `DynamicObject`'s data).
pub fn invalid_object(data: &Value) -> Option<String> {
    invalid_fields::<plinth_api::ApplicationSpec, ApplicationStatus>(data)
}

/// The first field of a stored object's `spec` (or `status`) that does not deserialize into `Spec` (`Status`),
/// as `spec.path: what is wrong`.
pub fn invalid_fields<Spec: serde::de::DeserializeOwned, Status: serde::de::DeserializeOwned>(
    data: &Value,
) -> Option<String> {
    for (field, value) in [("spec", &data["spec"]), ("status", &data["status"])] {
        let failed = if field == "spec" {
            serde_path_to_error::deserialize::<_, Spec>(value).err()
        } else if value.is_null() {
            None
        } else {
            serde_path_to_error::deserialize::<_, Status>(value).err()
        };
        if let Some(e) = failed {
            let path = e.path().to_string();
            let at = if path == "." {
                field.to_owned()
            } else {
                format!("{field}.{path}")
            };
            return Some(format!("{at}: {}", e.inner()));
        }
    }
    None
}

/// The status of a stored Application read on its own (empty when it does not deserialize either), so that the
/// conditions of an Application whose spec is unreadable can still be computed and written.
pub fn raw_status(data: &Value) -> ApplicationStatus {
    serde_json::from_value(data["status"].clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Location;
    use crate::reconcile::desired::tests_support::desired_for;
    use crate::reconcile::index::Rollout;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("a timestamp"))
    }

    #[test]
    fn an_unreadable_application_names_the_field_and_keeps_its_status() {
        let data = serde_json::json!({
            "spec": {"image": "a:1", "replicas": "three"},
            "status": {"observedGeneration": 3, "conditions": []},
        });
        let why = invalid_object(&data).expect("unreadable");
        assert!(
            why.starts_with("spec.replicas: invalid type: string \"three\""),
            "{why}"
        );
        assert_eq!(raw_status(&data).observed_generation, Some(3));
        let fine = serde_json::json!({"spec": {"image": "a:1", "replicas": 2}});
        assert_eq!(invalid_object(&fine), None);
        assert_eq!(raw_status(&fine), ApplicationStatus::default());
        let bad_status = serde_json::json!({"spec": {"image": "a:1"}, "status": {"conditions": 5}});
        assert!(invalid_object(&bad_status).is_some_and(|w| w.starts_with("status.conditions")));
        assert_eq!(raw_status(&bad_status), ApplicationStatus::default());
    }

    fn applied(ready: bool) -> Outcome {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080,"replicas":3}"#);
        let live = |k: &super::super::desired::ChildKey| {
            (k.kind == Kind::Deployment).then(|| ChildMeta {
                uid: "d".into(),
                controller_uid: Some("u-1".into()),
                owner_uids: vec!["u-1".into()],
                app_label: Some("shop".into()),
                managed: true,
                fields: String::new(),
                rollout: Some(Box::new(Rollout {
                    generation: 2,
                    observed_generation: 2,
                    desired: 3,
                    current: 3,
                    updated: 3,
                    available: if ready { 3 } else { 2 },
                    failure: None,
                })),
            })
        };
        Outcome::Applied {
            blueprint: BlueprintRef {
                name: "web".into(),
                revision: Some(1),
                hash: Some("sha256:b".into()),
            },
            resources: resources(&d, live),
            replicas: replicas(&d, live),
            applied_hash: d.hash.clone(),
            owned_fields_hash: "sha256:f".into(),
            rollout_failure: None,
        }
    }

    fn get<'a>(s: &'a ApplicationStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).expect("the condition")
    }

    #[test]
    fn a_rolling_deployment_is_progressing_then_ready() {
        let now = t("2026-01-01T00:00:00Z");
        let s1 = compute(&ApplicationStatus::default(), 1, &applied(false), &now);
        assert_eq!(get(&s1, READY).status, "False");
        assert_eq!(get(&s1, READY).reason, "RolloutInProgress");
        assert_eq!(get(&s1, PROGRESSING).status, "True");
        assert_eq!(s1.replicas.as_deref(), Some("2/3"));
        let deploy = s1.resources.iter().find(|r| r.kind == "Deployment").expect("listed");
        assert!(!deploy.ready);
        assert!(
            deploy.message.starts_with("2/3 replicas available"),
            "{}",
            deploy.message
        );
        assert!(s1.resources.iter().all(|r| r.kind == "Deployment" || r.ready));
        let later = t("2026-01-01T00:01:00Z");
        let s2 = compute(&s1, 1, &applied(true), &later);
        assert_eq!(get(&s2, READY).status, "True");
        assert_eq!(get(&s2, READY).last_transition_time, later);
        assert_eq!(
            get(&s2, RENDERED).last_transition_time,
            now,
            "unchanged status keeps its time"
        );
        let names: Vec<&str> = transitions(&s1, &s2).iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(names, [READY, PROGRESSING]);
        let s3 = compute(&s2, 1, &applied(true), &t("2026-01-01T00:02:00Z"));
        assert_eq!(s3, s2, "a resync computes the same status: nothing to write");
        assert!(transitions(&s2, &s3).is_empty());
    }

    #[test]
    fn a_render_failure_keeps_what_was_applied_and_says_where() {
        let now = t("2026-01-01T00:00:00Z");
        let good = compute(&ApplicationStatus::default(), 1, &applied(true), &now);
        let problems = vec![Problem {
            code: codes::TEMPLATE,
            rule: "render".into(),
            location: Location::Template {
                template: "deployment.yaml.hbs".into(),
                line: 12,
                col: 7,
            },
            message: "template failed to render: Variable \"nope\" not found in strict mode".into(),
            hint: None,
        }];
        let bad = compute(
            &good,
            2,
            &Outcome::NotRendered {
                reason: reason_for(codes::TEMPLATE),
                message: describe(&problems),
            },
            &t("2026-01-01T00:05:00Z"),
        );
        let degraded = get(&bad, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "TemplateError")
        );
        assert!(
            degraded.message.contains("template deployment.yaml.hbs:12:7"),
            "{}",
            degraded.message
        );
        assert_eq!(
            get(&bad, APPLIED),
            get(&good, APPLIED),
            "Applied still describes the live objects"
        );
        assert_eq!(bad.applied_hash, good.applied_hash);
        assert_eq!(bad.resources, good.resources);
        assert_eq!(bad.observed_generation, Some(2));
        assert_eq!(get(&bad, RENDERED).observed_generation, Some(2));
    }

    #[test]
    fn guardrail_messages_name_the_rule_and_other_conditions_are_kept() {
        let p = Problem::field(
            codes::GUARDRAIL,
            "maxReplicas",
            vec!["spec".into(), "replicas".into()],
            "asks for 50 pods; the Blueprint allows 10",
        );
        let message = describe(&[p]);
        assert!(
            message.contains("spec.replicas") && message.contains("rule maxReplicas"),
            "{message}"
        );
        let mut previous = ApplicationStatus::default();
        previous.conditions.push(Condition {
            type_: "example.com/Audited".into(),
            status: "True".into(),
            reason: "Audited".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t("2025-01-01T00:00:00Z"),
        });
        let s = compute(
            &previous,
            1,
            &Outcome::NotRendered {
                reason: reason_for(codes::GUARDRAIL),
                message,
            },
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(get(&s, DEGRADED).reason, "GuardrailRefused");
        assert!(s.conditions.iter().any(|c| c.type_ == "example.com/Audited"));
        let types: Vec<&str> = s.conditions.iter().take(5).map(|c| c.type_.as_str()).collect();
        assert_eq!(types, plinth_api::conditions::ALL);
    }
}
