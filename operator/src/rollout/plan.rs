//! The rollout state machine. From the Blueprint's strategy, the previous rollout status, the observed
//! Applications and the commands, it computes the next status (which Applications run the new revision) and
//! when to look again. Pure: the clock and every observation are passed in, so the whole state lives in the API
//! (the Blueprint's status) and a restarted operator continues where the last one stopped.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use plinth_api::rollout::{Failure, Phase, Rollout, RolloutStatus, Step, Strategy};

use super::order::{Candidate, order};

/// Seconds the Applications of a step have to become healthy when the strategy does not say.
pub const DEFAULT_DEADLINE_SECONDS: i64 = 600;
/// How often to look again while waiting for health or analysis.
pub const POLL: Duration = Duration::from_secs(5);
/// The `application` of a failure of the Prometheus gate.
pub const ANALYSIS: &str = "analysis";

/// Health of an Application as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Ready: Deployments available, no Degraded condition.
    Healthy,
    /// Not ready yet, nothing wrong reported.
    Progressing,
    /// Degraded, or failed to render or apply: why.
    Unhealthy(String),
}

/// One Application of the Blueprint, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `namespace/name`.
    pub key: String,
    /// Labelled as an early adopter (itself or its Namespace).
    pub early: bool,
    /// `spec.blueprintRevision`.
    pub pinned: Option<i64>,
    /// `status.blueprint.revision`: the revision it was last rendered and applied with.
    pub running: Option<i64>,
    /// What its conditions say.
    pub health: Health,
}

/// What people asked for through the Blueprint's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    /// `plinth.dev/rollout-pause: "true"`.
    pub paused: bool,
    /// `plinth.dev/rollout-resume`: a value not seen before releases a pause step or retries a failed step.
    pub resume: Option<String>,
    /// `plinth.dev/rollout-abort`: the revision whose rollout to stop.
    pub abort: Option<i64>,
}

/// The Prometheus gate's result for the revision being rolled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Analysis {
    /// No query, or no Prometheus address: the gate is off; why.
    Off(String),
    /// The result is within bounds.
    Passed(String),
    /// The result is out of bounds, or the query failed.
    Failed(String),
    /// No result yet (e.g. no samples).
    Pending(String),
}

/// Everything one decision needs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// Blueprint name (salts the order).
    pub blueprint: &'a str,
    /// `spec.rollout`; `Immediate` when `None`.
    pub rollout: Option<&'a Rollout>,
    /// The newest revision.
    pub revision: i64,
    /// Its hash.
    pub hash: &'a str,
    /// `status.rollout` as last written.
    pub previous: Option<&'a RolloutStatus>,
    /// Every Application of the Blueprint.
    pub apps: &'a [Observed],
    /// Commands.
    pub commands: &'a Commands,
    /// The Prometheus gate.
    pub analysis: &'a Analysis,
    /// Now.
    pub now: Timestamp,
}

/// The next rollout status and when to decide again (`None`: on the next change only).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: RolloutStatus,
    /// Look again after this long.
    pub requeue: Option<Duration>,
}

/// The revision an Application should run: its pin; otherwise the rollout's revision when it was moved, else the
/// stable one; `None` (the newest) when there is no rollout status yet.
pub fn revision_for(key: &str, pinned: Option<i64>, status: Option<&RolloutStatus>) -> Option<i64> {
    if pinned.is_some() {
        return pinned;
    }
    let s = status?;
    Some(if s.moved.iter().any(|m| m == key) {
        s.revision
    } else {
        s.stable_revision
    })
}

/// How many Applications have moved once the moving steps up to and including `step` are done.
pub fn target_count(steps: &[Step], step: usize, eligible: usize) -> usize {
    let mut count = 0usize;
    for s in steps.iter().take(step.saturating_add(1)) {
        if let Some(p) = s.percent {
            let p = usize::try_from(p.clamp(0, 100)).unwrap_or(0);
            count = count.max((p * eligible).div_ceil(100));
        } else if let Some(n) = s.applications {
            count = count.saturating_add(usize::try_from(n.max(0)).unwrap_or(0));
        }
    }
    count.min(eligible)
}

fn time(t: Timestamp) -> Option<Time> {
    Some(Time(t))
}

