//! End-to-end tests of the operator against the real test control plane (kube-apiserver,
//! kube-controller-manager and etcd v1.20.2).
//!
//! Each test runs the controller in-process (`plinth_operator::reconcile::run`), scoped to a
//! namespace of its own, or as the built `plinth operator` binary where a process must be
//! killed. The control plane has no scheduler and no kubelet: where a test needs an available
//! Deployment it marks the pods ready through the `pods/status` subresource
//! ([`control_plane::mark_pods_ready`]), standing in for the kubelet.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use plinth_api::{Application, Blueprint};
use plinth_operator::reconcile::kinds::{Kind, Served};
use plinth_operator::reconcile::metrics::Metrics;
use plinth_tests::control_plane::{self, ControlPlane};
use plinth_tests::operator::{ChartIdentity, InProcess, forbidden, init_tracing};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(60);

/// Installs the CRDs and the bundled Blueprints once per test process (on the shared control plane).
async fn installed(cp: &ControlPlane) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| install(cp)).await;
}

/// Installs the CRDs and the bundled Blueprints.
async fn install(cp: &ControlPlane) {
    {
        // The fixture removes CEL rules on servers before 1.25 (the operator checks them itself).
        for crd in plinth_api::crds() {
            cp.install_crd(&crd).await;
        }
        let client = cp.client().await;
        let bps: Api<Blueprint> = Api::all(client.clone());
        for (name, bp) in plinth_operator::render::bundled::objects().unwrap() {
            // The bundled objects carry no apiVersion/kind fields of their own in JSON: set them.
            let mut v = serde_json::to_value(&bp).unwrap();
            v["apiVersion"] = json!(plinth_api::API_VERSION);
            v["kind"] = json!("Blueprint");
            put_blueprint(&bps, &name, v).await;
        }
        // The Application API is served once a list succeeds.
        let apps: Api<Application> = Api::all(client);
        control_plane::eventually("the Application API", WAIT, || {
            let apps = apps.clone();
            async move { apps.list(&ListParams::default().limit(1)).await.is_ok() }
        })
        .await;
    }
}

/// Creates or replaces a Blueprint, as a platform team would.
async fn put_blueprint(bps: &Api<Blueprint>, name: &str, mut v: Value) {
    // The test kube-apiserver refuses empty strings in custom resources (kubernetes#99804), so the
    // core group (`""`) cannot appear in a Blueprint's allowedPermissions here: allow reading
    // Deployments instead, which the operator's ClusterRole also holds.
    v["spec"]["policy"]["allowedPermissions"] =
        json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]);
    let mut bp: Blueprint = serde_json::from_value(v).unwrap();
    match bps.get_opt(name).await.unwrap() {
        None => {
            bps.create(&PostParams::default(), &bp).await.unwrap();
        }
        Some(existing) => {
            bp.metadata.resource_version = existing.metadata.resource_version;
            bps.replace(name, &PostParams::default(), &bp).await.unwrap();
        }
    }
}

/// The operator in-process for one namespace, under the chart's operator ServiceAccount and RBAC.
async fn operator(cp: &'static ControlPlane, namespace: &str) -> InProcess {
    InProcess::start(ChartIdentity::shared(cp).await, namespace, Duration::from_secs(300)).await
}

