//! Tests of the control-plane fixture: the real API server behaviours the end-to-end suites rely on.
//!
//! Each test runs in its own namespace of the shared control plane, except the
//! `local_` tests, which start a control plane of their own (they need the local
//! fixture and fail under `PLINTH_TEST_KUBECONFIG`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Api, Client};
use plinth_tests::control_plane::{self, ControlPlane, KUBE_VERSION};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
        ..ConfigMap::default()
    }
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn starts_ready_and_reports_its_version() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let readyz = client
        .request_text(http::Request::get("/readyz?verbose").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(readyz.contains("readyz check passed"), "{readyz}");
    let version = client.apiserver_version().await.unwrap();
    if cp.is_local() {
        assert_eq!(version.git_version, KUBE_VERSION);
        assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "20"));
    } else {
        assert_eq!(version.major, "1");
    }
}

#[tokio::test]
async fn crd_structural_schema_rejects_invalid_objects_and_prunes_unknown_fields() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("crd").await;
    let client = cp.client().await;
    // CRDs are cluster-scoped: a group of this test's own keeps parallel runs apart.
    let group = format!("{}.fixture.plinth.dev", ns.name());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [
                                { "rule": "self.size != 7", "message": "size 7 is unlucky" }
                            ],
                            "properties": {
                                "size": { "type": "integer", "minimum": 1, "maximum": 10 },
                                "color": { "type": "string", "enum": ["red", "blue"] }
                            }
                        },
                        "status": { "type": "object", "properties": { "ready": { "type": "boolean" } } }
                    }
                }}
            }]
        }
    }))
    .unwrap();
    let installed = cp.install_crd(&crd).await;
    let crd_name = installed.metadata.name.clone().unwrap();
    let cel_enforced = cp.server_minor_version().await >= 25;
    let installed_rules = serde_json::to_string(&installed.spec.versions[0].schema).unwrap();
    assert_eq!(
        installed_rules.contains("x-kubernetes-validations"),
        cel_enforced,
        "CEL rules are kept exactly when the server enforces them: {installed_rules}"
    );

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let widget = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Widget",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap()
    };

    let good = widget("good", json!({ "size": 3, "color": "red", "unknown": "dropped" }));
    widgets.create(&PostParams::default(), &good).await.unwrap();
    let stored = widgets.get("good").await.unwrap();
    assert_eq!(
        stored.data["spec"],
        json!({ "size": 3, "color": "red" }),
        "unknown field pruned"
    );

    for (name, spec, field) in [
        ("wrong-type", json!({ "size": "three" }), "spec.size"),
        ("too-big", json!({ "size": 11 }), "spec.size"),
        ("missing", json!({ "color": "red" }), "spec.size"),
        ("bad-enum", json!({ "size": 2, "color": "green" }), "spec.color"),
    ] {
        let error = widgets
            .create(&PostParams::default(), &widget(name, spec))
            .await
            .expect_err(name);
        let kube::Error::Api(status) = &error else {
            panic!("{name}: expected an API error, got {error}");
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert_eq!(status.reason, "Invalid", "{name}: {status:?}");
        assert!(status.message.contains(field), "{name}: {}", status.message);
    }
    assert!(widgets.get_opt("wrong-type").await.unwrap().is_none());

    // The CEL rule: enforced by servers from 1.25, absent on the local 1.20 one
    // (where the operator and `plinth validate` must catch it).
    let unlucky = widgets
        .create(&PostParams::default(), &widget("unlucky", json!({ "size": 7 })))
        .await;
    if cel_enforced {
        let error = unlucky.expect_err("the CEL rule rejects size 7");
        assert_eq!(status_code(&error), Some(422), "{error}");
    } else {
        unlucky.expect("a 1.20 server does not evaluate CEL rules");
    }

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());

    crds.delete(&crd_name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn server_side_apply_tracks_field_owners_and_conflicts() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("ssa").await;
    let client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let apply = |data: serde_json::Value| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "applied" }, "data": data });

    let first = cms
        .patch(
            "applied",
            &PatchParams::apply("plinth"),
            &Patch::Apply(apply(json!({ "a": "1", "b": "2" }))),
        )
        .await
        .unwrap();
    let managers = first.metadata.managed_fields.unwrap_or_default();
    let plinth = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("plinth"))
        .expect("a managed-fields entry for manager plinth");
    assert_eq!(plinth.operation.as_deref(), Some("Apply"));
    let owned = plinth.fields_v1.as_ref().expect("fieldsV1").0.to_string();
    assert!(owned.contains("f:a") && owned.contains("f:b"), "{owned}");

    // Another manager setting an owned field to another value conflicts...
    let error = cms
        .patch(
            "applied",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(apply(json!({ "a": "9" }))),
        )
        .await
        .expect_err("conflict");
    assert_eq!(status_code(&error), Some(409), "{error}");
    // ...unless it forces, which moves the field to it.
    cms.patch(
        "applied",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(apply(json!({ "a": "9" }))),
    )
    .await
    .unwrap();

    // plinth stops applying `b` (which it alone owns) and `a` (now someone else's):
    // `b` is removed, `a` stays with its new owner.
    let after = cms
        .patch(
            "applied",
            &PatchParams::apply("plinth"),
            &Patch::Apply(apply(json!({ "c": "3" }))),
        )
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [("a", "9"), ("c", "3")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(after.data.unwrap(), expected);
}

