//! The rollout driver: records each Blueprint's revisions as ControllerRevisions, moves Applications between
//! revisions by writing the Blueprint's `status.rollout` (decided by [`plan::decide`]), and tells the reconciler
//! which revision an Application runs. Every piece of state is in the API, so a restarted operator continues.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use plinth_api::rollout::{ABORT_ANNOTATION, EARLY_ADOPTER_LABEL, PAUSE_ANNOTATION, RESUME_ANNOTATION, RolloutStatus};
use plinth_api::{Application, Blueprint, BlueprintSpec, conditions};

use super::plan::{self, Analysis, Commands, Health, Observed};
use super::revision::{self, BLUEPRINT_LABEL, KEEP, Next, Revision};

/// Field manager of the rollout's writes.
pub const MANAGER: &str = "plinth-rollout";
/// Namespace of the revisions when `PLINTH_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "plinth-system";

/// Where Blueprint revisions live: `$PLINTH_NAMESPACE` (the operator's namespace), else `plinth-system`.
pub fn revisions_namespace() -> String {
    std::env::var("PLINTH_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// A rollout step that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} for Blueprint {blueprint}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The Blueprint.
        blueprint: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The revision an Application should run does not exist (deleted, or a pin to a revision never made).
    #[error(
        "Blueprint {blueprint} has no revision {revision} (revisions: {known}); pin one of those, or remove spec.blueprintRevision"
    )]
    NoRevision {
        /// The Blueprint.
        blueprint: String,
        /// The revision asked for.
        revision: i64,
        /// The revisions that exist.
        known: String,
    },
    /// A stored revision is unreadable.
    #[error(transparent)]
    Revision(#[from] revision::RevisionError),
}

fn api_error(what: &'static str, blueprint: &str) -> impl FnOnce(kube::Error) -> Error + use<> {
    let blueprint = blueprint.to_owned();
    move |source| Error::Api {
        what,
        blueprint,
        source,
    }
}

/// The rollout driver.
#[derive(Clone)]
pub struct Driver {
    client: Client,
    namespace: String,
    /// Only Applications of this namespace take part (the operator's watch scope); every namespace when `None`.
    pub scope: Option<String>,
    /// Base URL of the Prometheus server for the analysis gate; the gate is off without one.
    pub prometheus: Option<String>,
    /// Writes only while this is open (the leader Lease); always when `None`.
    pub gate: Option<crate::reconcile::leader::WriteGate>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("namespace", &self.namespace)
            .field("scope", &self.scope)
            .field("prometheus", &self.prometheus)
            .finish_non_exhaustive()
    }
}

/// The revisions of one Blueprint, read from their ControllerRevisions.
pub async fn revisions(client: &Client, namespace: &str, blueprint: &str) -> Result<Vec<Revision>, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("{BLUEPRINT_LABEL}={blueprint}")))
        .await
        .map_err(api_error("list the revisions", blueprint))?;
    Ok(list
        .items
        .iter()
        .filter_map(|cr| revision::from_object(cr).ok())
        .collect())
}

/// The revision (number and hash) holding the Blueprint's current spec, recording a new one when the content is new.
pub async fn ensure_revision(client: &Client, namespace: &str, bp: &Blueprint) -> Result<(i64, String), Error> {
    let name = bp.name_any();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let existing = revisions(client, namespace, &name).await?;
    match revision::next(&existing, &bp.spec) {
        Next::Current(n) => Ok((n, revision::hash(&bp.spec))),
        // An undo, or an edit reverted: the revision holding that content is the Blueprint's revision again, under
        // its own number, so Applications still running it (the stable ones) keep finding it.
        Next::Reuse { old, .. } => Ok((old, revision::hash(&bp.spec))),
        Next::New(rev) => {
            let object = revision::to_object(bp, &rev, namespace);
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                // Another replica recorded it first.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(api_error("record a revision", &name)(e)),
            }
            tracing::info!(blueprint = %name, revision = rev.number, hash = %rev.hash, "recorded a new revision");
            Ok((rev.number, rev.hash.clone()))
        }
    }
}

/// What an Application's status says about its health.
pub fn health(app: &Application) -> Health {
    let Some(status) = &app.status else {
        return Health::Progressing;
    };
    if status.observed_generation != app.metadata.generation {
        return Health::Progressing;
    }
    let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    if let Some(c) = cond(conditions::DEGRADED).filter(|c| c.status == "True") {
        return Health::Unhealthy(format!("Degraded: {}: {}", c.reason, c.message));
    }
    for t in [conditions::RENDERED, conditions::APPLIED] {
        if let Some(c) = cond(t).filter(|c| c.status == "False") {
            return Health::Unhealthy(format!("not {t}: {}: {}", c.reason, c.message));
        }
    }
    match cond(conditions::READY) {
        Some(c) if c.status == "True" => Health::Healthy,
        _ => Health::Progressing,
    }
}