fn application(name: &str, spec: Value) -> Application {
    serde_json::from_value(json!({
        "apiVersion": plinth_api::API_VERSION,
        "kind": "Application",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn create(client: &Client, ns: &str, name: &str, spec: Value) -> Application {
    Api::<Application>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &application(name, spec))
        .await
        .unwrap()
}

async fn set_spec(client: &Client, ns: &str, name: &str, spec: Value) {
    Api::<Application>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
        .await
        .unwrap();
}

fn condition<'a>(
    app: &'a Application,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    app.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Waits until `check` holds for the Application and returns it.
async fn wait_app(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Application) -> bool,
) -> Application {
    let api = Api::<Application>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let app = api.get(name).await.unwrap();
        if check(&app) {
            return app;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} of Application {ns}/{name}; status: {}",
            serde_json::to_string_pretty(&app.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the current generation to be applied (Applied=True at that generation).
async fn applied(client: &Client, ns: &str, name: &str) -> Application {
    wait_app(client, ns, name, "Applied=True", |a| {
        let generation = a.metadata.generation;
        a.status.as_ref().and_then(|s| s.observed_generation) == generation
            && condition(a, "Applied").is_some_and(|c| c.status == "True" && c.observed_generation == generation)
    })
    .await
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()
}

async fn dynamic(client: &Client, served: &Served, kind: Kind, ns: &str, name: &str) -> Option<DynamicObject> {
    let ar = served.resource(kind).expect("served");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .get_opt(name)
        .await
        .unwrap()
}

async fn eventually_async<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    control_plane::eventually(what, WAIT, check).await;
}

fn image_of(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn creates_every_object_with_owner_references_labels_and_status() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-create").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    let app = create(
        &client,
        ns.name(),
        "shop",
        json!({
            "image": "ghcr.io/acme/shop:1.0",
            "port": 8080,
            "replicas": 2,
            "config": {"app.yaml": "a: 1"},
            "permissions": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        }),
    )
    .await;
    let uid = app.uid().unwrap();
    let done = applied(&client, ns.name(), "shop").await;
    let served = Served::discover(&client).await.unwrap();
    let expected = [
        (Kind::ServiceAccount, "shop"),
        (Kind::Role, "shop"),
        (Kind::RoleBinding, "shop"),
        (Kind::NetworkPolicy, "shop"),
        (Kind::ConfigMap, "shop-config"),
        (Kind::Service, "shop"),
        (Kind::Deployment, "shop"),
        (Kind::PodDisruptionBudget, "shop"),
    ];
    for (kind, name) in expected {
        let o = dynamic(&client, &served, kind, ns.name(), name)
            .await
            .unwrap_or_else(|| panic!("{} {name} exists", kind.name()));
        let owners = o.owner_references();
        assert_eq!(owners.len(), 1, "{} {name}", kind.name());
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].kind, "Application");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        let labels = o.labels();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "plinth");
        assert_eq!(labels["plinth.dev/application"], "shop");
        assert_eq!(labels["plinth.dev/blueprint"], "web");
        assert!(
            o.managed_fields()
                .iter()
                .any(|m| m.manager.as_deref() == Some("plinth") && m.operation.as_deref() == Some("Apply")),
            "{} {name} is server-side applied by field manager plinth",
            kind.name()
        );
    }
    // The 1.20 API server serves the older PodDisruptionBudget version: the operator applied that one.
    if !cp.is_local() {
        tracing::info!("external cluster: served versions {served:?}");
    } else {
        assert_eq!(served.version(Kind::PodDisruptionBudget), Some("v1beta1"));
        assert_eq!(served.version(Kind::HorizontalPodAutoscaler), Some("v2beta2"));
    }
    assert!(
        dynamic(&client, &served, Kind::HorizontalPodAutoscaler, ns.name(), "shop")
            .await
            .is_none(),
        "fixed replicas: no HPA"
    );

    // Status: generation, Blueprint and revision, every resource, the five conditions.
    let status = done.status.clone().unwrap();
    assert_eq!(status.observed_generation, done.metadata.generation);
    let bp = status.blueprint.clone().unwrap();
    assert_eq!(bp.name, "web");
    assert!(bp.revision.is_some_and(|r| r >= 1) && bp.hash.is_some_and(|h| h.starts_with("sha256:")));
    let listed: Vec<(String, String)> = status
        .resources
        .iter()
        .map(|r| (r.kind.clone(), r.name.clone()))
        .collect();
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    for t in plinth_api::conditions::ALL {
        let c = condition(&done, t).unwrap_or_else(|| panic!("condition {t}"));
        assert!(
            !c.reason.is_empty() && c.observed_generation == done.metadata.generation,
            "{c:?}"
        );
    }
    assert_eq!(condition(&done, "Rendered").unwrap().status, "True");
    assert_eq!(condition(&done, "Degraded").unwrap().status, "False");

    // No kubelet here: mark the pods ready, as a kubelet would, and see the Application turn Ready.
    control_plane::mark_pods_ready(&client, ns.name(), "plinth.dev/application=shop", 2, WAIT).await;
    let ready = wait_app(&client, ns.name(), "shop", "Ready=True", |a| {
        condition(a, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.replicas.as_deref(), Some("2/2"));
    let deploy = status.resources.iter().find(|r| r.kind == "Deployment").unwrap();
    assert!(deploy.ready);
    assert_eq!(deploy.message, "2/2 replicas available");
    assert_eq!(condition(&ready, "Progressing").unwrap().status, "False");

    // `kubectl get applications`: the Table the API server prints has Ready, Image, Replicas and Age.
    let table = client
        .request_text(
            http::Request::get(format!(
                "/apis/plinth.dev/v1alpha1/namespaces/{}/applications",
                ns.name()
            ))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    let table: Value = serde_json::from_str(&table).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Ready", "Image", "Replicas", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "shop");
    assert_eq!(cells[1], "True");
    assert_eq!(cells[2], "ghcr.io/acme/shop:1.0");
    assert_eq!(cells[3], "2/2");

    // Events on transitions.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns.name());
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Applied"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Ready"), "{reasons:?}");
    op.stop().await;
}

#[tokio::test]
async fn spec_changes_reach_the_objects_and_dropped_rules_leave_the_network_policy() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-change").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "allowFrom": [{"app": "frontend"}]}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    let np: NetworkPolicy = get(&client, ns.name(), "shop").await.unwrap();
    let ingress = serde_json::to_string(&np.spec.as_ref().unwrap().ingress).unwrap();
    assert!(ingress.contains("frontend"), "{ingress}");
    let svc_before: Service = get(&client, ns.name(), "shop").await.unwrap();

    set_spec(&client, ns.name(), "shop", json!({"image": "ghcr.io/acme/shop:1.1"})).await;
    applied(&client, ns.name(), "shop").await;
    let d: Deployment = get(&client, ns.name(), "shop").await.unwrap();
    assert_eq!(image_of(&d), "ghcr.io/acme/shop:1.1");
    let svc_after: Service = get(&client, ns.name(), "shop").await.unwrap();
    assert_eq!(
        svc_before.resource_version(),
        svc_after.resource_version(),
        "an image change writes only the Deployment"
    );

    set_spec(&client, ns.name(), "shop", json!({"allowFrom": null})).await;
    applied(&client, ns.name(), "shop").await;
    let np: NetworkPolicy = get(&client, ns.name(), "shop").await.unwrap();
    let ingress = serde_json::to_string(&np.spec.as_ref().unwrap().ingress).unwrap();
    assert!(
        !ingress.contains("frontend"),
        "the removed allowFrom is gone: {ingress}"
    );
    assert!(
        np.spec
            .as_ref()
            .unwrap()
            .policy_types
            .as_ref()
            .unwrap()
            .contains(&"Ingress".to_owned()),
        "still default-deny ingress"
    );
    op.stop().await;
}

#[tokio::test]
async fn deleting_the_application_garbage_collects_its_objects() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-gc").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    assert!(get::<Deployment>(&client, ns.name(), "shop").await.is_some());
    Api::<Application>::namespaced(client.clone(), ns.name())
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    let (c, n) = (client.clone(), ns.name().to_owned());
    eventually_async(
        "the garbage collector to delete the Deployment, Service and NetworkPolicy",
        || {
            let (c, n) = (c.clone(), n.clone());
            async move {
                get::<Deployment>(&c, &n, "shop").await.is_none()
                    && get::<Service>(&c, &n, "shop").await.is_none()
                    && get::<NetworkPolicy>(&c, &n, "shop").await.is_none()
            }
        },
    )
    .await;
    op.stop().await;
}

fn custom_blueprint(name: &str, deployment_template: Option<&str>) -> Value {
    let mut web = serde_json::to_value(&plinth_operator::render::bundled::objects().unwrap()["web"]).unwrap();
    web["apiVersion"] = json!(plinth_api::API_VERSION);
    web["kind"] = json!("Blueprint");
    web["metadata"] = json!({"name": name});
    if let Some(t) = deployment_template {
        web["spec"]["templates"]["deployment.yaml.hbs"] = json!(t);
    }
    web
}