#[tokio::test]
async fn watch_delivers_added_modified_deleted() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("watch").await;
    let client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let list = cms.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let params = WatchParams::default().fields("metadata.name=watched").timeout(60);
    let mut events = cms.watch(&params, &version).await.unwrap().boxed();

    cms.create(&PostParams::default(), &config_map("watched", &[("step", "1")]))
        .await
        .unwrap();
    cms.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "step": "2" } })),
    )
    .await
    .unwrap();
    cms.delete("watched", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("a watch event in time")
            .unwrap()
            .expect("the watch to stay open");
        let step = |cm: &ConfigMap| {
            cm.data
                .as_ref()
                .and_then(|d| d.get("step").cloned())
                .unwrap_or_default()
        };
        match event {
            WatchEvent::Added(cm) => seen.push(format!("added {}", step(&cm))),
            WatchEvent::Modified(cm) => seen.push(format!("modified {}", step(&cm))),
            WatchEvent::Deleted(cm) => seen.push(format!("deleted {}", step(&cm))),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => panic!("watch error: {status:?}"),
        }
    }
    assert_eq!(seen, ["added 1", "modified 2", "deleted 2"]);
}

#[tokio::test]
async fn runtime_watcher_lists_then_follows_changes() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("watcher").await;
    let client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns.name());
    cms.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name!=kube-root-ca.crt"),
    )
    .boxed();

    let mut seen = Vec::new();
    let mut changed = false;
    while !seen.contains(&"delete after".to_owned()) {
        let event = tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("a watcher event in time")
            .unwrap()
            .expect("the watcher to keep going");
        let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => seen.push("init".to_owned()),
            watcher::Event::InitApply(cm) => seen.push(format!("init-apply {}", name(&cm))),
            watcher::Event::InitDone => {
                seen.push("init-done".to_owned());
                if !changed {
                    changed = true;
                    cms.create(&PostParams::default(), &config_map("after", &[]))
                        .await
                        .unwrap();
                    cms.delete("after", &DeleteParams::default()).await.unwrap();
                }
            }
            watcher::Event::Apply(cm) => seen.push(format!("apply {}", name(&cm))),
            watcher::Event::Delete(cm) => seen.push(format!("delete {}", name(&cm))),
        }
    }
    assert_eq!(
        seen,
        ["init", "init-apply before", "init-done", "apply after", "delete after"]
    );
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("gc").await;
    let client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let owned_by = |owner: &ConfigMap| OwnerReference {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        block_owner_deletion: Some(true),
        controller: Some(true),
    };
    let post = PostParams::default();
    let doomed_owner = cms.create(&post, &config_map("doomed-owner", &[])).await.unwrap();
    let kept_owner = cms.create(&post, &config_map("kept-owner", &[])).await.unwrap();
    for (name, owner) in [("doomed-child", &doomed_owner), ("kept-child", &kept_owner)] {
        let mut child = config_map(name, &[]);
        child.metadata.owner_references = Some(vec![owned_by(owner)]);
        cms.create(&post, &child).await.unwrap();
    }

    cms.delete("doomed-owner", &DeleteParams::background()).await.unwrap();
    control_plane::eventually("the garbage collector to delete doomed-child", WAIT, || {
        let cms = cms.clone();
        async move { cms.get_opt("doomed-child").await.unwrap().is_none() }
    })
    .await;
    assert!(
        cms.get_opt("kept-child").await.unwrap().is_some(),
        "a child whose owner exists is kept"
    );
}

