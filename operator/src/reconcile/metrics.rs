//! Metrics in the Prometheus text format: reconciles, errors, durations, queue depth, Applications by condition, API requests by verb.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use plinth_api::Application;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: outcome of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `applied` (something written), `unchanged` (nothing to write), `failed` (reported in status), `error` (retried).
    pub result: String,
}

/// Label: a stable error category (the Condition reason or API error class).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// CamelCase reason.
    pub reason: String,
}

/// Label: a kind and what happened to an object of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Object kind.
    pub kind: String,
    /// `create`, `update`, `drift`, `prune`.
    pub action: String,
}

/// Label: a condition type and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Condition type.
    pub condition: String,
    /// `True` or `False`.
    pub status: String,
}

/// Label: HTTP verb of an API request (`WATCH` for watches).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// GET, WATCH, POST, PUT, PATCH, DELETE.
    pub verb: String,
}

/// Every metric of the operator, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile failures by reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Objects written or deleted, by kind and action.
    pub objects: Family<ObjectLabels, Counter>,
    /// Applications by condition type and status.
    pub applications: Family<ConditionLabels, Gauge>,
    /// Requests to the API server by verb.
    pub api_requests: Family<VerbLabels, Counter>,
    /// Applications waiting for a reconcile.
    pub queue_depth: Gauge,
    /// Reconciles running now.
    pub in_flight: Gauge<i64, AtomicI64>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Seconds API writes waited for the client-side rate limit.
    pub throttled: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Applications whose stored object does not deserialize (reported, not reconciled).
    pub invalid_applications: Gauge,
    invalid: Mutex<HashSet<String>>,
    pending: Mutex<HashSet<ObjectRef<Application>>>,
    /// Per Application uid, its (condition type, status): static strings, no allocation per Application.
    states: Mutex<HashMap<String, Vec<(&'static str, &'static str)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Registers every metric under the `plinth` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("plinth");
        let m = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            objects: Family::default(),
            applications: Family::default(),
            api_requests: Family::default(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            leader: Gauge::default(),
            invalid_applications: Gauge::default(),
            throttled: Counter::default(),
            invalid: Mutex::default(),
            pending: Mutex::default(),
            states: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles of Applications by result",
            m.reconciles.clone(),
        );
        registry.register("reconcile_errors", "Failed reconciles by reason", m.errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Application",
            m.duration.clone(),
        );
        registry.register(
            "objects",
            "Objects written or deleted, by kind and action",
            m.objects.clone(),
        );
        registry.register(
            "applications",
            "Applications by condition type and status",
            m.applications.clone(),
        );
        registry.register(
            "api_requests",
            "Requests the operator sent to the API server, by verb",
            m.api_requests.clone(),
        );
        registry.register(
            "queue_depth",
            "Applications waiting for a reconcile",
            m.queue_depth.clone(),
        );
        registry.register("reconciles_in_flight", "Reconciles running now", m.in_flight.clone());
        registry.register(
            "leader",
            "1 while this replica may write (holds the leader Lease)",
            m.leader.clone(),
        );
        registry.register(
            "api_throttled_seconds",
            "Seconds API writes waited for the client-side rate limit (--api-qps, --api-burst)",
            m.throttled.clone(),
        );
        registry.register(
            "invalid_applications",
            "Applications whose stored object does not deserialize: reported in their status, not reconciled",
            m.invalid_applications.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// An Application was asked to reconcile.
    pub fn queued(&self, app: ObjectRef<Application>) {
        let mut pending = lock(&self.pending);
        pending.insert(app);
        self.queue_depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
    }

    /// A reconcile of `app` starts.
    pub fn started(&self, app: &ObjectRef<Application>) {
        let mut pending = lock(&self.pending);
        pending.remove(app);
        self.queue_depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        self.in_flight.inc();
    }

    /// A reconcile ends.
    pub fn finished(&self, result: &str, took: Duration) {
        self.in_flight.dec();
        self.duration.observe(took.as_secs_f64());
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// A reconcile failed with `reason`.
    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// An object was written or deleted.
    pub fn object(&self, kind: &str, action: &str) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: kind.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    /// Records the conditions of the Application with `uid` (`None`: it is gone). Only Plinth's condition types
    /// and the statuses `True`, `False` and `Unknown` are counted.
    pub fn conditions(&self, uid: &str, conditions: Option<Vec<(String, String)>>) {
        let known = |(condition, status): (String, String)| {
            let condition = plinth_api::conditions::ALL.iter().find(|c| **c == condition)?;
            let status = ["True", "False", "Unknown"].into_iter().find(|s| *s == status)?;
            Some((*condition, status))
        };
        let labels = |(condition, status): (&str, &str)| ConditionLabels {
            condition: condition.to_owned(),
            status: status.to_owned(),
        };
        let mut states = lock(&self.states);
        let old = match conditions {
            Some(new) => {
                let new: Vec<(&'static str, &'static str)> = new.into_iter().filter_map(known).collect();
                for pair in &new {
                    self.applications.get_or_create(&labels(*pair)).inc();
                }
                states.insert(uid.to_owned(), new)
            }
            None => states.remove(uid),
        };
        for pair in old.unwrap_or_default() {
            self.applications.get_or_create(&labels(pair)).dec();
        }
    }

    /// Records whether the Application with `uid` does not deserialize (`false` also when it is gone).
    pub fn invalid(&self, uid: &str, invalid: bool) {
        let mut set = lock(&self.invalid);
        let changed = if invalid {
            set.insert(uid.to_owned())
        } else {
            set.remove(uid)
        };
        if changed {
            self.invalid_applications
                .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        }
    }

    /// Counts one request to the API server.
    pub fn request<B>(&self, req: &http::Request<B>) {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = if watch { "WATCH" } else { req.method().as_str() };
        self.api_requests
            .get_or_create(&VerbLabels { verb: verb.to_owned() })
            .inc();
    }

    /// Write requests (POST, PUT, PATCH, DELETE) sent so far.
    pub fn writes(&self) -> u64 {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|v| {
                self.api_requests
                    .get_or_create(&VerbLabels { verb: (*v).to_owned() })
                    .get()
            })
            .sum()
    }
}

