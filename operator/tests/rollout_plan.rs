//! The rollout state machine in memory, with a passed-in clock: a small simulation plays the controller (each
//! Application runs the revision `revision_for` gives it) and the cluster (its health), step by step.

#![allow(clippy::expect_used, reason = "a test stops with a message")]

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use plinth_api::rollout::{Analysis as AnalysisSpec, Pause, Phase, Rollout, RolloutStatus, Step, Strategy};
use plinth_operator::rollout::plan::{Analysis, Commands, Decision, Health, Input, Observed, decide, revision_for};

fn percent(p: i32) -> Step {
    Step {
        percent: Some(p),
        ..Step::default()
    }
}
fn apps_step(n: i32) -> Step {
    Step {
        applications: Some(n),
        ..Step::default()
    }
}
fn pause(d: Option<i64>) -> Step {
    Step {
        pause: Some(Pause { duration_seconds: d }),
        ..Step::default()
    }
}
fn canary(steps: Vec<Step>) -> Rollout {
    Rollout {
        strategy: Strategy::Canary,
        steps,
        progress_deadline_seconds: Some(300),
        ..Rollout::default()
    }
}

/// The world: Applications (what they run, pins, health overrides), the Blueprint's status, the clock.
struct Sim {
    rollout: Rollout,
    revision: i64,
    status: Option<RolloutStatus>,
    apps: BTreeMap<String, Observed>,
    /// Health an Application reports once it runs a given revision; healthy otherwise.
    sick: BTreeMap<(String, i64), Health>,
    commands: Commands,
    analysis: Analysis,
    now: Timestamp,
    last: Option<Decision>,
}

fn hash(rev: i64) -> String {
    format!("sha256:{rev:064}")
}

impl Sim {
    fn new(n: usize, rollout: Rollout) -> Sim {
        let apps = (0..n)
            .map(|i| {
                let key = format!("team{}/app{i:02}", i % 4);
                (
                    key.clone(),
                    Observed {
                        key,
                        early: false,
                        pinned: None,
                        running: Some(1),
                        health: Health::Healthy,
                    },
                )
            })
            .collect();
        let mut sim = Sim {
            rollout,
            revision: 1,
            status: None,
            apps,
            sick: BTreeMap::new(),
            commands: Commands::default(),
            analysis: Analysis::Off("no Prometheus address is configured".into()),
            now: "2026-01-01T00:00:00Z".parse().expect("time"),
            last: None,
        };
        sim.decide();
        assert_eq!(sim.phase(), Phase::Completed);
        sim
    }

    fn decide(&mut self) -> &Decision {
        let apps: Vec<Observed> = self.apps.values().cloned().collect();
        let h = hash(self.revision);
        let d = decide(&Input {
            blueprint: "web",
            rollout: Some(&self.rollout),
            revision: self.revision,
            hash: &h,
            previous: self.status.as_ref(),
            apps: &apps,
            commands: &self.commands,
            analysis: &self.analysis,
            now: self.now,
        });
        self.status = Some(d.status.clone());
        self.last = Some(d);
        self.last.as_ref().expect("just set")
    }

    /// The controller reconciles every Application: each runs what the rollout says, and reports its health.
    fn reconcile(&mut self) {
        let status = self.status.clone();
        for app in self.apps.values_mut() {
            let rev = revision_for(&app.key, app.pinned, status.as_ref()).unwrap_or(self.revision);
            app.running = Some(rev);
            app.health = self
                .sick
                .get(&(app.key.clone(), rev))
                .cloned()
                .unwrap_or(Health::Healthy);
        }
    }

    /// Decide, reconcile, and again, until nothing moves without time passing or a command.
    fn settle(&mut self) {
        for _ in 0..20 {
            let before = self.status.clone();
            self.decide();
            self.reconcile();
            if self.status == before {
                return;
            }
        }
    }

    fn tick(&mut self, seconds: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(seconds)).expect("time");
    }

    fn edit(&mut self) {
        self.revision += 1;
    }

    fn st(&self) -> &RolloutStatus {
        self.status.as_ref().expect("status")
    }

    fn phase(&self) -> Phase {
        self.st().phase
    }

    fn running(&self, rev: i64) -> Vec<String> {
        self.apps
            .values()
            .filter(|a| a.running == Some(rev))
            .map(|a| a.key.clone())
            .collect()
    }
}

