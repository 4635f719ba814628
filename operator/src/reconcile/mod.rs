//! The controller: keeps every Application's rendered workload applied, corrected and reported.
//!
//! One reconcile is: validate and render (the same functions as `plinth render`), decide what to
//! write from the index of live children, server-side apply in dependency order, prune owned
//! leftovers in reverse order, then write the status if it changed and publish Events for
//! transitions. A failed validation or render writes nothing but the status: the objects applied
//! before stay as they are.
//!
//! Triggers: Applications (spec changes), the kinds Plinth creates (metadata-only watches, labelled
//! `app.kubernetes.io/managed-by=plinth`; Deployments in full for their rollout state) and
//! Blueprints (through an index from Blueprint to the Applications that use it).
//!
//! An Application whose stored object does not deserialize (a wrong type written before a schema change, or past
//! a server that does not check it) never stops the watch of the others: it is read through a
//! [`DeserializeGuard`], reported (log, Event, `plinth_invalid_applications`, `Degraded=True` with reason
//! `InvalidSpec` in its status), and left alone until it changes. A Blueprint that does not deserialize never
//! stops the watch of the others either: the Applications that use it report `Degraded=True` with reason
//! `BlueprintInvalid` naming its field, and keep the objects applied before.

pub mod apply;
pub mod desired;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod index;
pub mod kinds;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod prune;
pub mod status;
pub mod throttle;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt as _, predicates};
use kube::{Client, Resource as _, ResourceExt as _};
use plinth_api::application::BlueprintRef;
use plinth_api::{Application, Blueprint, labels};
use tokio::sync::mpsc;

use self::apply::{AppliedState, ObjectError, Recorded, Verdict, Why};
use self::desired::ChildKey;
use self::index::{BlueprintUsers, ChildEvent, ChildMeta, Children};
use self::kinds::{Kind, Served};
use self::leader::WriteGate;
use self::metrics::Metrics;
use self::status::Outcome;
use crate::problem::Problems;
use crate::render::{LoadedBlueprint, Platform};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch and reconcile only this namespace; every namespace when `None`.
    pub namespace: Option<String>,
    /// Most reconciles at once.
    pub concurrency: u16,
    /// Re-check every Application this often (with ±10 % jitter), even without changes.
    pub resync: Duration,
    /// First retry delay after an error; doubles per consecutive error, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Cluster settings passed to every render.
    pub platform: Platform,
    /// The instance name in Events (pod name).
    pub instance: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: None,
            concurrency: 16,
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            platform: Platform::default(),
            instance: "plinth".into(),
        }
    }
}