/// An Application as the planner sees it.
pub fn observe(app: &Application, blueprint: &str, early_label: &str, namespace_early: bool) -> Observed {
    Observed {
        key: format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()),
        early: namespace_early || super::order::is_early(app.labels().get(early_label).map(String::as_str)),
        pinned: app.spec.blueprint_revision,
        running: app
            .status
            .as_ref()
            .and_then(|s| s.blueprint.as_ref())
            .filter(|b| b.name == blueprint)
            .and_then(|b| b.revision),
        health: health(app),
    }
}

/// Commands from the Blueprint's annotations.
pub fn commands(bp: &Blueprint) -> Commands {
    let a = bp.annotations();
    Commands {
        paused: a.get(PAUSE_ANNOTATION).is_some_and(|v| v == "true"),
        resume: a.get(RESUME_ANNOTATION).cloned(),
        abort: a.get(ABORT_ANNOTATION).and_then(|v| v.parse().ok()),
    }
}

impl Driver {
    /// A driver keeping revisions in `namespace`.
    pub fn new(client: Client, namespace: String) -> Driver {
        Driver {
            client,
            namespace,
            scope: None,
            prometheus: None,
            gate: None,
        }
    }

    /// One pass over one Blueprint: record its revision, decide the rollout, write the status when it changed,
    /// delete revisions nobody needs. Returns when to look again.
    pub async fn step(&self, bp: &Blueprint, now: Timestamp) -> Result<Option<Duration>, Error> {
        if self.gate.as_ref().is_some_and(|g| !g.open()) {
            return Ok(None);
        }
        let name = bp.name_any();
        let (number, hash) = ensure_revision(&self.client, &self.namespace, bp).await?;
        // Guarded: an Application that does not deserialize (reported by the controller) takes no part, and never
        // stops the rollout of the others.
        let apps: Api<kube::core::DeserializeGuard<Application>> = match &self.scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let apps = apps
            .list(&ListParams::default())
            .await
            .map_err(api_error("list the Applications", &name))?;
        let rollout = bp.spec.rollout.as_ref();
        let early_label = rollout
            .and_then(|r| r.early_adopter_label.clone())
            .unwrap_or_else(|| EARLY_ADOPTER_LABEL.to_owned());
        let early_namespaces = self.early_namespaces(&early_label).await;
        let observed: Vec<Observed> = apps
            .items
            .iter()
            .filter_map(|a| a.0.as_ref().ok())
            .filter(|a| a.spec.blueprint == name && a.metadata.deletion_timestamp.is_none())
            .map(|a| {
                let ns_early = early_namespaces.contains(&a.namespace().unwrap_or_default());
                observe(a, &name, &early_label, ns_early)
            })
            .collect();
        // A controller scoped to one namespace leaves Blueprints it has no Applications of to the others.
        if self.scope.is_some() && observed.is_empty() {
            return Ok(None);
        }
        let previous = bp.status.as_ref().and_then(|s| s.rollout.as_ref());
        let analysis = self.analysis(bp, number).await;
        let decision = plan::decide(&plan::Input {
            blueprint: &name,
            rollout,
            revision: number,
            hash: &hash,
            previous,
            apps: &observed,
            commands: &commands(bp),
            analysis: &analysis,
            now,
        });
        let status = bp.status.clone().unwrap_or_default();
        let unchanged = previous == Some(&decision.status)
            && status.revision == Some(number)
            && status.hash.as_deref() == Some(hash.as_str())
            && status.observed_generation == bp.metadata.generation;
        if !unchanged {
            self.write_status(bp, number, &hash, &decision.status).await?;
        }
        self.collect(&name, &decision.status, &observed).await?;
        Ok(decision.requeue)
    }