#[test]
fn the_first_revision_completes_at_once() {
    let sim = Sim::new(3, canary(vec![percent(10)]));
    let st = sim.st();
    assert_eq!((st.revision, st.stable_revision, st.total, st.updated), (1, 1, 3, 3));
    assert!(st.moved.is_empty());
}

#[test]
fn canary_across_20_applications_in_3_steps_reaches_all_of_them() {
    let mut sim = Sim::new(20, canary(vec![percent(10), apps_step(5), percent(50)]));
    sim.edit();
    // Step 0: 10 % of 20 = 2 Applications move; nothing else until they are healthy on revision 2.
    sim.decide();
    assert_eq!(sim.st().moved.len(), 2);
    assert_eq!(sim.st().step, 0);
    assert_eq!(
        sim.last.as_ref().expect("decision").requeue,
        Some(plinth_operator::rollout::plan::POLL)
    );
    let first_two = sim.st().moved.clone();
    sim.reconcile();
    assert_eq!(sim.running(2), {
        let mut v = first_two.clone();
        v.sort();
        v
    });
    // Healthy: step 1 moves 5 more (7), then step 2 to 50 % (10), then the final step moves everyone.
    sim.decide();
    assert_eq!((sim.st().step, sim.st().moved.len()), (1, 7));
    assert_eq!(sim.st().moved[..2], first_two[..], "earlier moves stay first");
    sim.reconcile();
    sim.decide();
    assert_eq!((sim.st().step, sim.st().moved.len()), (2, 10));
    sim.reconcile();
    sim.decide();
    assert_eq!((sim.st().step, sim.st().moved.len()), (3, 20));
    sim.reconcile();
    sim.decide();
    let st = sim.st();
    assert_eq!(st.phase, Phase::Completed);
    assert_eq!((st.stable_revision, st.updated, st.total, st.failed), (2, 20, 20, 0));
    sim.reconcile();
    assert_eq!(sim.running(2).len(), 20);
}

#[test]
fn a_failed_gate_moves_back_exactly_the_moved_applications_and_names_them() {
    let mut sim = Sim::new(20, canary(vec![percent(10), apps_step(5), percent(50)]));
    sim.edit();
    sim.decide();
    sim.reconcile();
    sim.decide(); // step 1: 7 moved
    let moved = sim.st().moved.clone();
    assert_eq!(moved.len(), 7);
    let bad = moved[4].clone();
    sim.sick.insert(
        (bad.clone(), 2),
        Health::Unhealthy("Deployment web: 0/2 available (ProgressDeadlineExceeded)".into()),
    );
    sim.reconcile();
    assert_eq!(sim.running(2).len(), 7);
    sim.decide();
    let st = sim.st().clone();
    assert_eq!(st.phase, Phase::Failed);
    assert!(st.moved.is_empty());
    assert_eq!(st.failed, 1);
    assert_eq!(st.failures[0].application, bad);
    assert!(st.failures[0].reason.contains("ProgressDeadlineExceeded"));
    assert!(st.message.contains(&bad), "{}", st.message);
    sim.reconcile();
    assert!(sim.running(2).is_empty(), "every moved Application went back");
    assert_eq!(sim.running(1).len(), 20);
    // And it stays failed: nothing moves without a command or an edit.
    sim.tick(3600);
    sim.settle();
    assert_eq!(sim.phase(), Phase::Failed);
    assert!(sim.running(2).is_empty());
}

#[test]
fn applications_that_never_become_healthy_fail_the_step_at_the_deadline() {
    let mut sim = Sim::new(10, canary(vec![apps_step(2)]));
    sim.edit();
    sim.decide();
    let moved = sim.st().moved.clone();
    sim.sick.insert((moved[1].clone(), 2), Health::Progressing);
    sim.reconcile();
    sim.decide();
    assert_eq!(sim.phase(), Phase::Progressing, "within the deadline it waits");
    sim.tick(301);
    sim.decide();
    let st = sim.st();
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.failures.len(), 1);
    assert_eq!(st.failures[0].application, moved[1]);
    assert!(
        st.failures[0].reason.contains("not healthy within 300s"),
        "{:?}",
        st.failures
    );
}