#[tokio::test]
async fn a_blueprint_edit_rerenders_its_applications_and_a_broken_one_leaves_them_running() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-blueprint").await;
    let client = cp.client().await;
    let bp_name = control_plane::unique_name("bp");
    let bps: Api<Blueprint> = Api::all(client.clone());
    put_blueprint(&bps, &bp_name, custom_blueprint(&bp_name, None)).await;
    let op = operator(cp, ns.name()).await;
    for app in ["one", "two"] {
        create(
            &client,
            ns.name(),
            app,
            json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "blueprint": bp_name}),
        )
        .await;
    }
    create(
        &client,
        ns.name(),
        "other",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    for app in ["one", "two", "other"] {
        applied(&client, ns.name(), app).await;
    }
    let other_before: Deployment = get(&client, ns.name(), "other").await.unwrap();
    let one_before: Deployment = get(&client, ns.name(), "one").await.unwrap();

    // Edit: every Deployment of this Blueprint gets a new annotation; the other Application is not touched.
    let original = plinth_operator::render::bundled::objects().unwrap()["web"]
        .spec
        .templates["deployment.yaml.hbs"]
        .clone();
    let edited = original.replace(
        "metadata:\n  name: {{app.name}}\n",
        "metadata:\n  name: {{app.name}}\n  annotations:\n    platform.example.com/revision: \"2\"\n",
    );
    assert_ne!(edited, original, "the test's edit applies to the bundled template");
    put_blueprint(&bps, &bp_name, custom_blueprint(&bp_name, Some(&edited))).await;
    for app in ["one", "two"] {
        let (c, n) = (client.clone(), ns.name().to_owned());
        eventually_async(
            &format!("Deployment {app} re-rendered with the edited Blueprint"),
            || {
                let (c, n) = (c.clone(), n.clone());
                async move {
                    get::<Deployment>(&c, &n, app).await.is_some_and(|d| {
                        d.annotations().get("platform.example.com/revision").map(String::as_str) == Some("2")
                    })
                }
            },
        )
        .await;
        let a = wait_app(&client, ns.name(), app, "blueprint revision 2", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.blueprint.as_ref())
                .and_then(|b| b.revision)
                == Some(2)
        })
        .await;
        assert_eq!(condition(&a, "Applied").unwrap().status, "True");
    }
    let other_after: Deployment = get(&client, ns.name(), "other").await.unwrap();
    assert_eq!(
        other_before.metadata.generation, other_after.metadata.generation,
        "other Blueprints' apps are untouched"
    );

    // Break it: a template that does not render. The workloads stay exactly as they are.
    let one_edited: Deployment = get(&client, ns.name(), "one").await.unwrap();
    let broken = format!("{edited}\n  minReadySeconds: {{{{json doesNotExist}}}}\n");
    put_blueprint(&bps, &bp_name, custom_blueprint(&bp_name, Some(&broken))).await;
    for app in ["one", "two"] {
        let a = wait_app(&client, ns.name(), app, "Degraded=True", |a| {
            condition(a, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
        let degraded = condition(&a, "Degraded").unwrap();
        assert_eq!(degraded.reason, "TemplateError");
        assert!(
            degraded.message.contains("template deployment.yaml.hbs:") && degraded.message.contains("doesNotExist"),
            "the message names the template, line and column: {}",
            degraded.message
        );
        assert_eq!(condition(&a, "Rendered").unwrap().status, "False");
        assert_eq!(
            condition(&a, "Applied").unwrap().status,
            "True",
            "Applied still describes the live objects"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one_after: Deployment = get(&client, ns.name(), "one").await.unwrap();
    assert_eq!(one_after.uid(), one_before.uid());
    assert_eq!(
        one_after.metadata.generation, one_edited.metadata.generation,
        "the running workload is untouched"
    );
    assert_eq!(one_after.annotations(), one_edited.annotations());
    assert!(
        get::<Service>(&client, ns.name(), "one").await.is_some(),
        "nothing was pruned"
    );
    op.stop().await;
}

#[tokio::test]
async fn hand_edits_are_reverted_and_deleted_objects_restored() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-drift").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 2}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    // `kubectl edit`-style update of fields Plinth set.
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    deployments
        .patch("shop", &edit, &Patch::Merge(json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "app", "image": "evil:latest"}]}}}})))
        .await
        .unwrap();
    let started = Instant::now();
    let (c, n) = (client.clone(), ns.name().to_owned());
    eventually_async("the hand edit reverted", || {
        let (c, n) = (c.clone(), n.clone());
        async move {
            get::<Deployment>(&c, &n, "shop").await.is_some_and(|d| {
                d.spec.as_ref().and_then(|s| s.replicas) == Some(2) && image_of(&d) == "ghcr.io/acme/shop:1.0"
            })
        }
    })
    .await;
    tracing::info!(took = ?started.elapsed(), "hand edit reverted");
    assert!(started.elapsed() < Duration::from_secs(10), "restored within seconds");

    Api::<Service>::namespaced(client.clone(), ns.name())
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let (c, n) = (client.clone(), ns.name().to_owned());
    eventually_async("the deleted Service restored", || {
        let (c, n) = (c.clone(), n.clone());
        async move { get::<Service>(&c, &n, "shop").await.is_some() }
    })
    .await;
    let text = op.metrics.encode();
    assert!(
        text.contains("plinth_objects_total{kind=\"Deployment\",action=\"drift\"}"),
        "{text}"
    );
    op.stop().await;
}