#[tokio::test]
async fn deployment_controller_creates_replica_sets_and_pods_can_be_marked_ready() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("deploy").await;
    let client = cp.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();

    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
    control_plane::eventually("a ReplicaSet for the Deployment", WAIT, || {
        let replica_sets = replica_sets.clone();
        async move {
            replica_sets
                .list(&ListParams::default().labels("app=web"))
                .await
                .is_ok_and(|list| list.items.len() == 1)
        }
    })
    .await;

    control_plane::mark_pods_ready(&client, ns.name(), "app=web", 2, WAIT).await;
    control_plane::eventually("the Deployment to report 2 available replicas", WAIT, || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_status("web")
                .await
                .is_ok_and(|d| d.status.and_then(|s| s.available_replicas) == Some(2))
        }
    })
    .await;
}

#[tokio::test]
async fn rbac_grants_a_named_identity_only_what_it_is_bound_to() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("rbac").await;
    let other = cp.namespace("rbac-other").await;
    let admin = cp.client().await;
    Api::<ConfigMap>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &config_map("visible", &[("k", "v")]))
        .await
        .unwrap();

    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let user = format!("reader-{}", ns.name());
    let group = format!("readers-{}", ns.name());
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("configmap-readers".to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: "configmap-reader".to_owned(),
        },
        subjects: Some(vec![
            Subject {
                kind: "User".to_owned(),
                name: user.clone(),
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                namespace: None,
            },
            Subject {
                kind: "Group".to_owned(),
                name: group.clone(),
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                namespace: None,
            },
        ]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let reader = cp.client_for(&user, &[]).await;
    // A member through its second group only (the fixture supports two per identity).
    let member = cp.client_for("someone", &["unrelated", &group]).await;
    let stranger = cp.client_for("stranger", &["unrelated"]).await;

    for (who, client) in [("reader", &reader), ("member", &member)] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
        let names: Vec<_> = cms
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{who} may list configmaps: {e}"))
            .items
            .into_iter()
            .filter_map(|cm| cm.metadata.name)
            .collect();
        assert!(names.contains(&"visible".to_owned()), "{who}: {names:?}");
        assert_forbidden(who, cms.create(&PostParams::default(), &config_map("nope", &[])).await);
        assert_forbidden(
            who,
            Api::<Secret>::namespaced(client.clone(), ns.name())
                .list(&ListParams::default())
                .await,
        );
        assert_forbidden(
            who,
            Api::<ConfigMap>::namespaced(client.clone(), other.name())
                .list(&ListParams::default())
                .await,
        );
    }
    assert_forbidden(
        "stranger",
        Api::<ConfigMap>::namespaced(stranger, ns.name())
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn rbac_bindings_to_a_service_account_apply_to_its_client() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("rbac-sa").await;
    let admin = cp.client().await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": "operator-view" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "kind": "ServiceAccount", "name": "operator", "namespace": ns.name() }],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let operator = cp.client_for_service_account(ns.name(), "operator").await;
    let cms: Api<ConfigMap> = Api::namespaced(operator.clone(), ns.name());
    cms.list(&ListParams::default()).await.unwrap();
    assert_forbidden(
        "operator",
        cms.create(&PostParams::default(), &config_map("nope", &[])).await,
    );
    // Another service account of the same namespace is not bound.
    let other = cp.client_for_service_account(ns.name(), "other").await;
    assert_forbidden(
        "other",
        Api::<ConfigMap>::namespaced(other, ns.name())
            .list(&ListParams::default())
            .await,
    );
}

fn assert_forbidden<T: std::fmt::Debug>(who: &str, result: Result<T, kube::Error>) {
    match result {
        Err(error) => assert_eq!(status_code(&error), Some(403), "{who}: {error}"),
        Ok(value) => panic!("{who}: expected 403 Forbidden, got {value:?}"),
    }
}

#[tokio::test]
async fn local_apiserver_restart_keeps_data_in_etcd() {
    init_tracing();
    let cp = ControlPlane::start().await;
    let ns = cp.namespace("restart").await;
    let client: Client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    cms.create(&PostParams::default(), &config_map("survivor", &[("kept", "yes")]))
        .await
        .unwrap();

    cp.stop_apiserver();
    assert!(cms.get("survivor").await.is_err(), "the API server is down");
    cp.start_apiserver().await;

    // The client made before the restart reconnects; the object came back from etcd.
    let survivor = cms.get("survivor").await.unwrap();
    assert_eq!(survivor.data.unwrap()["kept"], "yes");
    // And the restarted server still writes.
    cms.create(&PostParams::default(), &config_map("after", &[]))
        .await
        .unwrap();
    drop(ns);
    drop(cp);
}

