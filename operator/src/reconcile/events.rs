//! Kubernetes Events: one per condition transition and per action taken (applied, pruned, drift corrected), none when nothing happened.
//!
//! Published by [`Publisher`], which creates each `events.k8s.io/v1` Event and keeps nothing: Plinth publishes only
//! transitions, so there is nothing to aggregate into a series, and kube's `Recorder` would keep every Event it
//! published (two per Application at creation) in memory for minutes, scanning them all on every publish.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// The Event for a condition transition: a Warning when it reports a problem.
pub fn for_transition(c: &Condition) -> Event {
    let bad = match c.type_.as_str() {
        "Degraded" => c.status == "True",
        "Progressing" => false,
        _ => c.status == "False" && !matches!(c.reason.as_str(), "RolloutInProgress" | "NothingApplied"),
    };
    Event {
        type_: if bad { EventType::Warning } else { EventType::Normal },
        reason: c.reason.clone(),
        note: Some(format!("{}={}: {}", c.type_, c.status, c.message)),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// An Event for something the controller did.
pub fn action(reason: &str, note: String, warning: bool) -> Event {
    Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    }
}

/// The `events.k8s.io/v1` Event for `ev` about `reference`, reported by `reporter` at `now`.
pub fn to_object(
    reporter: &Reporter,
    ev: &Event,
    reference: &ObjectReference,
    now: k8s_openapi::jiff::Timestamp,
) -> K8sEvent {
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        note: ev.note.clone(),
        metadata: ObjectMeta {
            namespace: reference.namespace.clone(),
            // As kubectl and client-go name them: the object's name and a timestamp, unique per object.
            name: Some(format!(
                "{}.{:x}",
                reference.name.as_deref().unwrap_or(&reporter.controller),
                now.as_nanosecond()
            )),
            ..ObjectMeta::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone().unwrap_or_else(|| reporter.controller.clone())),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        ),
        related: ev.secondary.clone(),
        ..K8sEvent::default()
    }
}

/// Creates Events, remembering none of them.
#[derive(Clone)]
pub struct Publisher {
    client: kube::Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher writing with `client` as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Publisher {
        Publisher { client, reporter }
    }

    /// Publishes events; a failure is logged, never fails the reconcile.
    pub async fn publish(&self, reference: &ObjectReference, events: Vec<Event>) {
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        for e in events {
            let object = to_object(&self.reporter, &e, reference, k8s_openapi::jiff::Timestamp::now());
            if let Err(error) = api.create(&PostParams::default(), &object).await {
                tracing::warn!(%error, reason = %e.reason, "could not publish an Event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cond(t: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: status.into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn problems_are_warnings() {
        assert_eq!(
            for_transition(&cond("Degraded", "True", "TemplateError")).type_,
            EventType::Warning
        );
        assert_eq!(
            for_transition(&cond("Degraded", "False", "AsExpected")).type_,
            EventType::Normal
        );
        assert_eq!(for_transition(&cond("Ready", "True", "Ready")).type_, EventType::Normal);
        assert_eq!(
            for_transition(&cond("Ready", "False", "RolloutInProgress")).type_,
            EventType::Normal
        );
        assert_eq!(
            for_transition(&cond("Rendered", "False", "GuardrailRefused")).type_,
            EventType::Warning
        );
        let e = for_transition(&cond("Rendered", "False", "GuardrailRefused"));
        assert_eq!(e.reason, "GuardrailRefused");
        assert_eq!(e.note.as_deref(), Some("Rendered=False: m"));

        let reporter = Reporter {
            controller: "plinth".into(),
            instance: Some("plinth-0".into()),
        };
        let reference = ObjectReference {
            kind: Some("Application".into()),
            name: Some("shop".into()),
            namespace: Some("team".into()),
            ..ObjectReference::default()
        };
        let now = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("a timestamp");
        let object = to_object(&reporter, &e, &reference, now);
        assert_eq!(object.metadata.name.as_deref(), Some("shop.17979cfe362a0000"));
        assert_eq!(object.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(object.type_.as_deref(), Some("Warning"));
        assert_eq!(object.reason.as_deref(), Some("GuardrailRefused"));
        assert_eq!(object.reporting_controller.as_deref(), Some("plinth"));
        assert_eq!(object.reporting_instance.as_deref(), Some("plinth-0"));
        assert_eq!(object.regarding, Some(reference));
        assert_eq!(object.event_time, Some(MicroTime(now)));
    }
}