#[tokio::test]
async fn objects_a_render_no_longer_produces_are_pruned() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-prune").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 2, "config": {"a.yaml": "a: 1"}}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    assert!(get::<ConfigMap>(&client, ns.name(), "shop-config").await.is_some());
    // An unowned ConfigMap with Plinth's labels but no owner reference is never pruned.
    let foreign = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lookalike", "labels": {"app.kubernetes.io/managed-by": "plinth", "plinth.dev/application": "shop"}},
        "data": {"k": "v"},
    });
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &serde_json::from_value(foreign).unwrap())
        .await
        .unwrap();
    set_spec(
        &client,
        ns.name(),
        "shop",
        json!({"config": null, "replicas": null, "autoscale": {"min": 2, "max": 4}}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    let (c, n) = (client.clone(), ns.name().to_owned());
    eventually_async("the dropped ConfigMap pruned", || {
        let (c, n) = (c.clone(), n.clone());
        async move { get::<ConfigMap>(&c, &n, "shop-config").await.is_none() }
    })
    .await;
    let served = Served::discover(&client).await.unwrap();
    assert!(
        dynamic(&client, &served, Kind::HorizontalPodAutoscaler, ns.name(), "shop")
            .await
            .is_some(),
        "the new HPA"
    );
    assert!(
        get::<ConfigMap>(&client, ns.name(), "lookalike").await.is_some(),
        "not owned: left alone"
    );
    op.stop().await;
}

#[tokio::test]
async fn an_unowned_object_with_the_same_name_is_reported_not_overwritten() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-collide").await;
    let client = cp.client().await;
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "shop", "labels": {"team": "legacy"}},
        "spec": {"ports": [{"port": 9999}], "selector": {"legacy": "true"}},
    }))
    .unwrap();
    let before = Api::<Service>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    let a = wait_app(&client, ns.name(), "shop", "Applied=False NameCollision", |a| {
        condition(a, "Applied").is_some_and(|c| c.status == "False" && c.reason == "NameCollision")
    })
    .await;
    let message = &condition(&a, "Degraded").unwrap().message;
    assert!(
        message.contains("Service shop") && message.contains("not created by Plinth"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Service = get(&client, ns.name(), "shop").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the unowned Service is untouched"
    );
    assert!(after.owner_references().is_empty());
    assert!(
        get::<Deployment>(&client, ns.name(), "shop").await.is_none(),
        "no partial workload"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_refused_change_keeps_the_running_workload_and_names_the_rule() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-guardrail").await;
    let client = cp.client().await;
    let op = operator(cp, ns.name()).await;
    create(
        &client,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 2}),
    )
    .await;
    applied(&client, ns.name(), "shop").await;
    let before: Deployment = get(&client, ns.name(), "shop").await.unwrap();
    set_spec(
        &client,
        ns.name(),
        "shop",
        json!({"replicas": 500, "image": "ghcr.io/acme/shop:2.0"}),
    )
    .await;
    let a = wait_app(&client, ns.name(), "shop", "Degraded=True", |a| {
        condition(a, "Degraded").is_some_and(|c| c.status == "True")
    })
    .await;
    let degraded = condition(&a, "Degraded").unwrap();
    assert_eq!(degraded.reason, "GuardrailRefused");
    assert!(degraded.message.contains("rule maxReplicas"), "{}", degraded.message);
    assert_eq!(condition(&a, "Ready").unwrap().status, "False");
    // Missing Blueprint: the same, nothing is touched.
    set_spec(
        &client,
        ns.name(),
        "shop",
        json!({"replicas": 2, "blueprint": "does-not-exist"}),
    )
    .await;
    let a = wait_app(&client, ns.name(), "shop", "BlueprintNotFound", |a| {
        condition(a, "Degraded").is_some_and(|c| c.reason == "BlueprintNotFound")
    })
    .await;
    assert!(condition(&a, "Degraded").unwrap().message.contains("does-not-exist"));
    let after: Deployment = get(&client, ns.name(), "shop").await.unwrap();
    // The generation counts spec changes (the Deployment controller keeps writing status).
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the Deployment's spec is untouched"
    );
    assert_eq!(image_of(&after), "ghcr.io/acme/shop:1.0");
    assert!(get::<Service>(&client, ns.name(), "shop").await.is_some());
    op.stop().await;
}

#[tokio::test]
async fn a_resync_of_unchanged_applications_writes_nothing() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-resync").await;
    let client = cp.client().await;
    let op = InProcess::start(ChartIdentity::shared(cp).await, ns.name(), Duration::from_secs(1)).await;
    for i in 0..5 {
        create(
            &client,
            ns.name(),
            &format!("app{i}"),
            json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 1}),
        )
        .await;
    }
    for i in 0..5 {
        applied(&client, ns.name(), &format!("app{i}")).await;
    }
    // Let the last watch events and status writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = |m: &Metrics| {
        m.reconciles
            .get_or_create(&plinth_operator::reconcile::metrics::ResultLabels {
                result: "unchanged".into(),
            })
            .get()
    };
    let writes = op.metrics.writes();
    let before = reconciles(&op.metrics);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resyncs = reconciles(&op.metrics) - before;
    assert!(resyncs >= 10, "the Applications were resynced ({resyncs} reconciles)");
    assert_eq!(
        op.metrics.writes(),
        writes,
        "{resyncs} resyncs of unchanged Applications wrote nothing"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_operator_works_under_its_cluster_role_and_cannot_read_secrets() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-rbac").await;
    let admin = cp.client().await;
    // Every test of this suite runs the operator under the chart's identity; this one also checks its limits.
    let identity = ChartIdentity::shared(cp).await;
    let op = operator(cp, ns.name()).await;
    create(
        &admin,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 2, "config": {"a": "b"},
               "permissions": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}),
    )
    .await;
    applied(&admin, ns.name(), "shop").await;
    assert!(get::<Deployment>(&admin, ns.name(), "shop").await.is_some());
    op.stop().await;

    let token = identity.client(cp).await;
    let user = identity.user();
    forbidden(
        "list Secrets",
        &user,
        Api::<Secret>::namespaced(token.clone(), ns.name())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "get a Secret",
        &user,
        Api::<Secret>::namespaced(token.clone(), ns.name())
            .get("anything")
            .await,
    );
    forbidden(
        "list Secrets cluster-wide",
        &user,
        Api::<Secret>::all(token.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "change an Application's spec",
        &user,
        Api::<Application>::namespaced(token.clone(), ns.name())
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 5}})),
            )
            .await,
    );
    forbidden(
        "delete an Application",
        &user,
        Api::<Application>::namespaced(token.clone(), ns.name())
            .delete("shop", &DeleteParams::default())
            .await,
    );
    forbidden(
        "change a Blueprint",
        &user,
        Api::<Blueprint>::all(token.clone())
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
    );
    forbidden(
        "list Pods",
        &user,
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(token.clone(), ns.name())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "delete its Namespace",
        &user,
        Api::<k8s_openapi::api::core::v1::Namespace>::all(token.clone())
            .delete(ns.name(), &DeleteParams::default())
            .await,
    );
    forbidden(
        "create a ClusterRole",
        &user,
        Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(token.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": control_plane::unique_name("sneaky")}, "rules": []}),
                )
                .unwrap(),
            )
            .await,
    );
    // A Role granting more than the operator holds is an escalation the API server refuses.
    let secret_reader: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .unwrap();
    let refused = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(token.clone(), ns.name())
        .create(&PostParams::default(), &secret_reader)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "a Role granting Secrets is refused: {refused:?}"
    );
}

