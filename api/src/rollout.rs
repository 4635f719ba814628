//! How a Blueprint change reaches its Applications: the rollout strategy a platform team sets and the progress the operator reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

/// Annotation on a Blueprint that pauses its rollout while set to `"true"` (`plinth rollout pause`).
pub const PAUSE_ANNOTATION: &str = "plinth.dev/rollout-pause";
/// Annotation on a Blueprint whose every new value resumes a paused step, or retries a failed one (`plinth rollout resume`).
pub const RESUME_ANNOTATION: &str = "plinth.dev/rollout-resume";
/// Annotation on a Blueprint naming a revision whose rollout stops and moves back (`plinth rollout abort`).
pub const ABORT_ANNOTATION: &str = "plinth.dev/rollout-abort";

/// Label on an Application or its Namespace that puts it first in every rollout, unless `earlyAdopterLabel` names another.
pub const EARLY_ADOPTER_LABEL: &str = "plinth.dev/early-adopter";

/// How a change of this Blueprint's templates, defaults or policy reaches the Applications that use it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `Immediate`: every Application moves at once. `Canary`: Applications move in `steps`, each gated on their health.
    #[serde(default)]
    pub strategy: Strategy,
    /// Canary steps, in order; after the last, every remaining Application moves (a final gated step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 64), nested)]
    pub steps: Vec<Step>,
    /// Applications with this label set to `"true"` (on themselves or their Namespace) move first; `plinth.dev/early-adopter` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 317))]
    pub early_adopter_label: Option<String>,
    /// Seconds the Applications of a step have to become healthy (Deployments available, no Degraded condition) before the step fails; 600 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: Option<i64>,
    /// A Prometheus query checked after each step, like Argo Rollouts' analysis; needs the operator's Prometheus address (off otherwise, and the status says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub analysis: Option<Analysis>,
}

/// Rollout strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Strategy {
    /// Every Application moves at once.
    #[default]
    Immediate,
    /// Applications move in steps, each gated on health; a failed gate moves them back.
    Canary,
}

/// One canary step: exactly one of `percent`, `applications` or `pause`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[validate(schema(function = "check_step"))]
pub struct Step {
    /// Move Applications until at least this percentage of those that are not pinned run the new revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 100))]
    pub percent: Option<i32>,
    /// Move this many more Applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 100000))]
    pub applications: Option<i32>,
    /// Wait: for `durationSeconds`, or until `plinth rollout resume` when that is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub pause: Option<Pause>,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// Seconds to wait; wait until resumed when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 0, max = 2592000))]
    pub duration_seconds: Option<i64>,
}

/// A Prometheus query whose result must stay within bounds for a step to pass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// PromQL returning one number; `{{blueprint}}` and `{{revision}}` are replaced, e.g. `sum(rate(http_errors_total{plinth_revision="{{revision}}"}[1m]))`.
    #[validate(length(min = 1, max = 4096))]
    pub query: String,
    /// The step fails when the result is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The step fails when the result is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

fn check_step(s: &Step) -> Result<(), ValidationError> {
    let set = usize::from(s.percent.is_some()) + usize::from(s.applications.is_some()) + usize::from(s.pause.is_some());
    if set == 1 {
        Ok(())
    } else {
        Err(ValidationError::new("step")
            .with_message("a step sets exactly one of percent, applications or pause".into()))
    }
}

/// Where a rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Moving Applications, or waiting for the moved ones to become healthy.
    #[default]
    Progressing,
    /// Waiting at a pause step, or paused by `plinth rollout pause`.
    Paused,
    /// A gate failed: the moved Applications went back to the stable revision; `failures` says why.
    Failed,
    /// Stopped by `plinth rollout abort`: the moved Applications went back to the stable revision.
    Aborted,
    /// Every Application that is not pinned runs the revision.
    Completed,
}

/// Progress of the newest revision towards the Applications, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Where the rollout stands.
    pub phase: Phase,
    /// The revision being rolled out.
    pub revision: i64,
    /// Its content hash.
    pub hash: String,
    /// The revision every Application not yet moved runs.
    pub stable_revision: i64,
    /// Its content hash.
    pub stable_hash: String,
    /// Index of the current step in `spec.rollout.steps`; equal to their number at the final step.
    pub step: i32,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the next step may start (the end of a timed pause or of the health deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_at: Option<Time>,
    /// Applications (`namespace/name`) moved to `revision`, in rollout order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    /// Applications using the Blueprint, pinned ones included.
    pub total: i32,
    /// Applications running `revision` (moved and healthy, or pinned to it).
    pub updated: i32,
    /// Applications that failed the last gate.
    pub failed: i32,
    /// Applications pinned to a revision (`spec.blueprintRevision`), never moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
    /// Why the last gate failed, per Application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// The Prometheus gate: its last result, or why it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<String>,
    /// The last `plinth rollout resume` acted on (the value of the `plinth.dev/rollout-resume` annotation); a different value is a new resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<String>,
    /// What happens next, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An Application that failed a gate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `namespace/name`, or `analysis` for the Prometheus gate.
    pub application: String,
    /// Why.
    pub reason: String,
}