#[test]
fn pinned_applications_are_never_moved_and_are_listed() {
    let mut sim = Sim::new(6, canary(vec![percent(50)]));
    let pinned = "team1/app01".to_owned();
    sim.apps.get_mut(&pinned).expect("app").pinned = Some(1);
    sim.edit();
    sim.settle();
    let st = sim.st();
    assert_eq!(st.phase, Phase::Completed);
    assert_eq!(st.pinned, vec![pinned.clone()]);
    assert_eq!((st.total, st.updated), (6, 5));
    assert_eq!(sim.apps[&pinned].running, Some(1));
    assert_eq!(revision_for(&pinned, Some(1), Some(st)), Some(1));
}

#[test]
fn a_timed_pause_waits_and_says_when_the_next_step_may_start() {
    let mut sim = Sim::new(10, canary(vec![apps_step(1), pause(Some(600)), percent(100)]));
    sim.edit();
    sim.settle();
    let st = sim.st().clone();
    assert_eq!((st.phase, st.step, st.moved.len()), (Phase::Paused, 1, 1));
    let next = st.next_step_at.as_ref().expect("next step time").0;
    assert_eq!(next, sim.now.checked_add(SignedDuration::from_secs(600)).expect("time"));
    assert_eq!(
        sim.last.as_ref().expect("decision").requeue,
        Some(std::time::Duration::from_secs(600))
    );
    sim.tick(599);
    sim.settle();
    assert_eq!(sim.phase(), Phase::Paused);
    sim.tick(1);
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
    assert_eq!(sim.running(2).len(), 10);
}

#[test]
fn a_pause_without_duration_waits_for_resume_and_a_resume_counts_once() {
    let mut sim = Sim::new(10, canary(vec![apps_step(1), pause(None), apps_step(1), pause(None)]));
    sim.edit();
    sim.settle();
    assert_eq!((sim.phase(), sim.st().step), (Phase::Paused, 1));
    sim.tick(86400);
    sim.settle();
    assert_eq!(
        (sim.phase(), sim.st().step),
        (Phase::Paused, 1),
        "time does not release it"
    );
    sim.commands.resume = Some("r1".into());
    sim.settle();
    // The same resume value does not also release the second pause.
    assert_eq!(
        (sim.phase(), sim.st().step, sim.st().moved.len()),
        (Phase::Paused, 3, 2)
    );
    sim.commands.resume = Some("r2".into());
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
}

#[test]
fn pause_stops_and_resume_continues() {
    let mut sim = Sim::new(20, canary(vec![percent(10), percent(50)]));
    sim.edit();
    sim.decide();
    sim.reconcile();
    sim.commands.paused = true;
    sim.settle();
    assert_eq!(sim.phase(), Phase::Paused);
    assert_eq!(sim.running(2).len(), 2, "paused where it was");
    sim.commands.paused = false;
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
    assert_eq!(sim.running(2).len(), 20);
}

#[test]
fn a_new_edit_mid_rollout_supersedes_it_from_the_stable_revision() {
    let mut sim = Sim::new(20, canary(vec![percent(10), percent(50), pause(None)]));
    sim.edit();
    sim.settle();
    assert_eq!((sim.phase(), sim.st().moved.len()), (Phase::Paused, 10));
    sim.edit(); // revision 3
    sim.decide();
    let st = sim.st().clone();
    assert_eq!((st.revision, st.stable_revision, st.step), (3, 1, 0));
    assert!(
        st.message.contains("superseded the rollout of revision 2"),
        "{}",
        st.message
    );
    assert_eq!(st.moved.len(), 2, "step 0 again");
    sim.reconcile();
    assert!(sim.running(2).is_empty(), "nothing runs the superseded revision");
    assert_eq!((sim.running(3).len(), sim.running(1).len()), (2, 18));
}