/// A reconcile that could not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, applying or deleting a child failed.
    #[error(transparent)]
    Object(Box<ObjectError>),
    /// Writing the Application's status failed.
    #[error("write the status of Application {namespace}/{name}")]
    Status {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// This replica lost (or never had) the leader Lease.
    #[error("this replica does not hold the leader Lease, so it writes nothing")]
    NotLeader,
    /// The API server's discovery failed at start.
    #[error("discover the API versions the server serves")]
    Discovery(#[source] kube::Error),
}

impl From<ObjectError> for Error {
    fn from(e: ObjectError) -> Self {
        Error::Object(Box::new(e))
    }
}

impl Error {
    /// A stable category, for metric labels.
    pub fn category(&self) -> &'static str {
        let api = |e: &kube::Error| match e {
            kube::Error::Api(s) if s.code == 429 => "Throttled",
            kube::Error::Api(s) if s.code == 403 => "Forbidden",
            kube::Error::Api(s) if s.code == 409 => "Conflict",
            kube::Error::Api(s) if s.code == 422 => "Invalid",
            kube::Error::Api(_) => "ApiError",
            _ => "Unreachable",
        };
        match self {
            Error::Object(e) => api(&e.source),
            Error::Status { source, .. } | Error::Discovery(source) => api(source),
            Error::NotLeader => "NotLeader",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        let source = match self {
            Error::Object(e) => &e.source,
            Error::Status { source, .. } | Error::Discovery(source) => source,
            Error::NotLeader => return None,
        };
        match source {
            kube::Error::Api(s) if s.code == 429 => Some(Duration::from_secs(
                s.details
                    .as_ref()
                    .map(|d| u64::from(d.retry_after_seconds))
                    .filter(|s| *s > 0)
                    .unwrap_or(1),
            )),
            _ => None,
        }
    }
}

/// An Application as watched: the object, or why it does not deserialize (with its metadata).
pub type GuardedApplication = DeserializeGuard<Application>;

/// A Blueprint as watched: the object, or why it does not deserialize (with its metadata).
pub type GuardedBlueprint = DeserializeGuard<Blueprint>;

/// A Blueprint compiled once per revision and shared by every Application that uses it.
type Compiled = Arc<Result<LoadedBlueprint, Problems>>;

/// Everything a reconcile reads and shares.
pub struct Context {
    client: Client,
    served: Served,
    settings: Settings,
    children: Children,
    users: BlueprintUsers,
    blueprints: Store<GuardedBlueprint>,
    /// Why each Blueprint that does not deserialize does not, by name: its resourceVersion and the field.
    unreadable: Mutex<HashMap<String, (String, String)>>,
    compiled: Mutex<HashMap<String, (String, Compiled)>>,
    applied: Mutex<HashMap<String, AppliedState>>,
    failures: Mutex<HashMap<ObjectRef<Application>, u32>>,
    /// Since when each Application (by uid) waits for its Blueprint's first revision.
    awaiting: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
    recorder: events::Publisher,
    gate: WriteGate,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("served", &self.served)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Drops what the operator remembers of a deleted Application: its applied state, its wait for a first
    /// revision, its metrics.
    fn forget(&self, uid: &str) {
        lock(&self.applied).remove(uid);
        lock(&self.awaiting).remove(uid);
        self.metrics.conditions(uid, None);
        self.metrics.invalid(uid, false);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Wrote children (applied or pruned).
    Wrote,
    /// Nothing to write to children.
    Unchanged,
    /// Could not render or apply; reported in status, objects left as they were.
    Failed,
    /// A name collision; retried later (the other object is not watched).
    Collision,
    /// Nothing rendered or written yet: the Blueprint's first revision is not recorded; looked at again soon.
    AwaitingRevision,
}

/// How long an Application waits for the first revision of its Blueprint's rollout before it reports that none is
/// recorded. The rollout loop records it within seconds of the Blueprint's creation.
const FIRST_REVISION_GRACE: Duration = Duration::from_secs(30);

impl Context {
    /// A context without watches, for tests that drive `reconcile_app` against a fake API server.
    #[cfg(test)]
    fn for_tests(client: Client, blueprints: Store<GuardedBlueprint>, gate: WriteGate) -> Context {
        let reporter = Reporter {
            controller: "plinth".into(),
            instance: Some("test".into()),
        };
        Context {
            recorder: events::Publisher::new(client.clone(), reporter),
            client,
            served: Served::newest(),
            children: Children::default(),
            users: BlueprintUsers::default(),
            blueprints,
            unreadable: Mutex::default(),
            compiled: Mutex::default(),
            applied: Mutex::default(),
            failures: Mutex::default(),
            awaiting: Mutex::default(),
            metrics: Arc::new(Metrics::new()),
            gate,
            settings: Settings::default(),
        }
    }

    fn compiled(&self, bp: &Blueprint) -> Compiled {
        // One entry per revision's content: Applications of one Blueprint may run different revisions during a rollout.
        let name = format!("{}@{}", bp.name_any(), crate::rollout::revision::hash(&bp.spec));
        let version = format!(
            "{}/{}",
            bp.metadata.uid.as_deref().unwrap_or_default(),
            bp.metadata.generation.unwrap_or_default()
        );
        let mut cache = lock(&self.compiled);
        if let Some((v, loaded)) = cache.get(&name)
            && *v == version
        {
            return Arc::clone(loaded);
        }
        let loaded = Arc::new(LoadedBlueprint::from_object(bp));
        cache.insert(name, (version, Arc::clone(&loaded)));
        loaded
    }

    fn write_allowed(&self) -> Result<(), Error> {
        if self.gate.open() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    fn live(&self, namespace: &str) -> impl Fn(&ChildKey) -> Option<ChildMeta> + '_ {
        let namespace = namespace.to_owned();
        move |k: &ChildKey| self.children.get(k.kind, &namespace, &k.name)
    }

    /// Reports an Application that does not deserialize: a log line, the `plinth_invalid_applications` gauge, a
    /// Warning Event and `Degraded=True` (reason `InvalidSpec`) in its status, written by a merge patch that does
    /// not need the object to deserialize. Nothing else is touched: the objects applied before stay as they are.
    async fn report_invalid(&self, invalid: &kube::core::error_boundary::InvalidObject) -> Result<(), Error> {
        let meta = &invalid.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let uid = meta.uid.clone().unwrap_or_default();
        self.metrics.invalid(&uid, true);
        let raw: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &namespace,
            &kube::core::ApiResource::erase::<Application>(&()),
        );
        // The raw object names the field that does not fit; without it, the guard's message.
        let object = raw.get_opt(&name).await.map_err(|source| Error::Status {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
        let Some(object) = object else { return Ok(()) };
        let problem = status::invalid_object(&object.data).unwrap_or_else(|| invalid.error.clone());
        let message = format!(
            "the stored Application does not match the schema this operator reads: {problem}; fix that field \
             (`kubectl edit application {name} -n {namespace}`); the objects applied before are left as they are"
        );
        tracing::warn!(application = %format!("{namespace}/{name}"), error = %problem, "an Application does not deserialize; reported, not reconciled");
        let previous = status::raw_status(&object.data);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let outcome = Outcome::NotRendered {
            reason: "InvalidSpec",
            message,
        };
        let next = status::compute(&previous, meta.generation.unwrap_or_default(), &outcome, &now);
        if previous != next {
            self.write_allowed()?;
            let api: Api<GuardedApplication> = Api::namespaced(self.client.clone(), &namespace);
            status::patch_if_changed(&api, &name, &previous, &next)
                .await
                .map_err(|source| Error::Status {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            let events: Vec<_> = status::transitions(&previous, &next)
                .into_iter()
                .filter(|c| c.type_ == plinth_api::conditions::DEGRADED)
                .map(events::for_transition)
                .collect();
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(plinth_api::API_VERSION.to_owned()),
                kind: Some("Application".to_owned()),
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..Default::default()
            };
            if !events.is_empty() && self.gate.open() {
                self.recorder.publish(&reference, events).await;
            }
        }
        Ok(())
    }

    /// Writes the status (when changed) and publishes Events for transitions and actions.
    async fn report(
        &self,
        app: &Application,
        outcome: &Outcome,
        mut actions: Vec<kube::runtime::events::Event>,
    ) -> Result<(), Error> {
        let namespace = app.namespace().unwrap_or_default();
        let name = app.name_any();
        let previous = app.status.clone().unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let generation = app.metadata.generation.unwrap_or_default();
        let next = status::compute(&previous, generation, outcome, &now);
        if previous != next {
            self.write_allowed()?;
            let api: Api<Application> = Api::namespaced(self.client.clone(), &namespace);
            status::patch_if_changed(&api, &name, &previous, &next)
                .await
                .map_err(|source| Error::Status {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
        }
        let changed = status::transitions(&previous, &next);
        if let Some(first) = changed
            .iter()
            .find(|c| c.type_ == plinth_api::conditions::DEGRADED && c.status == "True")
            .or_else(|| changed.iter().find(|c| c.type_ == plinth_api::conditions::READY))
            .or_else(|| changed.first())
        {
            let mut e = events::for_transition(first);
            let others: Vec<String> = changed
                .iter()
                .filter(|c| c.type_ != first.type_)
                .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
                .collect();
            if !others.is_empty()
                && let Some(note) = e.note.as_mut()
            {
                note.push_str(&format!("; also {}", others.join(", ")));
            }
            actions.push(e);
        }
        if !actions.is_empty() && self.gate.open() {
            self.recorder.publish(&app.object_ref(&()), actions).await;
        }
        self.metrics.conditions(
            app.metadata.uid.as_deref().unwrap_or_default(),
            Some(
                next.conditions
                    .iter()
                    .filter(|c| plinth_api::conditions::ALL.contains(&c.type_.as_str()))
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect(),
            ),
        );
        Ok(())
    }
}

/// The Application's reference, from its metadata (also for an object that does not deserialize).
/// The field of a stored Blueprint that does not deserialize, read from the raw object; the guard's own message
/// when the object cannot be read.
async fn unreadable_blueprint(client: &Client, name: &str, fallback: &str) -> String {
    let raw: Api<DynamicObject> = Api::all_with(client.clone(), &kube::core::ApiResource::erase::<Blueprint>(&()));
    match raw.get_opt(name).await {
        Ok(Some(object)) => {
            status::invalid_fields::<plinth_api::BlueprintSpec, plinth_api::BlueprintStatus>(&object.data)
                .unwrap_or_else(|| fallback.to_owned())
        }
        Ok(None) => fallback.to_owned(),
        Err(e) => {
            tracing::debug!(blueprint = %name, error = %e, "reading the raw Blueprint");
            fallback.to_owned()
        }
    }
}

fn app_ref(app: &GuardedApplication) -> ObjectRef<Application> {
    let meta = app.meta();
    ObjectRef::new(meta.name.as_deref().unwrap_or_default()).within(meta.namespace.as_deref().unwrap_or_default())
}

async fn reconcile(guarded: Arc<GuardedApplication>, ctx: Arc<Context>) -> Result<Action, Error> {
    let oref = app_ref(&guarded);
    ctx.metrics.started(&oref);
    let started = Instant::now();
    let app = match &guarded.0 {
        Ok(app) => app,
        Err(invalid) => {
            let result = ctx.report_invalid(invalid).await;
            ctx.metrics
                .finished(if result.is_ok() { "invalid" } else { "error" }, started.elapsed());
            result?;
            lock(&ctx.failures).remove(&oref);
            // Nothing to retry: the next change of the object brings it back.
            return Ok(Action::await_change());
        }
    };
    ctx.metrics
        .invalid(app.metadata.uid.as_deref().unwrap_or_default(), false);
    let result = reconcile_app(app, &ctx).await;
    let label = match &result {
        Ok(Done::Wrote) => "applied",
        Ok(Done::Unchanged) => "unchanged",
        Ok(Done::Failed | Done::Collision) => "failed",
        Ok(Done::AwaitingRevision) => "waiting",
        Err(_) => "error",
    };
    ctx.metrics.finished(label, started.elapsed());
    let done = result?;
    lock(&ctx.failures).remove(&oref);
    Ok(match done {
        Done::Collision => Action::requeue(jitter(Duration::from_secs(30), 0.2)),
        // The rollout's status change triggers a reconcile at once; this is the fallback.
        Done::AwaitingRevision => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(jitter(ctx.settings.resync, 0.1)),
    })
}

fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(rand::random_range((1.0 - spread)..(1.0 + spread)))
}

fn error_policy(app: Arc<GuardedApplication>, error: &Error, ctx: Arc<Context>) -> Action {
    let oref = app_ref(&app);
    let n = {
        let mut failures = lock(&ctx.failures);
        let n = failures.entry(oref.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let exp = ctx
        .settings
        .backoff_base
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(ctx.settings.backoff_max);
    let mut delay = jitter(exp, 0.5);
    if let Some(after) = error.retry_after() {
        delay = delay.max(after);
    }
    ctx.metrics.error(error.category());
    tracing::warn!(application = %oref, error = %error_chain(error), attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

async fn reconcile_app(app: &Application, ctx: &Context) -> Result<Done, Error> {
    if app.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner references.
        return Ok(Done::Unchanged);
    }
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let not_rendered = |reason: &'static str, message: String| Outcome::NotRendered { reason, message };

    // 1. Validate and render: pure, no writes; a failure leaves every applied object as it is.
    let bp_name = app.spec.blueprint.clone();
    let Some(guarded) = ctx.blueprints.get(&ObjectRef::new(&bp_name)) else {
        let mut known: Vec<String> = ctx
            .blueprints
            .state()
            .iter()
            .filter_map(|b| b.meta().name.clone())
            .collect();
        known.sort();
        let message = format!(
            "no Blueprint named {bp_name:?} in the cluster (there are: {}); create it, e.g. `plinth blueprints export {bp_name} | kubectl apply -f -`, or change spec.blueprint",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
        ctx.report(app, &not_rendered("BlueprintNotFound", message), Vec::new())
            .await?;
        return Ok(Done::Failed);
    };
    let bp = match &guarded.0 {
        Ok(bp) => Arc::new(bp.clone()),
        Err(invalid) => {
            let problem = lock(&ctx.unreadable)
                .get(&bp_name)
                .filter(|(version, _)| Some(version) == invalid.metadata.resource_version.as_ref())
                .map_or_else(|| invalid.error.clone(), |(_, problem)| problem.clone());
            let message = format!(
                "the stored Blueprint {bp_name:?} does not match the schema this operator reads: {problem}; fix that \
                 field (`kubectl edit blueprint {bp_name}`); the objects applied before are left as they are"
            );
            ctx.report(app, &not_rendered("BlueprintInvalid", message), Vec::new())
                .await?;
            return Ok(Done::Failed);
        }
    };
    // A Blueprint with a rollout: its Applications run only revisions the rollout recorded. Until the first is
    // recorded, they wait (nothing written), so that an edit in the seconds after the Blueprint's creation is not
    // applied to all of them at once as the content of a revision they never ran.
    if app.spec.blueprint_revision.is_none()
        && bp.spec.rollout.is_some()
        && bp.status.as_ref().and_then(|s| s.rollout.as_ref()).is_none()
    {
        let since = *lock(&ctx.awaiting).entry(uid.clone()).or_insert_with(Instant::now);
        if since.elapsed() < FIRST_REVISION_GRACE {
            return Ok(Done::AwaitingRevision);
        }
        let message = format!(
            "Blueprint {bp_name:?} has a rollout but no recorded revision after {}s: the operator records it (see its \
             log; it needs to create ControllerRevisions in {})",
            FIRST_REVISION_GRACE.as_secs(),
            crate::rollout::controller::revisions_namespace()
        );
        ctx.report(app, &not_rendered("RevisionNotRecorded", message), Vec::new())
            .await?;
        return Ok(Done::Failed);
    }
    lock(&ctx.awaiting).remove(&uid);
    // The revision this Application runs: its pin, or where the Blueprint's rollout has it (`crate::rollout`).
    let namespace_of_revisions = crate::rollout::controller::revisions_namespace();
    let (revision, bp) =
        match crate::rollout::controller::spec_for(&ctx.client, &namespace_of_revisions, app, &bp).await {
            Ok((revision, spec)) => (revision, Arc::new(Blueprint { spec, ..(*bp).clone() })),
            Err(e) => {
                ctx.report(app, &not_rendered("RevisionNotFound", error_chain(&e)), Vec::new())
                    .await?;
                return Ok(Done::Failed);
            }
        };
    let loaded = ctx.compiled(&bp);
    let loaded = match &*loaded {
        Ok(l) => l,
        Err(problems) => {
            let message = format!("Blueprint {bp_name:?} does not load: {}", status::describe(&problems.0));
            ctx.report(app, &not_rendered("BlueprintInvalid", message), Vec::new())
                .await?;
            return Ok(Done::Failed);
        }
    };
    let rendered = match crate::render::render(app, loaded, &ctx.settings.platform) {
        Ok(r) => r,
        Err(problems) => {
            let reason = status::reason_for(problems.0.first().map_or("", |p| p.code));
            ctx.report(app, &not_rendered(reason, status::describe(&problems.0)), Vec::new())
                .await?;
            return Ok(Done::Failed);
        }
    };
    let blueprint = BlueprintRef {
        name: bp_name.clone(),
        revision: revision.or(bp.metadata.generation),
        hash: Some(rendered.blueprint_hash.clone()),
    };
    let desired = match desired::build(&rendered, app, &ctx.served) {
        Ok(d) => d,
        Err(e) => {
            ctx.report(app, &not_rendered("KindNotServed", e.to_string()), Vec::new())
                .await?;
            return Ok(Done::Failed);
        }
    };

    // 2. Decide what to write, from the index; read only what the index cannot tell.
    let owned = ctx.children.owned_by(&uid);
    let memory = lock(&ctx.applied).get(&uid).cloned();
    let base = apply::baseline(memory.as_ref(), app.status.as_ref(), &desired, &owned);
    let mut verdicts = apply::plan(&desired, ctx.live(&namespace), base.as_ref(), &uid);
    for (o, v) in desired.objects.iter().zip(verdicts.iter_mut()) {
        if *v == Verdict::Confirm {
            let found = apply::read(&ctx.client, &ctx.served, &o.key, &namespace).await?;
            let recorded = base.as_ref().and_then(|b| b.objects.get(&o.key));
            *v = apply::confirm(found.as_ref(), recorded, o, &uid);
        }
    }
    let collisions: Vec<String> = desired
        .objects
        .iter()
        .zip(&verdicts)
        .filter_map(|(o, v)| match v {
            Verdict::Collision(why) => Some(format!("{} already exists and {why}", o.key)),
            _ => None,
        })
        .collect();
    if !collisions.is_empty() {
        let message = format!(
            "{}; Plinth never changes an object it does not own: rename or delete it, or rename the Application",
            collisions.join("; ")
        );
        let event = events::action("NameCollision", message.clone(), true);
        let outcome = Outcome::NotApplied {
            blueprint,
            reason: "NameCollision",
            message,
        };
        let previous = app.status.clone().unwrap_or_default();
        let repeat = previous
            .conditions
            .iter()
            .any(|c| c.type_ == plinth_api::conditions::APPLIED && c.reason == "NameCollision");
        ctx.report(app, &outcome, if repeat { Vec::new() } else { vec![event] })
            .await?;
        return Ok(Done::Collision);
    }

    // 3. Apply in dependency order.
    let mut state = AppliedState {
        hash: desired.hash.clone(),
        objects: base.map(|b| b.objects).unwrap_or_default(),
    };
    let mut wrote: Vec<(ChildKey, Why)> = Vec::new();
    for (o, v) in desired.objects.iter().zip(&verdicts) {
        let Verdict::Apply(why) = v else { continue };
        ctx.write_allowed()?;
        let applied = apply::object(&ctx.client, &ctx.served, &namespace, o).await;
        let fields = match applied {
            Ok(f) => f,
            Err(e) => {
                lock(&ctx.applied).insert(uid.clone(), state);
                let message = error_chain(&e);
                let outcome = Outcome::NotApplied {
                    blueprint,
                    reason: "ApplyFailed",
                    message,
                };
                // Best effort: the error itself is what gets retried.
                if let Err(report) = ctx.report(app, &outcome, Vec::new()).await {
                    tracing::debug!(error = %error_chain(&report), "could not report the apply failure");
                }
                return Err(e.into());
            }
        };
        let action = match why {
            Why::Create => "create",
            Why::Changed => "update",
            Why::Drifted => "drift",
        };
        ctx.metrics.object(o.key.kind.name(), action);
        state.objects.insert(o.key.clone(), Recorded::new(&o.hash, &fields));
        wrote.push((o.key.clone(), *why));
    }

    // 4. Prune what this render no longer produces: owned objects only, in reverse order.
    let pruned = prune::select(&desired, &owned, &name, &uid);
    for (key, meta) in &pruned {
        ctx.write_allowed()?;
        prune::delete(&ctx.client, &ctx.served, &namespace, key, meta).await?;
        ctx.metrics.object(key.kind.name(), "prune");
    }
    state.objects.retain(|k, _| desired.objects.iter().any(|o| o.key == *k));
    let owned_fields_hash = state.fields_hash();
    lock(&ctx.applied).insert(uid.clone(), state);

    // 5. Status and Events.
    let mut actions = Vec::new();
    let list = |filter: &dyn Fn(Why) -> bool| -> Vec<String> {
        wrote
            .iter()
            .filter(|(_, w)| filter(*w))
            .map(|(k, _)| k.to_string())
            .collect()
    };
    let drifted = list(&|w| w == Why::Drifted);
    let changed = list(&|w| w != Why::Drifted);
    if !changed.is_empty() {
        actions.push(events::action(
            "Applied",
            format!("applied {}", changed.join(", ")),
            false,
        ));
    }
    if !drifted.is_empty() {
        actions.push(events::action(
            "DriftCorrected",
            format!(
                "restored what Plinth set on {} (changed or deleted by hand)",
                drifted.join(", ")
            ),
            true,
        ));
    }
    if !pruned.is_empty() {
        let names: Vec<String> = pruned.iter().map(|(k, _)| k.to_string()).collect();
        actions.push(events::action(
            "Pruned",
            format!("deleted {}, no longer rendered", names.join(", ")),
            false,
        ));
    }
    let live = ctx.live(&namespace);
    let rollout_failure = desired
        .objects
        .iter()
        .filter(|o| o.key.kind == Kind::Deployment)
        .filter_map(|o| live(&o.key).and_then(|m| m.rollout).and_then(|r| r.failure))
        .next();
    let outcome = Outcome::Applied {
        blueprint,
        resources: status::resources(&desired, &live),
        replicas: status::replicas(&desired, &live),
        applied_hash: desired.hash.clone(),
        owned_fields_hash,
        rollout_failure,
    };
    ctx.report(app, &outcome, actions).await?;
    tracing::debug!(application = %format!("{namespace}/{name}"), written = wrote.len(), pruned = pruned.len(), "reconciled");
    Ok(if wrote.is_empty() && pruned.is_empty() {
        Done::Unchanged
    } else {
        Done::Wrote
    })
}

fn child_event<K>(ev: Event<K>, read: impl Fn(&K) -> (String, String, ChildMeta)) -> ChildEvent {
    match ev {
        Event::Apply(o) => {
            let (namespace, name, meta) = read(&o);
            ChildEvent::Applied { namespace, name, meta }
        }
        Event::InitApply(o) => {
            let (namespace, name, meta) = read(&o);
            ChildEvent::InitApplied { namespace, name, meta }
        }
        Event::Delete(o) => {
            let (namespace, name, _) = read(&o);
            ChildEvent::Deleted { namespace, name }
        }
        Event::Init => ChildEvent::Init,
        Event::InitDone => ChildEvent::InitDone,
    }
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Writes only while `gate` is open. `health.ready` turns true once the caches are synced.
///
/// # Errors
/// When the API server's discovery fails at start.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    gate: WriteGate,
    health: Arc<http::Health>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let served = Served::discover(&client).await.map_err(Error::Discovery)?;
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE));
    let (bp_store, bp_writer) = reflector::store::<GuardedBlueprint>();
    let reporter = Reporter {
        controller: "plinth".into(),
        instance: Some(settings.instance.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: events::Publisher::new(client.clone(), reporter),
        client: client.clone(),
        served: served.clone(),
        children: Children::default(),
        users: BlueprintUsers::default(),
        blueprints: bp_store.clone(),
        unreadable: Mutex::default(),
        compiled: Mutex::default(),
        applied: Mutex::default(),
        failures: Mutex::default(),
        awaiting: Mutex::default(),
        metrics: Arc::clone(&metrics),
        gate,
        settings: settings.clone(),
    });
    let (trigger, triggers) = mpsc::unbounded_channel::<ObjectRef<Application>>();
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(0usize);
    let synced_tx = Arc::new(synced_tx);
    let mut tasks = Vec::new();
    // Rollouts of Blueprint changes: revisions and the Blueprints' status.rollout (`crate::rollout`), written while leading.
    {
        let mut driver =
            crate::rollout::controller::Driver::new(client.clone(), crate::rollout::controller::revisions_namespace());
        driver.scope.clone_from(&settings.namespace);
        driver.prometheus = std::env::var("PLINTH_PROMETHEUS_URL").ok().filter(|s| !s.is_empty());
        driver.gate = Some(ctx.gate.clone());
        tasks.push(tokio::spawn(driver.run(Duration::from_secs(2), std::future::pending())));
    }
    let mut expected = 1;

    // Blueprints: a change of generation (or a deletion) re-renders exactly the Applications that use it.
    {
        let (ctx, trigger, synced, client) = (
            Arc::clone(&ctx),
            trigger.clone(),
            Arc::clone(&synced_tx),
            client.clone(),
        );
        let stream = watcher(Api::<GuardedBlueprint>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(bp_writer);
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut first = true;
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let changed = match ev {
                    Ok(Event::Apply(guarded) | Event::InitApply(guarded)) => {
                        let name = guarded.meta().name.clone().unwrap_or_default();
                        let version = match &guarded.0 {
                            // A new spec, or a rollout step that moved Applications (`crate::rollout`).
                            Ok(bp) => {
                                lock(&ctx.unreadable).remove(&name);
                                crate::rollout::controller::trigger_key(bp)
                            }
                            Err(invalid) => {
                                let version = invalid.metadata.resource_version.clone().unwrap_or_default();
                                let problem = unreadable_blueprint(&client, &name, &invalid.error).await;
                                tracing::warn!(blueprint = %name, error = %problem, "a Blueprint does not deserialize; its Applications report it and keep what they run");
                                lock(&ctx.unreadable).insert(name.clone(), (version.clone(), problem));
                                format!("unreadable/{version}")
                            }
                        };
                        (seen.insert(name.clone(), version.clone()) != Some(version)).then_some(name)
                    }
                    Ok(Event::Delete(guarded)) => {
                        let name = guarded.meta().name.clone().unwrap_or_default();
                        seen.remove(&name);
                        lock(&ctx.unreadable).remove(&name);
                        Some(name)
                    }
                    Ok(Event::InitDone) => {
                        if std::mem::take(&mut first) {
                            synced.send_modify(|n| *n += 1);
                        }
                        None
                    }
                    Ok(Event::Init) => None,
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "watching Blueprints");
                        None
                    }
                };
                for app in changed.map(|name| ctx.users.users(&name)).unwrap_or_default() {
                    ctx.metrics.queued(app.clone());
                    let _ = trigger.send(app);
                }
            }
        }));
    }

    // The kinds Plinth creates: metadata only, except Deployments (their rollout state).
    for kind in Kind::ALL {
        let Some(ar) = served.resource(kind) else { continue };
        expected += 1;
        let (ctx, trigger, synced) = (Arc::clone(&ctx), trigger.clone(), Arc::clone(&synced_tx));
        let config = managed.clone();
        let events: futures::stream::BoxStream<'static, Result<ChildEvent, watcher::Error>> =
            if kind == Kind::Deployment {
                let api: Api<Deployment> = match &settings.namespace {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                watcher(api, config)
                    .default_backoff()
                    .map_ok(|ev| {
                        child_event(ev, |d: &Deployment| {
                            (
                                d.namespace().unwrap_or_default(),
                                d.name_any(),
                                ChildMeta::from_deployment(d),
                            )
                        })
                    })
                    .boxed()
            } else {
                // `PartialObjectMeta`: list and watch ask the server for metadata only.
                let api: Api<PartialObjectMeta<DynamicObject>> = match &settings.namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                watcher(api, config)
                    .default_backoff()
                    .map_ok(|ev| {
                        child_event(ev, |o| {
                            (
                                o.metadata.namespace.clone().unwrap_or_default(),
                                o.metadata.name.clone().unwrap_or_default(),
                                ChildMeta::from_meta(&o.metadata),
                            )
                        })
                    })
                    .boxed()
            };
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            let mut events = events;
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        let done = ev == ChildEvent::InitDone;
                        for (namespace, name) in ctx.children.observe(kind, ev) {
                            let app = ObjectRef::new(&name).within(&namespace);
                            ctx.metrics.queued(app.clone());
                            let _ = trigger.send(app);
                        }
                        if done && std::mem::take(&mut first) {
                            synced.send_modify(|n| *n += 1);
                        }
                    }
                    Err(error) => tracing::warn!(kind = kind.name(), error = %error_chain(&error), "watching children"),
                }
            }
        }));
    }

    // Applications: spec changes (generation) trigger; status writes do not.
    let apps: Api<GuardedApplication> = match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store::<GuardedApplication>();
    let app_ctx = Arc::clone(&ctx);
    let app_stream = watcher(apps, watcher::Config::default())
        .default_backoff()
        .modify(|a: &mut GuardedApplication| {
            // Only spec, status and identity are read: keep the cache small.
            let meta = a.meta_mut();
            meta.managed_fields = None;
            if let Some(ann) = meta.annotations.as_mut() {
                ann.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .reflect(writer)
        .inspect_ok(move |ev| match ev {
            Event::Apply(a) | Event::InitApply(a) => match &a.0 {
                Ok(app) => app_ctx.users.set(app_ref(a), &app.spec.blueprint),
                Err(_) => app_ctx.users.remove(&app_ref(a)),
            },
            Event::Delete(a) => {
                app_ctx.users.remove(&app_ref(a));
                app_ctx.forget(a.meta().uid.as_deref().unwrap_or_default());
            }
            Event::Init | Event::InitDone => {}
        })
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default())
        .inspect_ok({
            let metrics = Arc::clone(&metrics);
            move |a| metrics.queued(app_ref(a))
        });

    // Start reconciling once the children and Blueprints are known, so nothing is mistaken for missing.
    tracing::info!(kinds = expected - 1, "waiting for the caches to sync");
    while *synced_rx.borrow_and_update() < expected {
        if synced_rx.changed().await.is_err() {
            break;
        }
    }
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(children = ctx.children.len(), "caches synced; reconciling");

    let mut triggers = triggers;
    let trigger_stream = futures::stream::poll_fn(move |cx| triggers.poll_recv(cx)).map(|r: ObjectRef<Application>| {
        ObjectRef::<GuardedApplication>::new(&r.name).within(r.namespace.as_deref().unwrap_or_default())
    });
    Controller::for_stream(app_stream, store)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .reconcile_on(trigger_stream)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error_chain(&error), "controller");
            }
        })
        .await;
    for t in tasks {
        t.abort();
    }
    health.ready.store(false, Ordering::Relaxed);
    tracing::info!("controller stopped");
    Ok(())
}
