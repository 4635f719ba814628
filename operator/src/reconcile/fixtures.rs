//! Error injection: the controller against a fake API server (tower-test) that answers scripted responses and records every request.
//!
//! Pure decisions are tested in their own modules; these tests prove what the controller does
//! when the API server fails: which requests it sends, and which it never sends.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use plinth_api::Application;
use serde_json::{Value, json};

use super::leader::WriteGate;
use super::{Context, Done, Error, FIRST_REVISION_GRACE, GuardedBlueprint, error_policy, reconcile_app};

/// What the fake API server answers: status and JSON body, from method and path.
type Script = dyn Fn(&str, &str) -> (StatusCode, Value) + Send + Sync;

/// A client whose requests go to `script`; returns it with the log of `METHOD path` lines.
fn fake_api(script: Box<Script>) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            seen.lock().expect("log").push(format!("{method} {path}"));
            let (status, body) = script(&method, &path);
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), log)
}

fn status(code: u16, reason: &str, retry_after: u32) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected {code}"), "reason": reason, "code": code,
        "details": {"retryAfterSeconds": retry_after},
    })
}

fn app() -> Application {
    serde_json::from_value(json!({
        "apiVersion": "plinth.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": {"image": "ghcr.io/acme/shop:1.0", "port": 8080},
    }))
    .expect("an Application")
}

fn blueprints() -> Store<GuardedBlueprint> {
    let (store, mut writer) = reflector::store::<GuardedBlueprint>();
    let mut web = crate::render::bundled::objects().expect("bundled")["web"].clone();
    web.metadata.uid = Some("bp-1".into());
    web.metadata.generation = Some(1);
    writer.apply_watcher_event(&Event::Apply(kube::core::DeserializeGuard(Ok(web))));
    store
}

/// Asserts that the requests other than reads wrote only the Application's status, once (and perhaps an Event).
fn assert_only_the_status_written(log: &Arc<Mutex<Vec<String>>>) {
    let requests = log.lock().expect("log").clone();
    assert!(
        requests
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .all(|r| r.ends_with("/applications/shop/status") || r.contains("/events")),
        "only the status (and an Event): {requests:#?}"
    );
    assert_eq!(
        count(
            log,
            "PATCH /apis/plinth.dev/v1alpha1/namespaces/team/applications/shop/status"
        ),
        1
    );
}

fn count(log: &Arc<Mutex<Vec<String>>>, prefix: &str) -> usize {
    log.lock()
        .expect("log")
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn an_apply_error_reports_applied_false_and_prunes_nothing() {
    let (client, log) = fake_api(Box::new(|method, path| match (method, path) {
        // Nothing exists yet.
        ("GET", _) => (StatusCode::NOT_FOUND, status(404, "NotFound", 0)),
        // The first apply (the ServiceAccount) fails.
        ("PATCH", p) if p.ends_with("/serviceaccounts/shop") => {
            (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0))
        }
        ("PATCH", p) if p.ends_with("/applications/shop/status") => {
            (StatusCode::OK, serde_json::to_value(app()).expect("json"))
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0)),
    }));
    let ctx = Context::for_tests(client, blueprints(), WriteGate::always());
    let result = reconcile_app(&app(), &ctx).await;
    let error = result.expect_err("the apply error is returned, to be retried");
    assert!(matches!(&error, Error::Object(e) if e.action == "apply"), "{error:?}");
    let requests = log.lock().expect("log").clone();
    assert_eq!(
        count(&log, "PATCH /api/v1/namespaces/team/serviceaccounts/shop"),
        1,
        "{requests:#?}"
    );
    assert_eq!(
        count(
            &log,
            "PATCH /apis/plinth.dev/v1alpha1/namespaces/team/applications/shop/status"
        ),
        1,
        "the failure is reported in status: {requests:#?}"
    );
    assert_eq!(
        count(&log, "DELETE"),
        0,
        "nothing is pruned after a failed apply: {requests:#?}"
    );
    assert_eq!(
        count(&log, "PATCH /apis/networking.k8s.io"),
        0,
        "nothing after the failed object is applied: {requests:#?}"
    );
}

#[tokio::test]
async fn a_closed_write_gate_sends_no_write() {
    let (client, log) = fake_api(Box::new(|method, _| match method {
        "GET" => (StatusCode::NOT_FOUND, status(404, "NotFound", 0)),
        _ => (StatusCode::OK, json!({})),
    }));
    let ctx = Context::for_tests(client, blueprints(), WriteGate::leased());
    let result = reconcile_app(&app(), &ctx).await;
    assert!(matches!(result, Err(Error::NotLeader)), "{result:?}");
    let requests = log.lock().expect("log").clone();
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "a follower only reads: {requests:#?}"
    );
}

#[tokio::test]
async fn throttling_backs_off_at_least_as_long_as_the_server_asks() {
    let (client, log) = fake_api(Box::new(|method, _| match method {
        "GET" => (StatusCode::NOT_FOUND, status(404, "NotFound", 0)),
        _ => (StatusCode::TOO_MANY_REQUESTS, status(429, "TooManyRequests", 7)),
    }));
    let ctx = Arc::new(Context::for_tests(client, blueprints(), WriteGate::always()));
    let error = reconcile_app(&app(), &ctx).await.expect_err("throttled");
    assert_eq!(error.category(), "Throttled");
    // Exponential backoff with jitter, but never sooner than Retry-After.
    let action = error_policy(
        Arc::new(kube::core::DeserializeGuard(Ok(app()))),
        &error,
        Arc::clone(&ctx),
    );
    assert!(format!("{action:?}").contains("7"), "{action:?}");
    let first = count(&log, "PATCH");
    assert!(first >= 1);
}