    async fn write_status(
        &self,
        bp: &Blueprint,
        number: i64,
        hash: &str,
        rollout: &RolloutStatus,
    ) -> Result<(), Error> {
        let name = bp.name_any();
        let api: Api<Blueprint> = Api::all(self.client.clone());
        // A merge patch keeps fields it leaves out: clear those the new status no longer has (e.g. `moved` after a rollback).
        let mut patch_rollout = serde_json::to_value(rollout).unwrap_or_default();
        let old = bp
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .and_then(|r| serde_json::to_value(r).ok());
        if let (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) = (old, &mut patch_rollout) {
            for key in old.keys() {
                new.entry(key.clone()).or_insert(serde_json::Value::Null);
            }
        }
        let patch = serde_json::json!({
            "status": {
                "observedGeneration": bp.metadata.generation,
                "revision": number,
                "hash": hash,
                "rollout": patch_rollout,
            }
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("write the rollout status", &name))?;
        tracing::info!(blueprint = %name, phase = ?rollout.phase, step = rollout.step, moved = rollout.moved.len(), message = %rollout.message, "rollout");
        Ok(())
    }

    /// Namespaces labelled as early adopters; none when Namespaces may not be listed.
    async fn early_namespaces(&self, label: &str) -> BTreeSet<String> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        match api
            .list_metadata(&ListParams::default().labels(&format!("{label}=true")))
            .await
        {
            Ok(list) => list.items.iter().map(|n| n.name_any()).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list Namespaces; only Application labels mark early adopters");
                BTreeSet::new()
            }
        }
    }

    async fn analysis(&self, bp: &Blueprint, revision: i64) -> Analysis {
        let Some(spec) = bp.spec.rollout.as_ref().and_then(|r| r.analysis.as_ref()) else {
            return Analysis::Off("no analysis in spec.rollout".into());
        };
        let Some(base) = &self.prometheus else {
            return Analysis::Off("no Prometheus address is configured".into());
        };
        super::prometheus::evaluate(base, spec, &bp.name_any(), revision).await
    }

    /// Deletes revisions that no Application runs or pins, that the rollout does not use, beyond the newest [`KEEP`].
    async fn collect(&self, name: &str, status: &RolloutStatus, observed: &[Observed]) -> Result<(), Error> {
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&format!("{BLUEPRINT_LABEL}={name}")))
            .await
            .map_err(api_error("list the revisions", name))?;
        let mut in_use: BTreeSet<i64> = [status.revision, status.stable_revision].into();
        in_use.extend(observed.iter().filter_map(|o| o.pinned));
        in_use.extend(observed.iter().filter_map(|o| o.running));
        let numbers: Vec<i64> = list.items.iter().map(|c| c.revision).collect();
        for n in revision::collectable(&numbers, &in_use, KEEP) {
            for cr in list.items.iter().filter(|c| c.revision == n) {
                api.delete(&cr.name_any(), &DeleteParams::default())
                    .await
                    .map_err(api_error("delete an unused revision", name))?;
            }
        }
        Ok(())
    }

    /// Runs passes over every Blueprint with `spec.rollout` (or a rollout in its status) until `shutdown` resolves: at most every `tick`, sooner when a decision asks.
    pub async fn run(self, tick: Duration, shutdown: impl std::future::Future<Output = ()>) {
        futures::pin_mut!(shutdown);
        loop {
            let mut wait = tick;
            // Guarded: a Blueprint that does not deserialize (reported by the controller) never stops the others.
            match Api::<kube::core::DeserializeGuard<Blueprint>>::all(self.client.clone())
                .list(&ListParams::default())
                .await
            {
                Ok(list) => {
                    // Blueprints that never asked for a rollout keep today's behaviour: every change applies at once.
                    let managed = list.items.iter().filter_map(|g| g.0.as_ref().ok()).filter(|bp| {
                        bp.spec.rollout.is_some() || bp.status.as_ref().is_some_and(|s| s.rollout.is_some())
                    });
                    for bp in managed {
                        match self.step(bp, Timestamp::now()).await {
                            Ok(Some(d)) => wait = wait.min(d.max(Duration::from_millis(200))),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %crate::reconcile::error_chain(&e), "rollout"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rollout: list Blueprints"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// What of a Blueprint, when it changes, may change what its Applications run: its spec (generation) and where
/// its rollout has them (revisions and the moved Applications). The controller re-renders the users on a change.
pub fn trigger_key(bp: &Blueprint) -> String {
    let generation = bp.metadata.generation.unwrap_or_default();
    match bp.status.as_ref().and_then(|s| s.rollout.as_ref()) {
        None => generation.to_string(),
        Some(r) => format!(
            "{generation}/{}/{}/{}",
            r.revision,
            r.stable_revision,
            r.moved.join(",")
        ),
    }
}

/// The revision an Application runs and the spec to render it with: its pin, else what the Blueprint's rollout
/// says, else the Blueprint as it is (`None` as the number when no revision is recorded yet). The spec never holds
/// `rollout`, so the render's Blueprint hash is the revision's hash.
pub async fn spec_for(
    client: &Client,
    namespace: &str,
    app: &Application,
    bp: &Blueprint,
) -> Result<(Option<i64>, BlueprintSpec), Error> {
    let key = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
    let rollout = bp.status.as_ref().and_then(|s| s.rollout.as_ref());
    let Some(want) = plan::revision_for(&key, app.spec.blueprint_revision, rollout) else {
        return Ok((None, revision::content(&bp.spec)));
    };
    // The Blueprint as it is, when that is the revision asked for: no read.
    if rollout.is_some_and(|r| r.revision == want && r.hash == revision::hash(&bp.spec)) {
        return Ok((Some(want), revision::content(&bp.spec)));
    }
    let all = revisions(client, namespace, &bp.name_any()).await?;
    match all.into_iter().find(|r| r.number == want) {
        Some(r) => Ok((Some(want), r.spec)),
        None => {
            let mut known: Vec<i64> = revisions(client, namespace, &bp.name_any())
                .await?
                .iter()
                .map(|r| r.number)
                .collect();
            known.sort_unstable();
            Err(Error::NoRevision {
                blueprint: bp.name_any(),
                revision: want,
                known: known.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use plinth_api::ApplicationStatus;
    use plinth_api::application::BlueprintRef;

    fn app(generation: i64, observed: i64, conditions: &[(&str, &str)]) -> Application {
        let mut a: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "plinth.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "team", "generation": generation,
                         "labels": {"plinth.dev/early-adopter": "true"}},
            "spec": {"image": "ghcr.io/acme/shop:1.0", "blueprintRevision": 3},
        }))
        .expect("app");
        a.status = Some(ApplicationStatus {
            observed_generation: Some(observed),
            blueprint: Some(BlueprintRef {
                name: "web".into(),
                revision: Some(2),
                hash: None,
            }),
            conditions: conditions
                .iter()
                .map(|(t, s)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: "Why".into(),
                    message: "because".into(),
                    observed_generation: Some(observed),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..ApplicationStatus::default()
        });
        a
    }

    #[test]
    fn health_reads_the_conditions_of_the_current_generation() {
        assert_eq!(health(&app(1, 1, &[("Ready", "True")])), Health::Healthy);
        assert_eq!(
            health(&app(2, 1, &[("Ready", "True")])),
            Health::Progressing,
            "stale status"
        );
        assert_eq!(health(&app(1, 1, &[("Ready", "False")])), Health::Progressing);
        assert_eq!(
            health(&app(1, 1, &[("Ready", "False"), ("Degraded", "True")])),
            Health::Unhealthy("Degraded: Why: because".into())
        );
        assert!(
            matches!(health(&app(1, 1, &[("Rendered", "False")])), Health::Unhealthy(m) if m.starts_with("not Rendered"))
        );
    }

    #[test]
    fn observe_reads_key_pin_revision_and_early_label() {
        let o = observe(&app(1, 1, &[("Ready", "True")]), "web", EARLY_ADOPTER_LABEL, false);
        assert_eq!(
            (o.key.as_str(), o.pinned, o.running, o.early),
            ("team/shop", Some(3), Some(2), true)
        );
        let other = observe(&app(1, 1, &[]), "other", "example.com/canary", false);
        assert_eq!(
            (other.running, other.early),
            (None, false),
            "another Blueprint's revision is not this one's"
        );
    }

    #[test]
    fn commands_come_from_annotations() {
        let mut bp = Blueprint::new(
            "web",
            plinth_api::BlueprintSpec {
                description: String::new(),
                parameters: None,
                defaults: Default::default(),
                policy: Default::default(),
                templates: [("a.yaml.hbs".to_owned(), "x".to_owned())].into(),
                rollout: None,
            },
        );
        assert_eq!(commands(&bp), Commands::default());
        bp.metadata.annotations = Some(
            [
                (PAUSE_ANNOTATION.to_owned(), "true".to_owned()),
                (RESUME_ANNOTATION.to_owned(), "t1".to_owned()),
                (ABORT_ANNOTATION.to_owned(), "4".to_owned()),
            ]
            .into(),
        );
        assert_eq!(
            commands(&bp),
            Commands {
                paused: true,
                resume: Some("t1".into()),
                abort: Some(4),
            }
        );
        let before = trigger_key(&bp);
        bp.status = Some(plinth_api::BlueprintStatus {
            rollout: Some(RolloutStatus {
                revision: 2,
                stable_revision: 1,
                moved: vec!["team/shop".into()],
                ..RolloutStatus::default()
            }),
            ..Default::default()
        });
        assert_ne!(trigger_key(&bp), before, "moving an Application re-renders the users");
    }
}