#[test]
fn immediate_moves_everyone_at_once() {
    let mut sim = Sim::new(5, Rollout::default());
    sim.edit();
    sim.decide();
    assert_eq!(sim.phase(), Phase::Completed);
    sim.reconcile();
    assert_eq!(sim.running(2).len(), 5);
}

#[test]
fn abort_moves_back_and_stays_until_an_edit() {
    let mut sim = Sim::new(10, canary(vec![percent(50), pause(None)]));
    sim.edit();
    sim.settle();
    assert_eq!(sim.running(2).len(), 5);
    sim.commands.abort = Some(2);
    sim.settle();
    assert_eq!(sim.phase(), Phase::Aborted);
    assert!(sim.running(2).is_empty());
    sim.edit();
    sim.settle();
    assert_eq!(sim.st().revision, 3);
    assert_eq!(sim.phase(), Phase::Paused, "the new revision rolls out");
}

#[test]
fn early_adopters_move_first() {
    let mut sim = Sim::new(20, canary(vec![apps_step(2), pause(None)]));
    for key in ["team3/app19", "team0/app08"] {
        sim.apps.get_mut(key).expect("app").early = true;
    }
    sim.edit();
    sim.decide();
    let mut moved = sim.st().moved.clone();
    moved.sort();
    assert_eq!(moved, ["team0/app08", "team3/app19"]);
}

#[test]
fn a_restarted_controller_continues_from_the_status_in_the_api() {
    let mut sim = Sim::new(20, canary(vec![percent(10), pause(Some(60)), percent(50)]));
    sim.edit();
    sim.settle();
    assert_eq!(sim.phase(), Phase::Paused);
    // Nothing but the status (as stored: JSON) and the observed Applications survive a restart.
    let stored = serde_json::to_string(sim.st()).expect("json");
    sim.status = Some(serde_json::from_str(&stored).expect("status"));
    sim.last = None;
    sim.tick(60);
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
    assert_eq!(sim.running(2).len(), 20);
}

#[test]
fn the_prometheus_gate_fails_a_step_and_says_when_it_is_off() {
    let mut sim = Sim::new(10, canary(vec![percent(20)]));
    sim.rollout.analysis = Some(AnalysisSpec {
        query: "sum(rate(errors[1m]))".into(),
        max: Some(1.0),
        min: None,
    });
    sim.edit();
    sim.decide();
    sim.reconcile();
    sim.analysis = Analysis::Failed("sum(rate(errors[1m])) = 4 is above 1".into());
    sim.decide();
    let st = sim.st().clone();
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.failures[0].application, "analysis");
    assert_eq!(st.failed, 0, "no Application failed, the analysis did");
    assert!(st.analysis.as_deref().is_some_and(|a| a.starts_with("failed:")));

    let mut off = Sim::new(4, canary(vec![percent(50)]));
    off.edit();
    off.settle();
    assert_eq!(off.phase(), Phase::Completed);
    assert_eq!(
        off.st().analysis.as_deref(),
        Some("off: no Prometheus address is configured")
    );
}

#[test]
fn resume_after_a_failure_retries_the_step() {
    let mut sim = Sim::new(10, canary(vec![percent(20)]));
    sim.edit();
    sim.decide();
    let bad = sim.st().moved[0].clone();
    sim.sick.insert((bad, 2), Health::Unhealthy("Degraded".into()));
    sim.reconcile();
    sim.decide();
    assert_eq!(sim.phase(), Phase::Failed);
    sim.reconcile();
    sim.sick.clear();
    sim.commands.resume = Some("retry-1".into());
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
    assert_eq!(sim.running(2).len(), 10);
}

#[test]
fn an_edit_back_to_the_stable_content_completes_at_once() {
    // An undo: the Blueprint's spec goes back to the stable revision's content, so the newest revision is the stable one.
    let mut sim = Sim::new(10, canary(vec![percent(50), pause(None)]));
    sim.edit();
    sim.settle();
    assert_eq!(sim.running(2).len(), 5);
    sim.revision = 1;
    sim.settle();
    assert_eq!(sim.phase(), Phase::Completed);
    assert_eq!(sim.running(1).len(), 10);
}