fn after(t: Timestamp, seconds: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(seconds)).unwrap_or(t)
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Decides the next rollout status.
pub fn decide(input: &Input<'_>) -> Decision {
    let strategy = input.rollout.cloned().unwrap_or_default();
    let steps = &strategy.steps;
    let deadline = strategy.progress_deadline_seconds.unwrap_or(DEFAULT_DEADLINE_SECONDS);
    let now = input.now;
    let eligible: Vec<String> = order(
        input.blueprint,
        input
            .apps
            .iter()
            .filter(|a| a.pinned.is_none())
            .map(|a| Candidate {
                key: a.key.clone(),
                early: a.early,
            })
            .collect(),
    )
    .into_iter()
    .map(|c| c.key)
    .collect();

    let mut st = match input.previous {
        Some(p) if p.revision == input.revision => p.clone(),
        Some(p) => {
            // A newer revision supersedes the one rolling out: the stable revision stays, the steps start again.
            let (stable, stable_hash) = if p.phase == Phase::Completed {
                (p.revision, p.hash.clone())
            } else {
                (p.stable_revision, p.stable_hash.clone())
            };
            RolloutStatus {
                phase: Phase::Progressing,
                revision: input.revision,
                hash: input.hash.to_owned(),
                stable_revision: stable,
                stable_hash,
                step: 0,
                step_started_at: time(now),
                resumed: p.resumed.clone(),
                ..RolloutStatus::default()
            }
        }
        None => completed_at(input.revision, input.hash, "the first revision: nothing to roll from"),
    };
    if st.stable_revision == input.revision && st.phase != Phase::Completed {
        st = RolloutStatus {
            resumed: st.resumed.clone(),
            ..completed_at(
                input.revision,
                input.hash,
                "every Application runs the stable revision again",
            )
        };
    }
    if strategy.strategy == Strategy::Immediate && st.phase != Phase::Completed {
        st = RolloutStatus {
            resumed: st.resumed.clone(),
            ..completed_at(input.revision, input.hash, "Immediate: every Application moved at once")
        };
    }
    // Applications deleted or pinned since they moved are no longer part of the rollout.
    st.moved.retain(|m| eligible.contains(m));

    let requeue = advance(&mut st, input, steps, deadline, &eligible);
    if let Some(p) = input.previous
        && p.revision != input.revision
        && !matches!(p.phase, Phase::Completed)
    {
        st.message = format!("superseded the rollout of revision {}; {}", p.revision, st.message);
    }

    let failed = st.failures.iter().filter(|f| f.application != ANALYSIS).count();
    st.total = count(input.apps.len());
    st.updated = count(input.apps.iter().filter(|a| a.running == Some(st.revision)).count());
    st.failed = count(failed);
    let mut pinned: Vec<String> = input
        .apps
        .iter()
        .filter(|a| a.pinned.is_some())
        .map(|a| a.key.clone())
        .collect();
    pinned.sort();
    st.pinned = pinned;
    if !matches!(st.phase, Phase::Failed) {
        st.analysis = match input.analysis {
            Analysis::Off(why) => Some(format!("off: {why}")),
            _ => st.analysis.take(),
        };
    }
    Decision { status: st, requeue }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn completed_at(revision: i64, hash: &str, message: &str) -> RolloutStatus {
    RolloutStatus {
        phase: Phase::Completed,
        revision,
        hash: hash.to_owned(),
        stable_revision: revision,
        stable_hash: hash.to_owned(),
        message: message.to_owned(),
        ..RolloutStatus::default()
    }
}

fn new_resume<'a>(st: &RolloutStatus, commands: &'a Commands) -> Option<&'a String> {
    commands.resume.as_ref().filter(|v| st.resumed.as_ref() != Some(*v))
}