#[tokio::test]
async fn a_missing_blueprint_writes_only_the_status() {
    let (client, log) = fake_api(Box::new(|method, path| match (method, path) {
        ("PATCH", p) if p.ends_with("/status") => (StatusCode::OK, serde_json::to_value(app()).expect("json")),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0)),
    }));
    let (empty, _writer) = reflector::store::<GuardedBlueprint>();
    let ctx = Context::for_tests(client, empty, WriteGate::always());
    let done = reconcile_app(&app(), &ctx).await.expect("reported, not an error");
    assert_eq!(done, Done::Failed);
    assert_only_the_status_written(&log);
}

#[tokio::test]
async fn an_unreadable_blueprint_writes_only_the_status_of_its_applications() {
    let (client, log) = fake_api(Box::new(|method, path| match (method, path) {
        ("PATCH", p) if p.ends_with("/status") => (StatusCode::OK, serde_json::to_value(app()).expect("json")),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0)),
    }));
    let (store, mut writer) = reflector::store::<GuardedBlueprint>();
    let broken: GuardedBlueprint = serde_json::from_value(json!({
        "apiVersion": "plinth.dev/v1alpha1", "kind": "Blueprint",
        "metadata": {"name": "web", "uid": "bp-1", "resourceVersion": "7"},
        "spec": {"description": 42},
    }))
    .expect("a guard holds any object");
    assert!(broken.0.is_err(), "the object does not deserialize");
    writer.apply_watcher_event(&Event::Apply(broken));
    let ctx = Context::for_tests(client, store, WriteGate::always());
    let done = reconcile_app(&app(), &ctx).await.expect("reported, not an error");
    assert_eq!(done, Done::Failed);
    assert_only_the_status_written(&log);
}

/// A store holding the bundled `web` Blueprint with a rollout, and `status.rollout` as given.
fn blueprint_with_rollout(status: Option<Value>) -> Store<GuardedBlueprint> {
    let (store, mut writer) = reflector::store::<GuardedBlueprint>();
    let mut web = crate::render::bundled::objects().expect("bundled")["web"].clone();
    web.metadata.uid = Some("bp-1".into());
    web.metadata.generation = Some(1);
    web.spec.rollout = Some(serde_json::from_value(json!({"strategy": "Immediate"})).expect("a rollout"));
    web.status = status.map(|s| serde_json::from_value(s).expect("a status"));
    writer.apply_watcher_event(&Event::Apply(kube::core::DeserializeGuard(Ok(web))));
    store
}

#[tokio::test]
async fn applications_wait_for_the_first_revision_of_a_rollout_then_report_it_missing() {
    let (client, log) = fake_api(Box::new(|method, path| match (method, path) {
        ("PATCH", p) if p.ends_with("/status") => (StatusCode::OK, serde_json::to_value(app()).expect("json")),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0)),
    }));
    let ctx = Context::for_tests(client, blueprint_with_rollout(None), WriteGate::always());
    let done = reconcile_app(&app(), &ctx).await.expect("waiting is not an error");
    assert_eq!(done, Done::AwaitingRevision);
    assert!(
        log.lock().expect("log").is_empty(),
        "nothing read, rendered or written while waiting"
    );
    // Past the grace period, the wait is reported in the status (and nothing else is written).
    ctx.awaiting
        .lock()
        .expect("awaiting")
        .insert("u-1".into(), Instant::now() - FIRST_REVISION_GRACE);
    let done = reconcile_app(&app(), &ctx).await.expect("reported, not an error");
    assert_eq!(done, Done::Failed);
    assert_only_the_status_written(&log);
}

#[tokio::test]
async fn a_deleted_application_is_forgotten_while_it_waits() {
    let (client, _log) = fake_api(Box::new(|_, _| {
        (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0))
    }));
    let ctx = Context::for_tests(client, blueprint_with_rollout(None), WriteGate::always());
    let done = reconcile_app(&app(), &ctx).await.expect("waiting is not an error");
    assert_eq!(done, Done::AwaitingRevision);
    assert!(ctx.awaiting.lock().expect("awaiting").contains_key("u-1"));
    ctx.forget("u-1");
    assert!(ctx.awaiting.lock().expect("awaiting").is_empty());
}

#[tokio::test]
async fn a_pinned_application_does_not_wait_for_the_first_revision() {
    let (client, log) = fake_api(Box::new(|_, _| {
        (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", 0))
    }));
    let ctx = Context::for_tests(client, blueprint_with_rollout(None), WriteGate::always());
    let mut pinned = app();
    pinned.spec.blueprint_revision = Some(1);
    // It goes on to read its revision (which the fake API server fails), instead of waiting.
    let _ = reconcile_app(&pinned, &ctx).await;
    assert!(
        log.lock()
            .expect("log")
            .iter()
            .any(|r| r.contains("/controllerrevisions")),
        "{:?}",
        log.lock().expect("log")
    );
}