// ---- The operator as a process: killed, restarted, and two replicas with leader election ----

/// The built `plinth` binary: `PLINTH_BIN`, else next to this test's own target directory.
fn plinth_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PLINTH_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("plinth");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p plinth-operator` first (or set PLINTH_BIN)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `plinth operator` process; killed on drop.
struct Process {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Process {
    fn spawn(kubeconfig: &std::path::Path, ns: &str, name: &str, extra: &[&str]) -> Process {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-{name}.log", ns));
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(plinth_bin())
            .args(["operator", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--namespace", ns, "--metrics-address", &format!("127.0.0.1:{port}")])
            .args([
                "--identity",
                name,
                "--log",
                "plinth_operator=info",
                "--backoff-max",
                "5s",
            ])
            .args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Process { child, port, log }
    }

    async fn metrics(&self) -> Option<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    /// The value of a metric line (`name{labels}` exactly), 0 when absent.
    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await?;
        Some(
            text.lines()
                .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
                .unwrap_or(0.0),
        )
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- operator log {} ----\n{}", self.log.display(), self.log());
        }
    }
}

async fn all_applied(client: &Client, ns: &str, names: &[String]) {
    for n in names {
        applied(client, ns, n).await;
        assert!(get::<Deployment>(client, ns, n).await.is_some(), "Deployment {n}");
        assert!(get::<NetworkPolicy>(client, ns, n).await.is_some(), "NetworkPolicy {n}");
    }
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_converges_after_restart() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-kill").await;
    let client = cp.client().await;
    let identity = ChartIdentity::shared(cp).await;
    let first = Process::spawn(&identity.kubeconfig, ns.name(), "first", &["--leader-election=false"]);
    let (c, n) = (client.clone(), ns.name().to_owned());
    let names: Vec<String> = (0..30).map(|i| format!("app{i}")).collect();
    for name in &names {
        create(&c, &n, name, json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080})).await;
    }
    // Kill it while it works through the queue.
    let deadline = Instant::now() + WAIT;
    loop {
        let done = first
            .metric("plinth_reconciles_total{result=\"applied\"}")
            .await
            .unwrap_or(0.0);
        if done >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operator started no reconcile:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("KILL");
    drop(first);
    let apps = Api::<Application>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .unwrap();
    let unfinished = apps
        .items
        .iter()
        .filter(|a| condition(a, "Applied").is_none_or(|c| c.status != "True"))
        .count();
    tracing::info!(unfinished, "killed the operator");
    assert!(
        unfinished > 0,
        "the operator was killed before it finished (else this test proves nothing)"
    );
    let second = Process::spawn(&identity.kubeconfig, ns.name(), "second", &["--leader-election=false"]);
    all_applied(&client, ns.name(), &names).await;
    // Every object is owned exactly once: nothing was duplicated or orphaned by the kill.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(deployments.items.len(), names.len());
    drop(second);
}

#[tokio::test]
async fn local_an_api_server_restart_under_load_loses_nothing() {
    init_tracing();
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let ns = cp.namespace("op-restart").await;
    let client = cp.client().await;
    let op = InProcess::start(&ChartIdentity::install(&cp).await, ns.name(), Duration::from_secs(300)).await;
    let names: Vec<String> = (0..40).map(|i| format!("app{i}")).collect();
    for name in &names[..20] {
        create(
            &client,
            ns.name(),
            name,
            json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
        )
        .await;
    }
    // Stop the API server while those are being reconciled.
    cp.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cp.start_apiserver().await;
    let client = cp.client().await;
    for name in &names[20..] {
        create(
            &client,
            ns.name(),
            name,
            json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
        )
        .await;
    }
    all_applied(&client, ns.name(), &names).await;
    // And it still reacts to changes afterwards.
    set_spec(&client, ns.name(), "app0", json!({"image": "ghcr.io/acme/shop:2.0"})).await;
    applied(&client, ns.name(), "app0").await;
    assert_eq!(
        image_of(&get::<Deployment>(&client, ns.name(), "app0").await.unwrap()),
        "ghcr.io/acme/shop:2.0"
    );
    op.stop().await;
}

#[tokio::test]
async fn two_replicas_with_leader_election_never_both_write() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-leader").await;
    let client = cp.client().await;
    // The chart lets the operator hold a Lease in its own namespace only.
    let identity = ChartIdentity::shared(cp).await;
    let lease_name = control_plane::unique_name("plinth-lease");
    let lease = [
        "--lease-namespace",
        identity.namespace.as_str(),
        "--lease-name",
        lease_name.as_str(),
        "--lease-duration",
        "6s",
    ];
    let a = Process::spawn(&identity.kubeconfig, ns.name(), "replica-a", &lease);
    let b = Process::spawn(&identity.kubeconfig, ns.name(), "replica-b", &lease);
    // Exactly one becomes leader.
    let deadline = Instant::now() + WAIT;
    let (leader, follower) = loop {
        let (la, lb) = (a.metric("plinth_leader").await, b.metric("plinth_leader").await);
        assert!(!(la == Some(1.0) && lb == Some(1.0)), "both replicas lead");
        match (la, lb) {
            (Some(1.0), Some(_)) => break (a, b),
            (Some(_), Some(1.0)) => break (b, a),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no leader:\n{}\n{}", a.log(), b.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    create(
        &client,
        ns.name(),
        "one",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    applied(&client, ns.name(), "one").await;
    for _ in 0..10 {
        assert_eq!(
            follower.metric("plinth_leader").await,
            Some(0.0),
            "the follower stays a follower"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for verb in ["PATCH", "DELETE", "PUT"] {
        assert_eq!(
            follower
                .metric(&format!("plinth_api_requests_total{{verb=\"{verb}\"}}"))
                .await,
            Some(0.0),
            "the follower sent no {verb}"
        );
    }
    assert_eq!(
        follower.metric("plinth_reconciles_total{result=\"applied\"}").await,
        Some(0.0)
    );
    assert!(
        leader
            .metric("plinth_reconciles_total{result=\"applied\"}")
            .await
            .unwrap()
            >= 1.0
    );

    // The leader stops (SIGTERM: finishes its work, releases the Lease); the follower takes over.
    leader.signal("TERM");
    let mut leader = leader;
    let status = tokio::task::spawn_blocking(move || {
        let s = leader.child.wait();
        (s, leader)
    })
    .await
    .unwrap();
    assert!(
        status.0.unwrap().success(),
        "graceful shutdown exits 0:\n{}",
        status.1.log()
    );
    assert!(
        status.1.log().contains("released the leader Lease"),
        "{}",
        status.1.log()
    );
    let deadline = Instant::now() + WAIT;
    while follower.metric("plinth_leader").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the follower did not take over:\n{}",
            follower.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create(
        &client,
        ns.name(),
        "two",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    applied(&client, ns.name(), "two").await;
    drop(follower);
}

#[tokio::test]
async fn local_malformed_applications_and_blueprints_are_reported_and_the_others_keep_reconciling() {
    init_tracing();
    // A control plane of its own: the Application and Blueprint CRDs here store any spec, as a server that did not
    // check it (or an object written before a schema change) would have.
    let cp = ControlPlane::start().await;
    install(&cp).await;
    for mut crd in plinth_api::crds() {
        for version in &mut crd.spec.versions {
            let schema = version.schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
            let spec = serde_json::from_value(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
                .unwrap();
            schema.properties.as_mut().unwrap().insert("spec".into(), spec);
        }
        cp.install_crd(&crd).await;
    }
    let ns = cp.namespace("op-malformed").await;
    let client = cp.client().await;
    // A Blueprint that does not deserialize, there before the operator starts (in its first list).
    let raw_blueprints: Api<DynamicObject> =
        Api::all_with(client.clone(), &kube::core::ApiResource::erase::<Blueprint>(&()));
    let mut broken_bp: DynamicObject = serde_json::from_value(json!({
        "apiVersion": plinth_api::API_VERSION, "kind": "Blueprint", "metadata": {"name": "broken-bp"},
    }))
    .unwrap();
    broken_bp.data = json!({"spec": {"description": ["not", "a", "string"], "templates": {}}});
    raw_blueprints.create(&PostParams::default(), &broken_bp).await.unwrap();
    create(
        &client,
        ns.name(),
        "on-broken-bp",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "blueprint": "broken-bp"}),
    )
    .await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &kube::core::ApiResource::erase::<Application>(&()),
    );
    let object = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": plinth_api::API_VERSION, "kind": "Application",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    raw.create(
        &PostParams::default(),
        &object(
            "broken",
            json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": "three"}),
        ),
    )
    .await
    .unwrap();
    // One that stays broken to the end, on the Blueprint that gets a rollout below.
    raw.create(
        &PostParams::default(),
        &object(
            "stays-broken",
            json!({"image": "ghcr.io/acme/shop:1.0", "blueprint": "broken-bp", "port": "eighty"}),
        ),
    )
    .await
    .unwrap();
    create(
        &client,
        ns.name(),
        "good",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    let identity = ChartIdentity::install(&cp).await;
    let op = InProcess::start(&identity, ns.name(), Duration::from_secs(300)).await;

    // The others reconcile, from the initial list and from later watch events.
    applied(&client, ns.name(), "good").await;
    create(
        &client,
        ns.name(),
        "later",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080}),
    )
    .await;
    applied(&client, ns.name(), "later").await;

    // The broken one is reported in its status (written without deserializing it), an Event and a metric.
    let deadline = Instant::now() + WAIT;
    let degraded = loop {
        let o = raw.get("broken").await.unwrap();
        let conditions = o.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| c["type"] == "Degraded" && c["status"] == "True")
        {
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the broken Application is not reported: {}",
            o.data
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(degraded["reason"], "InvalidSpec");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.replicas") && message.contains("three"),
        "{message}"
    );
    let metrics = Arc::clone(&op.metrics);
    eventually_async("both broken Applications counted", || {
        let counted = metrics.invalid_applications.get() == 2;
        async move { counted }
    })
    .await;
    assert!(op.metrics.encode().contains("plinth_invalid_applications 2"));
    let (c, n) = (client.clone(), ns.name().to_owned());
    eventually_async("a Warning Event about the broken Application", || {
        let (c, n) = (c.clone(), n.clone());
        async move {
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(c, &n)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                        && e.reason.as_deref() == Some("InvalidSpec")
                        && e.type_.as_deref() == Some("Warning")
                })
        }
    })
    .await;
    assert!(
        get::<Deployment>(&client, ns.name(), "broken").await.is_none(),
        "nothing rendered from it"
    );

    // Fixed, it reconciles like any other.
    raw.patch(
        "broken",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    applied(&client, ns.name(), "broken").await;
    assert!(get::<Deployment>(&client, ns.name(), "broken").await.is_some());
    assert_eq!(op.metrics.invalid_applications.get(), 1, "stays-broken");

    // The Application on the unreadable Blueprint says which field of the Blueprint to fix, and renders nothing.
    let app = wait_app(
        &client,
        ns.name(),
        "on-broken-bp",
        "Degraded=True BlueprintInvalid",
        |a| condition(a, "Degraded").is_some_and(|c| c.status == "True" && c.reason == "BlueprintInvalid"),
    )
    .await;
    let message = condition(&app, "Degraded").unwrap().message.clone();
    assert!(
        message.contains("broken-bp") && message.contains("spec.description"),
        "{message}"
    );
    assert!(get::<Deployment>(&client, ns.name(), "on-broken-bp").await.is_none());
    // Fixed (the bundled `web` under the broken one's name, with a rollout), the Application renders from it, and
    // the rollout records its revision although an Application of that Blueprint still does not deserialize.
    let mut web = serde_json::to_value(&plinth_operator::render::bundled::objects().unwrap()["web"]).unwrap();
    web["apiVersion"] = json!(plinth_api::API_VERSION);
    web["kind"] = json!("Blueprint");
    web["metadata"] = json!({"name": "broken-bp"});
    web["spec"]["rollout"] = json!({"strategy": "Immediate"});
    raw_blueprints
        .delete("broken-bp", &DeleteParams::default())
        .await
        .unwrap();
    put_blueprint(&Api::all(client.clone()), "broken-bp", web).await;
    applied(&client, ns.name(), "on-broken-bp").await;
    assert!(get::<Deployment>(&client, ns.name(), "on-broken-bp").await.is_some());
    let bps: Api<Blueprint> = Api::all(client.clone());
    eventually_async("the rollout of broken-bp recorded despite stays-broken", || {
        let bps = bps.clone();
        async move {
            let bp = bps.get("broken-bp").await.unwrap();
            bp.status.and_then(|s| s.rollout).is_some_and(|r| r.revision == 1)
        }
    })
    .await;
    op.stop().await;
}

/// A layer on the operator's client: holds back the response to the first server-side apply of a ServiceAccount
/// (a write in flight, for as long as the test wants), and records every write in the order its response reached
/// the operator.
#[derive(Clone, Default)]
struct SlowWrites {
    /// True once the held write was sent.
    holding: Arc<std::sync::atomic::AtomicBool>,
    /// `METHOD path` of every write, in the order the operator saw them complete.
    completed: Arc<std::sync::Mutex<Vec<String>>>,
}

impl<S> tower::Layer<S> for SlowWrites {
    type Service = SlowWritesService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SlowWritesService {
            inner,
            layer: self.clone(),
        }
    }
}

struct SlowWritesService<S> {
    inner: S,
    layer: SlowWrites,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for SlowWritesService<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let write = req.method() != http::Method::GET;
        let what = format!("{} {}", req.method(), req.uri().path());
        let hold = write
            && req.method() == http::Method::PATCH
            && what.contains("/serviceaccounts/")
            && !self.layer.holding.swap(true, Ordering::SeqCst);
        let completed = Arc::clone(&self.layer.completed);
        let response = self.inner.call(req);
        Box::pin(async move {
            let r = response.await;
            if hold {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            if write {
                completed.lock().unwrap().push(what);
            }
            r
        })
    }
}

#[tokio::test]
async fn a_stop_lets_the_reconcile_in_flight_finish_before_the_lease_is_released() {
    use plinth_operator::reconcile::lifecycle::{Lifecycle, Stopped};
    use plinth_tests::operator;
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("op-drain").await;
    let admin = cp.client().await;
    let identity = ChartIdentity::shared(cp).await;
    let slow = SlowWrites::default();
    let client = kube::client::ClientBuilder::try_from(identity.config().await)
        .unwrap()
        .with_layer(&slow)
        .build();
    let election = identity.leader_config("drainer");
    let lease_name = election.name.clone();
    let op = InProcess::start_with(
        client,
        Arc::new(Metrics::new()),
        Lifecycle {
            settings: operator::settings(ns.name(), Duration::from_secs(300)),
            election: Some(election),
            shutdown_timeout: Duration::from_secs(30),
        },
    )
    .await;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), &identity.namespace);
    let holder =
        |l: &k8s_openapi::api::coordination::v1::Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    assert_eq!(
        holder(&leases.get(&lease_name).await.unwrap()).as_deref(),
        Some("drainer")
    );

    create(
        &admin,
        ns.name(),
        "shop",
        json!({"image": "ghcr.io/acme/shop:1.0", "port": 8080, "config": {"a.yaml": "a: 1"}}),
    )
    .await;
    // The reconcile's first write is in flight: stop now, as SIGTERM does.
    let deadline = Instant::now() + WAIT;
    while !slow.holding.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the operator never wrote the ServiceAccount");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    op.request_stop();
    assert_eq!(
        op.wait().await,
        Stopped::Requested,
        "the in-flight reconcile finished within the timeout"
    );

    // Everything of the reconcile was written, its status last, and only then the Lease was released.
    let completed = slow.completed.lock().unwrap().clone();
    let release = completed
        .iter()
        .rposition(|w| w.starts_with("PUT ") && w.contains(&format!("/leases/{lease_name}")))
        .unwrap_or_else(|| panic!("the Lease was released: {completed:#?}"));
    let status = completed
        .iter()
        .position(|w| w.starts_with("PATCH ") && w.ends_with("/applications/shop/status"))
        .unwrap_or_else(|| panic!("the in-flight reconcile wrote its status: {completed:#?}"));
    assert!(
        status < release,
        "the status was written before the Lease was released: {completed:#?}"
    );
    for (i, w) in completed.iter().enumerate() {
        if !w.contains("/leases/") {
            assert!(
                i < release,
                "{w} completed after the Lease was released: {completed:#?}"
            );
        }
    }
    assert_eq!(
        holder(&leases.get(&lease_name).await.unwrap()),
        None,
        "the Lease is released"
    );
    let app = applied(&admin, ns.name(), "shop").await;
    assert_eq!(condition(&app, "Applied").unwrap().status, "True");
    for name in ["shop"] {
        assert!(get::<Deployment>(&admin, ns.name(), name).await.is_some());
        assert!(get::<NetworkPolicy>(&admin, ns.name(), name).await.is_some());
    }
    assert!(get::<ConfigMap>(&admin, ns.name(), "shop-config").await.is_some());
}

// ---- Benchmark (not a timed test: it measures and prints, `bench/operator/run.sh` runs it) ----

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn count_applied(client: &Client, ns: &str) -> usize {
    let apps = Api::<Application>::namespaced(client.clone(), ns);
    let mut n = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = apps.list(&params).await.unwrap();
        n += page
            .items
            .iter()
            .filter(|a| {
                condition(a, "Applied").is_some_and(|c| c.status == "True")
                    && a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
            })
            .count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => return n,
        }
    }
}

#[tokio::test]
#[ignore = "benchmark: run with bench/operator/run.sh"]
async fn bench_convergence() {
    init_tracing();
    let n: usize = std::env::var("PLINTH_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // Replicas per Application: 0 by default, so that the cluster settles (there is no kubelet here, so pods
    // would stay pending and their controllers keep changing Deployment status, which is real change).
    let replicas: i64 = std::env::var("PLINTH_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let resync: u64 = std::env::var("PLINTH_BENCH_RESYNC_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let ns = cp.namespace("bench").await;
    let client = cp.client().await;
    let identity = ChartIdentity::install(&cp).await;
    let op = Process::spawn(
        &identity.kubeconfig,
        ns.name(),
        "bench",
        &[
            "--leader-election=false",
            "--concurrency",
            "32",
            // The operator's own cost, not its client-side rate limit's: no limit.
            "--api-qps",
            "0",
            "--resync",
            &format!("{resync}s"),
        ],
    );
    let pid = op.child.id();
    let deadline = Instant::now() + WAIT;
    while op.metrics().await.is_none() {
        assert!(Instant::now() < deadline, "{}", op.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_rss = proc_status(pid, "VmRSS:").unwrap_or(0);

    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("app{i:05}")).collect();
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let (c, ns) = (client.clone(), ns.name().to_owned());
            // The `worker` Blueprint (no Service): the test control plane's service range holds 254 addresses.
            async move {
                create(
                    &c,
                    &ns,
                    &name,
                    json!({"image": "ghcr.io/acme/shop:1.0", "blueprint": "worker", "replicas": replicas, "config": {"app.yaml": "a: 1"}}),
                )
                .await;
            }
        })
        .await;
    let created = started.elapsed();
    let mut last = 0;
    loop {
        let done = count_applied(&client, ns.name()).await;
        if done != last {
            tracing::info!(done, of = n, after = ?started.elapsed(), "converging");
            last = done;
        }
        if done == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "did not converge:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converged = started.elapsed();
    let cpu_converge = cpu_seconds(pid);
    let peak_rss = proc_status(pid, "VmHWM:").unwrap_or(0);
    let text = op.metrics().await.unwrap();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    let requests = sum("plinth_api_requests_total");
    let watches = sum("plinth_api_requests_total{verb=\"WATCH\"}");
    let writes = sum("plinth_api_requests_total{verb=\"PATCH\"}")
        + sum("plinth_api_requests_total{verb=\"POST\"}")
        + sum("plinth_api_requests_total{verb=\"PUT\"}")
        + sum("plinth_api_requests_total{verb=\"DELETE\"}");
    let reconciles = sum("plinth_reconciles_total");

    // A full resync of unchanged Applications. First let the cluster settle: the Deployment and
    // ReplicaSet controllers keep changing the Deployments' status for a while, and each change is
    // a real status update. Then wait for every Application to be reconciled again.
    let writes_of = |t: &str| -> f64 {
        ["PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .map(|v| {
                let series = format!("plinth_api_requests_total{{verb=\"{v}\"}}");
                t.lines()
                    .find_map(|l| l.strip_prefix(&series).and_then(|r| r.trim().parse::<f64>().ok()))
                    .unwrap_or(0.0)
            })
            .sum()
    };
    let mut quiet_since = Instant::now();
    let mut last_writes = writes;
    while quiet_since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let w = writes_of(&op.metrics().await.unwrap());
        if w != last_writes {
            last_writes = w;
            quiet_since = Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "never settled");
    }
    let settled = started.elapsed();
    let t = op.metrics().await.unwrap();
    let before_unchanged: f64 = t
        .lines()
        .find_map(|l| {
            l.strip_prefix("plinth_reconciles_total{result=\"unchanged\"}")
                .and_then(|r| r.trim().parse().ok())
        })
        .unwrap_or(0.0);
    let writes_before = writes_of(&t);
    let resync_started = Instant::now();
    let (unchanged_after, writes_after) = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = op.metrics().await.unwrap();
        let s = |prefix: &str| -> f64 {
            t.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum()
        };
        let unchanged = s("plinth_reconciles_total{result=\"unchanged\"}");
        let w = s("plinth_api_requests_total{verb=\"PATCH\"}")
            + s("plinth_api_requests_total{verb=\"POST\"}")
            + s("plinth_api_requests_total{verb=\"PUT\"}")
            + s("plinth_api_requests_total{verb=\"DELETE\"}");
        if unchanged - before_unchanged >= n as f64 {
            break (unchanged, w);
        }
        assert!(
            resync_started.elapsed() < Duration::from_secs(resync * 3 + 120),
            "no full resync:\n{}",
            op.log()
        );
    };
    let resync_took = resync_started.elapsed();
    let peak_rss_after = proc_status(pid, "VmHWM:").unwrap_or(0);
    let report = json!({
        "applications": n,
        "replicas": replicas,
        "create_seconds": created.as_secs_f64(),
        "converge_seconds": converged.as_secs_f64(),
        "operator_cpu_seconds_to_converge": cpu_converge,
        "operator_cpu_share_of_one_core": cpu_converge / converged.as_secs_f64(),
        "operator_idle_rss_mb": idle_rss as f64 / 1024.0,
        "operator_peak_rss_mb": peak_rss_after.max(peak_rss) as f64 / 1024.0,
        "api_requests_total": requests,
        "api_watch_requests": watches,
        "api_write_requests": writes,
        "reconciles": reconciles,
        "api_requests_per_reconcile": (requests - watches) / reconciles.max(1.0),
        "api_requests_per_application": (requests - watches) / n as f64,
        "settled_seconds": settled.as_secs_f64(),
        "resync_reconciles": unchanged_after - before_unchanged,
        "resync_write_requests": writes_after - writes_before,
        "resync_seconds": resync_took.as_secs_f64(),
    });
    println!("PLINTH_BENCH_RESULT {report}");
    assert_eq!(
        writes_after - writes_before,
        0.0,
        "a resync of unchanged Applications wrote"
    );
    drop(op);
}