/// Runs the state machine as far as it can go now; returns when to look again.
fn advance(
    st: &mut RolloutStatus,
    input: &Input<'_>,
    steps: &[Step],
    deadline: i64,
    eligible: &[String],
) -> Option<Duration> {
    let now = input.now;
    if st.phase == Phase::Completed {
        st.moved.clear();
        return None;
    }
    if input.commands.abort == Some(st.revision) && st.phase != Phase::Aborted {
        st.phase = Phase::Aborted;
        st.moved.clear();
        st.next_step_at = None;
        st.message = format!(
            "aborted: every moved Application went back to revision {}; edit the Blueprint to roll out again",
            st.stable_revision
        );
        return None;
    }
    if matches!(st.phase, Phase::Failed | Phase::Aborted) {
        match new_resume(st, input.commands) {
            Some(v) => {
                st.resumed = Some(v.clone());
                st.phase = Phase::Progressing;
                st.failures.clear();
                st.step_started_at = time(now);
                st.message = format!("retrying step {}", st.step);
            }
            None => return None,
        }
    }
    if input.commands.paused {
        st.phase = Phase::Paused;
        st.message = "paused by `plinth rollout pause`; `plinth rollout resume` continues".into();
        return None;
    }
    let n = steps.len();
    // Each pass either waits (returns) or advances one step; bounded by the number of steps.
    for _ in 0..=n + 1 {
        let i = usize::try_from(st.step).unwrap_or(0);
        let started = st.step_started_at.as_ref().map_or(now, |t| t.0);
        if let Some(pause) = steps.get(i).and_then(|s| s.pause.as_ref()) {
            match pause.duration_seconds {
                Some(d) => {
                    let end = after(started, d);
                    if now < end {
                        st.phase = Phase::Paused;
                        st.next_step_at = time(end);
                        st.message = format!("step {i}: pausing {d}s");
                        return Some(until(now, end));
                    }
                }
                None => match new_resume(st, input.commands) {
                    Some(v) => st.resumed = Some(v.clone()),
                    None => {
                        st.phase = Phase::Paused;
                        st.next_step_at = None;
                        st.message = format!("step {i}: paused until `plinth rollout resume`");
                        return None;
                    }
                },
            }
            next_step(st, now);
            continue;
        }
        // A moving step, or the final one (every Application that is not pinned).
        st.phase = Phase::Progressing;
        let want = if i < n {
            target_count(steps, i, eligible.len())
        } else {
            eligible.len()
        };
        for key in eligible {
            if st.moved.len() >= want {
                break;
            }
            if !st.moved.contains(key) {
                st.moved.push(key.clone());
            }
        }
        let mut failures = Vec::new();
        let mut pending = Vec::new();
        for key in &st.moved {
            let Some(app) = input.apps.iter().find(|a| &a.key == key) else {
                continue;
            };
            if app.running != Some(st.revision) {
                pending.push((key.clone(), format!("still runs revision {}", app.running.unwrap_or(0))));
                continue;
            }
            match &app.health {
                Health::Healthy => {}
                Health::Progressing => pending.push((key.clone(), "not ready".to_owned())),
                Health::Unhealthy(why) => failures.push(Failure {
                    application: key.clone(),
                    reason: why.clone(),
                }),
            }
        }
        let end = after(started, deadline);
        if failures.is_empty() && !pending.is_empty() && now >= end {
            failures = pending
                .iter()
                .map(|(k, why)| Failure {
                    application: k.clone(),
                    reason: format!("not healthy within {deadline}s ({why})"),
                })
                .collect();
        }
        if !failures.is_empty() {
            fail(st, i, failures);
            return None;
        }
        if !pending.is_empty() {
            st.next_step_at = None;
            st.message = format!(
                "step {i}: waiting for {} of {} moved Applications to become healthy (until {end})",
                pending.len(),
                st.moved.len()
            );
            return Some(POLL);
        }
        match input.analysis {
            Analysis::Failed(why) => {
                fail(
                    st,
                    i,
                    vec![Failure {
                        application: ANALYSIS.into(),
                        reason: why.clone(),
                    }],
                );
                st.analysis = Some(format!("failed: {why}"));
                return None;
            }
            Analysis::Pending(why) => {
                st.analysis = Some(format!("pending: {why}"));
                st.message = format!("step {i}: waiting for the analysis");
                return Some(POLL);
            }
            Analysis::Passed(why) => st.analysis = Some(format!("passed: {why}")),
            Analysis::Off(_) => {}
        }
        if i >= n {
            let resumed = st.resumed.take();
            let analysis = st.analysis.take();
            *st = completed_at(
                st.revision,
                &st.hash,
                &format!("every Application that is not pinned runs revision {}", st.revision),
            );
            st.step = count(n);
            st.resumed = resumed;
            st.analysis = analysis;
            return None;
        }
        next_step(st, now);
    }
    Some(POLL)
}

fn next_step(st: &mut RolloutStatus, now: Timestamp) {
    st.step += 1;
    st.step_started_at = time(now);
    st.next_step_at = None;
}

fn fail(st: &mut RolloutStatus, step: usize, failures: Vec<Failure>) {
    let names: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.application, f.reason))
        .collect();
    st.phase = Phase::Failed;
    st.message = format!(
        "step {step} failed ({}); every moved Application went back to revision {}. Fix the Blueprint (a new edit rolls out again), `plinth rollout resume` retries the step, `plinth rollout undo` restores the stable revision",
        names.join("; "),
        st.stable_revision
    );
    st.failures = failures;
    st.moved.clear();
    st.next_step_at = None;
}