/// A client whose requests are counted in `metrics`, and whose writes are held to `limit`
/// ([`super::throttle`]).
///
/// # Errors
/// When the client cannot be built from `config`.
pub fn counted_client(
    config: kube::Config,
    metrics: &Arc<Metrics>,
    limit: super::throttle::WriteLimit,
) -> Result<kube::Client, kube::Error> {
    let m = Arc::clone(metrics);
    let counted = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        m.request(&req);
        req
    });
    // Outermost: a write is counted when it is sent, after its wait.
    let throttled = super::throttle::ThrottleLayer::<kube::client::Body>::new(limit, Some(Arc::clone(metrics)));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counted)
        .with_layer(&throttled)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_metrics() {
        let m = Metrics::new();
        m.queued(ObjectRef::new("a").within("ns"));
        m.queued(ObjectRef::new("a").within("ns"));
        m.queued(ObjectRef::new("b").within("ns"));
        assert_eq!(m.queue_depth.get(), 2, "one entry per Application, like the scheduler");
        m.started(&ObjectRef::new("a").within("ns"));
        m.finished("unchanged", Duration::from_millis(3));
        m.error("TemplateError");
        m.conditions("u1", Some(vec![("Ready".into(), "True".into())]));
        m.conditions("u1", Some(vec![("Ready".into(), "False".into())]));
        m.request(
            &http::Request::get("/api/v1/configmaps?watch=true")
                .body(())
                .expect("request"),
        );
        m.request(
            &http::Request::patch("/api/v1/namespaces/a/configmaps/b")
                .body(())
                .expect("request"),
        );
        assert_eq!(m.writes(), 1);
        let text = m.encode();
        for line in [
            "plinth_reconciles_total{result=\"unchanged\"} 1",
            "plinth_reconcile_errors_total{reason=\"TemplateError\"} 1",
            "plinth_queue_depth 1",
            "plinth_applications{condition=\"Ready\",status=\"False\"} 1",
            "plinth_applications{condition=\"Ready\",status=\"True\"} 0",
            "plinth_api_requests_total{verb=\"WATCH\"} 1",
            "plinth_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.invalid("u2", true);
        m.invalid("u2", true);
        assert!(m.encode().contains("plinth_invalid_applications 1"));
        m.invalid("u2", false);
        assert!(m.encode().contains("plinth_invalid_applications 0"));
        m.conditions("u1", None);
        assert!(
            m.encode()
                .contains("plinth_applications{condition=\"Ready\",status=\"False\"} 0")
        );
    }
}
