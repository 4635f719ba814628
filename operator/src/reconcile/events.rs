//! Kubernetes Events: one per condition transition and per action taken (applied, pruned, drift corrected), none when nothing happened.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType, Recorder};

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

/// Publishes events; a failure is logged, never fails the reconcile.
pub async fn publish(recorder: &Recorder, reference: &ObjectReference, events: Vec<Event>) {
    for e in events {
        if let Err(error) = recorder.publish(&e, reference).await {
            tracing::warn!(%error, reason = %e.reason, "could not publish an Event");
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
    }
}