/// Where `crash_helper` writes the process ids of its control plane.
const CRASH_HELPER_ENV: &str = "PLINTH_TEST_CRASH_HELPER_PIDS";

#[test]
#[ignore = "helper: run by local_processes_die_with_a_crashed_test"]
fn crash_helper() {
    let pids_file = std::env::var(CRASH_HELPER_ENV).expect("run by local_processes_die_with_a_crashed_test");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cp = runtime.block_on(ControlPlane::start());
    let pids: Vec<String> = cp.process_ids().iter().map(|(_, pid)| pid.to_string()).collect();
    std::fs::write(&pids_file, pids.join("\n")).unwrap();
    // Dies without unwinding: no destructor runs.
    std::process::abort();
}

#[test]
fn local_processes_die_with_a_crashed_test() {
    let dir = std::env::temp_dir().join(control_plane::unique_name(&format!("crash-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    let pids_file = dir.join("pids");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_helper",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_HELPER_ENV, &pids_file)
        .env_remove("PLINTH_TEST_KUBECONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper aborts");
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file)
        .expect("the helper started a control plane and wrote its process ids")
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "etcd, kube-apiserver, kube-controller-manager: {pids:?}");

    // A process is gone when /proc has no entry for it, or only a zombie's.
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start().chars().next();
            !matches!(state, Some('Z' | 'X') | None)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|pid| running(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "control plane processes outlived their test process: {:?}",
            pids.iter().filter(|pid| running(**pid)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn crd_custom_resources_keep_empty_strings_and_other_zero_values() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("zero").await;
    let client = cp.client().await;
    let group = format!("{}.fixture.plinth.dev", ns.name());
    // A schema default of "" is itself validated against the schema when the CRD is created.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("notes.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "notes", "singular": "note", "kind": "Note", "listKind": "NoteList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "text": { "type": "string" },
                                "defaulted": { "type": "string", "default": "" },
                                "words": { "type": "array", "items": { "type": "string" } },
                                "rules": { "type": "array", "items": {
                                    "type": "object",
                                    "properties": {
                                        "apiGroups": { "type": "array", "items": { "type": "string" } }
                                    }
                                }},
                                "count": { "type": "integer" },
                                "flag": { "type": "boolean" }
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .unwrap();
    let installed = cp.install_crd(&crd).await;
    let crd_name = installed.metadata.name.clone().unwrap();

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Note"), "notes");
    let notes: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let spec = json!({
        "text": "",
        "words": ["", "word", ""],
        "rules": [{ "apiGroups": ["", "apps"] }],
        "count": 0,
        "flag": false
    });
    let note: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{group}/v1"),
        "kind": "Note",
        "metadata": { "name": "empty" },
        "spec": spec,
    }))
    .unwrap();
    let mut expected = spec.clone();
    expected["defaulted"] = json!("");

    let created = notes
        .create(&PostParams::default(), &note)
        .await
        .expect("a custom resource holding \"\", 0 and false is valid");
    assert_eq!(created.data["spec"], expected, "as created");
    let mut stored = notes.get("empty").await.unwrap();
    assert_eq!(stored.data["spec"], expected, "as read back");

    // An update keeps them too, and so does a server-side apply.
    stored.data["spec"]["words"] = json!([""]);
    let replaced = notes.replace("empty", &PostParams::default(), &stored).await.unwrap();
    assert_eq!(replaced.data["spec"]["words"], json!([""]), "as replaced");
    let applied = notes
        .patch(
            "applied",
            &PatchParams::apply("plinth-tests"),
            &Patch::Apply(json!({
                "apiVersion": format!("{group}/v1"),
                "kind": "Note",
                "metadata": { "name": "applied" },
                "spec": { "text": "", "rules": [{ "apiGroups": [""] }] },
            })),
        )
        .await
        .expect("a server-side apply holding \"\" is valid");
    assert_eq!(
        applied.data["spec"],
        json!({ "text": "", "defaulted": "", "rules": [{ "apiGroups": [""] }] }),
        "as applied"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete(&crd_name, &DeleteParams::default()).await.unwrap();
}
