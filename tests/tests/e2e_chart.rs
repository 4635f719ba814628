//! End-to-end tests of the Helm chart (charts/plinth) against the real test control plane.
//!
//! The chart is installed by Helm's own code (`helm install --skip-crds --server-side` through helm-python-sdk,
//! `charts/tests/chart.py`), which renders it for the capabilities the API server reports and server-side
//! applies every object; the CRDs are installed first, as on a first install. The operator then runs in-process
//! with a real token (TokenRequest) of the chart's own operator ServiceAccount, so it holds exactly what the
//! chart's RBAC grants; the agent's token is checked the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use plinth_api::{Application, Blueprint};
use plinth_tests::control_plane::{self, ControlPlane};
use plinth_tests::operator::{InProcess, forbidden};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(60);

/// The chart, rendered or installed by Helm.
struct Rendered {
    objects: Vec<Value>,
    crds: Vec<Value>,
}

/// What charts/tests/chart.py does with the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `helm template`: render offline.
    Template,
    /// `helm install --skip-crds --server-side` on the control plane.
    Install,
    /// `helm upgrade --server-side` of the release.
    Upgrade,
    /// `helm uninstall` of the release.
    Uninstall,
}

/// Runs charts/tests/chart.py: Helm's own code through helm-python-sdk.
fn helm(cp: &ControlPlane, action: Action, release: &str, namespace: &str, values: &Value) -> Rendered {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/tests/chart.py");
    let mut command = Command::new("python3");
    command.arg(&script).args([
        "--release",
        release,
        "--namespace",
        namespace,
        "--values",
        &values.to_string(),
    ]);
    match action {
        Action::Template => {}
        Action::Install => {
            command.arg("--install").arg(cp.admin_kubeconfig());
        }
        Action::Upgrade => {
            command.arg("--upgrade").arg(cp.admin_kubeconfig());
        }
        Action::Uninstall => {
            command.arg("--uninstall").arg(cp.admin_kubeconfig());
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}; install Python 3", script.display()));
    assert!(
        output.status.success(),
        "helm {action:?} of {release} failed ({}):\n{}\nThe chart tests need the Helm library: python3 -m pip \
         install 'helm-python-sdk==0.2.2' PyYAML (scripts/test.sh installs them)",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut out: Value = serde_json::from_slice(&output.stdout).expect("chart.py prints JSON");
    Rendered {
        objects: serde_json::from_value(out["objects"].take()).unwrap(),
        crds: serde_json::from_value(out["crds"].take()).unwrap(),
    }
}

fn kind_name(o: &Value) -> String {
    format!(
        "{} {}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn find<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    rendered
        .objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart has no {kind} {name}"))
}

/// Installs the chart's CRDs (crds/) once per test process, as `helm install` does on a first install.
async fn crds_installed(cp: &ControlPlane) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let rendered = helm(cp, Action::Template, "plinth", "plinth-system", &json!({}));
        assert_eq!(rendered.crds.len(), 2, "the chart's crds/ holds both CRDs");
        for crd in &rendered.crds {
            let mut crd = crd.clone();
            // The test kube-apiserver (v1.20.2 built with a newer Go) reads every empty string of a custom
            // resource as null and refuses it (kubernetes#99804): drop the one empty-string default (the
            // Blueprint's `description`), which these tests do not rely on.
            remove_empty_string_defaults(&mut crd);
            let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
            // `install_crd` also removes the CEL rules, which servers before 1.25 cannot store.
            cp.install_crd(&crd).await;
        }
    })
    .await;
}

fn remove_empty_string_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default") == Some(&json!("")) {
                map.remove("default");
            }
            map.values_mut().for_each(remove_empty_string_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_empty_string_defaults),
        _ => {}
    }
}

/// `helm install` of the chart with `values` as release `release` in `namespace`, then checks that the API
/// server accepted and stored every object of the release, server-side applied (Helm names its field manager
/// after the process, `python3` here).
async fn install_chart(cp: &ControlPlane, release: &str, namespace: &str, values: Value) -> Rendered {
    crds_installed(cp).await;
    let admin = cp.client().await;
    let mut values = values;
    // The bundled Blueprints grant core-group permissions (`apiGroups: [""]`), which the local control plane's
    // empty-string defect (kubernetes#99804) refuses: installed where the server keeps empty
    // strings. charts/tests/test_chart.py checks that they render equal to `plinth blueprints export`.
    // Blueprints are cluster-scoped, so only one release can own them, and the suites share one control plane:
    // a release installs them only when the test asks for it.
    if values.get("blueprints").is_none() {
        values["blueprints"] = json!({"install": false});
    }
    if values["blueprints"]["install"] == json!(true) && !stores_empty_strings(&admin).await {
        eprintln!(
            "note: this API server turns empty strings in custom resources into null; the chart's Blueprints \
             (apiGroups: [\"\"]) are not installed here"
        );
        values["blueprints"] = json!({"install": false});
    }
    let installed = helm(cp, Action::Install, release, namespace, &values);
    assert_applied(&admin, &installed.objects).await;
    installed
}

/// Checks that the API server stored every object, server-side applied.
async fn assert_applied(admin: &Client, objects: &[Value]) {
    assert!(!objects.is_empty(), "the release has objects");
    for object in objects {
        let what = kind_name(object);
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), object["apiVersion"].as_str().unwrap().to_owned()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
        let (resource, caps) = discovery::pinned_kind(admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{what}: the server does not serve {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what} is namespaced but the chart sets no namespace"));
                Api::namespaced_with(admin.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(admin.clone(), &resource),
        };
        let name = object["metadata"]["name"].as_str().unwrap();
        let stored = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{what} was not stored: {e}"));
        let managers = stored.metadata.managed_fields.unwrap_or_default();
        assert!(
            managers.iter().any(|f| f.operation.as_deref() == Some("Apply")),
            "{what}: server-side applied by Helm; managed fields: {managers:?}"
        );
    }
}

/// Whether the server keeps an empty string in a custom resource (a server-side dry run of a Blueprint).
async fn stores_empty_strings(admin: &Client) -> bool {
    let probe: Blueprint = serde_json::from_value(json!({
        "apiVersion": plinth_api::API_VERSION, "kind": "Blueprint",
        "metadata": {"name": "empty-string-probe"},
        "spec": {"templates": {}, "policy": {"allowedPermissions": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}},
    }))
    .unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Blueprint>::all(admin.clone()).create(&params, &probe).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("\"null\"") => false,
        Err(e) => panic!("a dry-run create of a Blueprint failed: {e}"),
    }
}

/// A Blueprint of the test's own: the chart's `web` with permissions outside the core API group (the local
/// control plane cannot store `apiGroups: [""]`, see `stores_empty_strings`).
async fn test_blueprint(cp: &ControlPlane, name: &str) {
    let rendered = helm(cp, Action::Template, "plinth", "plinth-system", &json!({}));
    let mut web = find(&rendered, "Blueprint", "web").clone();
    web["metadata"] = json!({ "name": name });
    web["spec"]["policy"]["allowedPermissions"] = json!([
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch"]},
    ]);
    Api::<DynamicObject>::all_with(cp.client().await, &kube::core::ApiResource::erase::<Blueprint>(&()))
        .patch(name, &PatchParams::apply("plinth-tests"), &Patch::Apply(&web))
        .await
        .unwrap_or_else(|e| panic!("install the test Blueprint {name}: {e}"));
}

/// A client authenticated by a real ServiceAccount token (TokenRequest) of `namespace/name`: it holds exactly
/// what RBAC binds to that ServiceAccount.
async fn token_config(cp: &ControlPlane, namespace: &str, name: &str) -> kube::Config {
    let admin = cp.client().await;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin, namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for the ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("the TokenRequest has a status")
        .token;
    control_plane::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(cp.admin_kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = serde_json::from_value(json!({ "token": token })).unwrap();
    config
}

#[track_caller]
fn allowed<T>(what: &str, result: Result<T, kube::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected to be allowed, got {e}"))
}

/// The operator in-process for one namespace with the identity of `config`.
async fn operator(config: kube::Config, namespace: &str) -> InProcess {
    InProcess::start_config(config, namespace, Duration::from_secs(300)).await
}

async fn create_app(client: &Client, ns: &str, name: &str, spec: Value) {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": plinth_api::API_VERSION,
        "kind": "Application",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    Api::<Application>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
}

/// Waits until the Application's `Applied` condition has `status` for its current generation.
async fn applied(client: &Client, ns: &str, name: &str, status: &str) -> Application {
    let api = Api::<Application>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let app = api.get(name).await.unwrap();
        let generation = app.metadata.generation;
        // A success is for the current generation; a failure may be reported before a generation is observed.
        let done = app.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Applied"
                    && c.status == status
                    && (status == "False"
                        || (c.observed_generation == generation && s.observed_generation == generation))
            })
        });
        if done {
            return app;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for Applied={status} of Application {ns}/{name}; status: {}",
            serde_json::to_string_pretty(&app.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn applied_message(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Applied"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A release name unique to the test (ClusterRoles are cluster-wide), equal to the chart's fullname.
fn release_for(ns: &str) -> String {
    format!("plinth-{}", ns.rsplit('-').next().unwrap())
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_server_side_apply() {
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("chart-apply").await;
    let release = release_for(ns.name());
    // The defaults, with the bundled Blueprints: this is the one release of the suite that owns them.
    let rendered = install_chart(cp, &release, ns.name(), json!({"blueprints": {"install": true}})).await;
    let admin = cp.client().await;

    // Helm rendered for the server it talked to: no policy/v1 before Kubernetes 1.21.
    let pdb = find(&rendered, "PodDisruptionBudget", &format!("{release}-operator"));
    let expected = if cp.server_minor_version().await < 21 {
        "policy/v1beta1"
    } else {
        "policy/v1"
    };
    assert_eq!(pdb["apiVersion"], expected);

    let deployment: Deployment = Api::namespaced(admin.clone(), ns.name())
        .get(&format!("{release}-operator"))
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(format!("{release}-operator").as_str())
    );
    let agent: DaemonSet = Api::namespaced(admin.clone(), ns.name())
        .get(&format!("{release}-agent"))
        .await
        .unwrap();
    let agent_pod = agent.spec.unwrap().template.spec.unwrap();
    assert_eq!(agent_pod.host_network, Some(true));
    let caps = agent_pod.containers[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap();
    assert_eq!(caps.add.unwrap(), ["BPF", "NET_ADMIN", "PERFMON"]);
    assert_eq!(caps.drop.unwrap(), ["ALL"]);

    // The bundled Blueprints are served, their Handlebars intact.
    if stores_empty_strings(&admin).await {
        let web = Api::<Blueprint>::all(admin.clone()).get("web").await.unwrap();
        assert!(serde_json::to_string(&web.spec).unwrap().contains("{{"));
    }

    // Every documented option that changes which objects exist is accepted too (the ServiceMonitor needs the
    // Prometheus Operator's CRDs, which a bare API server does not have: render-tested only).
    let options = json!({
        "operator": {"replicas": 3, "watchNamespace": ns.name(), "platform": {"clusterDomain": "corp.local"},
                     "podDisruptionBudget": {"maxUnavailable": "50%"}},
        "agent": {"enabled": false},
        "blueprints": {"install": false},
        "rbac": {"grantMode": "held",
                 "heldPermissions": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
    });
    let release2 = format!("{release}-b");
    install_chart(cp, &release2, ns.name(), options).await;
    let role: Role = Api::namespaced(admin.clone(), ns.name())
        .get(&format!("{release2}-operator-leader-election"))
        .await
        .unwrap();
    assert_eq!(
        role.rules.unwrap()[0].resources.as_deref(),
        Some(&["leases".to_owned()][..])
    );
    let binding: RoleBinding = Api::namespaced(admin.clone(), ns.name())
        .get(&format!("{release2}-operator"))
        .await
        .unwrap();
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    install_chart(
        cp,
        &format!("{release}-c"),
        ns.name(),
        json!({"rbac": {"grantMode": "escalate"}}),
    )
    .await;
}

#[tokio::test]
async fn the_operator_does_its_job_with_the_charts_service_account_and_nothing_more() {
    let cp = ControlPlane::shared().await;
    let system = cp.namespace("chart-system").await;
    let apps = cp.namespace("chart-apps").await;
    let release = release_for(system.name());
    // Two replicas: the chart grants the leader-election Lease too.
    install_chart(cp, &release, system.name(), json!({"operator": {"replicas": 2}})).await;
    let admin = cp.client().await;
    let user = format!("system:serviceaccount:{}:{release}-operator", system.name());
    let config = token_config(cp, system.name(), &format!("{release}-operator")).await;
    let token = Client::try_from(config.clone()).unwrap();

    test_blueprint(cp, &release).await;
    let op = operator(config, apps.name()).await;

    // Its job: an Application becomes its objects, with status and the permissions the operator holds.
    create_app(
        &admin,
        apps.name(),
        "shop",
        json!({"blueprint": release, "image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 2, "config": {"a": "b"},
               "permissions": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}),
    )
    .await;
    applied(&admin, apps.name(), "shop", "True").await;
    for (found, what) in [
        (
            Api::<Deployment>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "Deployment",
        ),
        (
            Api::<Service>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "Service",
        ),
        (
            Api::<NetworkPolicy>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "NetworkPolicy",
        ),
        (
            Api::<ServiceAccount>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "ServiceAccount",
        ),
        (
            Api::<Role>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "Role",
        ),
        (
            Api::<RoleBinding>::namespaced(admin.clone(), apps.name())
                .get_opt("shop")
                .await
                .unwrap()
                .is_some(),
            "RoleBinding",
        ),
    ] {
        assert!(found, "the operator created the {what}");
    }

    // A permission the Blueprint allows but the operator does not hold (grantMode `held`): reported, not granted.
    create_app(
        &admin,
        apps.name(),
        "reader",
        json!({"blueprint": release, "image": "ghcr.io/acme/reader:1.0", "port": 8080, "replicas": 1,
               "permissions": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}),
    )
    .await;
    let reader = applied(&admin, apps.name(), "reader", "False").await;
    assert!(
        Api::<Role>::namespaced(admin.clone(), apps.name())
            .get_opt("reader")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!applied_message(&reader).is_empty());

    // An object of the same name it does not own is reported and left alone.
    let foreign: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "legacy-config"}, "data": {"k": "mine"}})).unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), apps.name())
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create_app(
        &admin,
        apps.name(),
        "legacy",
        json!({"blueprint": release, "image": "ghcr.io/acme/legacy:1.0", "port": 8080, "replicas": 1, "config": {"a": "b"}}),
    )
    .await;
    applied(&admin, apps.name(), "legacy", "False").await;
    let kept = Api::<ConfigMap>::namespaced(admin.clone(), apps.name())
        .get("legacy-config")
        .await
        .unwrap();
    assert_eq!(
        kept.data.unwrap()["k"],
        "mine",
        "an object the operator does not own is not overwritten"
    );
    op.stop().await;

    // What its token may not do.
    let app_ns = apps.name();
    forbidden(
        "list Secrets",
        &user,
        Api::<Secret>::namespaced(token.clone(), app_ns)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "get a Secret",
        &user,
        Api::<Secret>::namespaced(token.clone(), "kube-system").get("any").await,
    );
    forbidden(
        "list Secrets cluster-wide",
        &user,
        Api::<Secret>::all(token.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "list Pods",
        &user,
        Api::<Pod>::namespaced(token.clone(), app_ns)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "change an Application's spec",
        &user,
        Api::<Application>::namespaced(token.clone(), app_ns)
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 5}})),
            )
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
    // What it may: list Namespaces by label (a rollout's early adopters), and nothing else of them.
    Api::<Namespace>::all(token.clone())
        .list_metadata(&ListParams::default().labels("plinth.dev/early-adopter=true"))
        .await
        .expect("the operator lists early-adopter Namespaces");
    forbidden(
        "delete a Namespace",
        &user,
        Api::<Namespace>::all(token.clone())
            .delete(app_ns, &Default::default())
            .await,
    );
    let cluster_role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": format!("{release}-sneaky")}, "rules": []})).unwrap();
    forbidden(
        "create a ClusterRole",
        &user,
        Api::<ClusterRole>::all(token.clone())
            .create(&PostParams::default(), &cluster_role)
            .await,
    );
    let secret_reader: Role = serde_json::from_value(json!({
        "metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .unwrap();
    let refused = Api::<Role>::namespaced(token.clone(), app_ns)
        .create(&PostParams::default(), &secret_reader)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("not currently held")),
        "a Role granting more than the operator holds is an escalation: {refused:?}"
    );
    let admin_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "takeover"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": format!("{release}-operator"), "namespace": system.name()}],
    }))
    .unwrap();
    let refused = Api::<RoleBinding>::namespaced(token.clone(), app_ns)
        .create(&PostParams::default(), &admin_binding)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "binding cluster-admin is refused: {refused:?}"
    );

    // Leader election: its Lease in its own namespace, no other.
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": format!("{release}-operator")}, "spec": {}})).unwrap();
    let leases = Api::<Lease>::namespaced(token.clone(), system.name());
    let mut held = allowed(
        "create the leader Lease",
        leases.create(&PostParams::default(), &lease).await,
    );
    held.spec.get_or_insert_default().holder_identity = Some("replica-a".to_owned());
    allowed(
        "renew the leader Lease",
        leases
            .replace(&format!("{release}-operator"), &PostParams::default(), &held)
            .await,
    );
    allowed(
        "read the leader Lease",
        leases.get(&format!("{release}-operator")).await,
    );
    forbidden(
        "delete the leader Lease",
        &user,
        leases.delete(&format!("{release}-operator"), &Default::default()).await,
    );
    forbidden(
        "create a Lease elsewhere",
        &user,
        Api::<Lease>::namespaced(token.clone(), app_ns)
            .create(&PostParams::default(), &lease)
            .await,
    );
}

#[tokio::test]
async fn grant_mode_escalate_grants_what_blueprints_allow_without_holding_it() {
    let cp = ControlPlane::shared().await;
    let system = cp.namespace("chart-esc").await;
    let apps = cp.namespace("chart-esc-apps").await;
    let release = release_for(system.name());
    install_chart(
        cp,
        &release,
        system.name(),
        json!({"rbac": {"grantMode": "escalate"}, "operator": {"watchNamespace": apps.name()}}),
    )
    .await;
    let admin = cp.client().await;
    let user = format!("system:serviceaccount:{}:{release}-operator", system.name());
    let config = token_config(cp, system.name(), &format!("{release}-operator")).await;
    let token = Client::try_from(config.clone()).unwrap();

    test_blueprint(cp, &release).await;
    let op = operator(config, apps.name()).await;
    // The Blueprint allows reading Leases, which the operator does not hold in the app's namespace: with
    // `escalate` it grants them anyway.
    create_app(
        &admin,
        apps.name(),
        "lease-reader",
        json!({"blueprint": release, "image": "ghcr.io/acme/reader:1.0", "port": 8080, "replicas": 1,
               "permissions": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}),
    )
    .await;
    applied(&admin, apps.name(), "lease-reader", "True").await;
    let role: Role = Api::namespaced(admin.clone(), apps.name())
        .get("lease-reader")
        .await
        .unwrap();
    assert_eq!(
        role.rules.unwrap()[0].resources.as_deref(),
        Some(&["leases".to_owned()][..])
    );
    forbidden(
        "read Leases itself",
        &format!("system:serviceaccount:{}:{release}-operator", system.name()),
        Api::<Lease>::namespaced(token.clone(), apps.name())
            .list(&ListParams::default())
            .await,
    );
    op.stop().await;

    forbidden(
        "get a Secret",
        &user,
        Api::<Secret>::namespaced(token.clone(), apps.name()).get("any").await,
    );
    // `bind` is on namespaced Roles only: no RoleBinding to a ClusterRole.
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "takeover"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": format!("{release}-operator"), "namespace": system.name()}],
    }))
    .unwrap();
    let refused = Api::<RoleBinding>::namespaced(token.clone(), apps.name())
        .create(&PostParams::default(), &binding)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    // watchNamespace: nothing outside it.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap();
    forbidden(
        "create a ConfigMap outside watchNamespace",
        &user,
        Api::<ConfigMap>::namespaced(token.clone(), system.name())
            .create(&PostParams::default(), &cm)
            .await,
    );
    forbidden(
        "create a Role outside watchNamespace",
        &user,
        Api::<Role>::namespaced(token.clone(), system.name())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "x"}, "rules": []})).unwrap(),
            )
            .await,
    );
    allowed(
        "read Blueprints",
        Api::<Blueprint>::all(token.clone()).list(&ListParams::default()).await,
    );
}

#[tokio::test]
async fn the_agent_service_account_may_only_read_pods_namespaces_and_network_policies() {
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("chart-agent").await;
    let release = release_for(ns.name());
    install_chart(cp, &release, ns.name(), json!({})).await;
    let user = format!("system:serviceaccount:{}:{release}-agent", ns.name());
    let token = Client::try_from(token_config(cp, ns.name(), &format!("{release}-agent")).await).unwrap();

    // What the agent's Kubernetes source does: list and watch all Pods, Namespaces and NetworkPolicies.
    allowed(
        "list Pods",
        Api::<Pod>::all(token.clone()).list(&ListParams::default()).await,
    );
    allowed(
        "list Namespaces",
        Api::<Namespace>::all(token.clone()).list(&ListParams::default()).await,
    );
    allowed(
        "list NetworkPolicies",
        Api::<NetworkPolicy>::all(token.clone())
            .list(&ListParams::default())
            .await,
    );
    let watched = control_plane::eventually("a watch of Pods", WAIT, || {
        let pods = Api::<Pod>::all(token.clone());
        async move {
            use futures::StreamExt as _;
            let stream = kube::runtime::watcher(pods, kube::runtime::watcher::Config::default());
            futures::pin_mut!(stream);
            matches!(stream.next().await, Some(Ok(_)))
        }
    });
    tokio::time::timeout(WAIT, watched)
        .await
        .expect("the agent can watch Pods");

    forbidden(
        "list Secrets",
        &user,
        Api::<Secret>::all(token.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "list ConfigMaps",
        &user,
        Api::<ConfigMap>::all(token.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "list Services",
        &user,
        Api::<Service>::namespaced(token.clone(), ns.name())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "label a Namespace",
        &user,
        Api::<Namespace>::all(token.clone())
            .patch(
                ns.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
    );
    let policy: NetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "allow-all"}, "spec": {"podSelector": {}}})).unwrap();
    forbidden(
        "create a NetworkPolicy",
        &user,
        Api::<NetworkPolicy>::namespaced(token.clone(), ns.name())
            .create(&PostParams::default(), &policy)
            .await,
    );
    forbidden(
        "list Applications",
        &user,
        Api::<Application>::all(token.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "list Nodes",
        &user,
        Api::<k8s_openapi::api::core::v1::Node>::all(token)
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn the_release_upgrades_and_uninstalls() {
    let cp = ControlPlane::shared().await;
    let ns = cp.namespace("chart-upgrade").await;
    let release = release_for(ns.name());
    let admin = cp.client().await;
    install_chart(cp, &release, ns.name(), json!({})).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns.name());
    let roles: Api<Role> = Api::namespaced(admin.clone(), ns.name());
    let operator = format!("{release}-operator");
    let spec = deployments.get(&operator).await.unwrap().spec.unwrap();
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("Recreate"),
        "one writer without leader election"
    );
    assert!(
        roles
            .get_opt(&format!("{operator}-leader-election"))
            .await
            .unwrap()
            .is_none()
    );

    // A second replica turns leader election on, with its Lease permissions; the agent goes away.
    // Without the Blueprints, which the suite's defaults release owns (they are cluster-scoped).
    let values = json!({"operator": {"replicas": 2}, "agent": {"enabled": false}, "blueprints": {"install": false}});
    let upgraded = helm(cp, Action::Upgrade, &release, ns.name(), &values);
    assert_applied(&admin, &upgraded.objects).await;
    let deployment = deployments.get(&operator).await.unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
    let args = spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--leader-election=true".to_owned()), "{args:?}");
    assert!(
        roles
            .get_opt(&format!("{operator}-leader-election"))
            .await
            .unwrap()
            .is_some()
    );
    let agents: Api<DaemonSet> = Api::namespaced(admin.clone(), ns.name());
    let agent_roles: Api<ClusterRole> = Api::all(admin.clone());
    let agent = format!("{release}-agent");
    control_plane::eventually("the agent removed by the upgrade", WAIT, || {
        let (agents, agent_roles, agent) = (agents.clone(), agent_roles.clone(), agent.clone());
        async move {
            agents.get_opt(&agent).await.unwrap().is_none() && agent_roles.get_opt(&agent).await.unwrap().is_none()
        }
    })
    .await;

    // Uninstall removes the release's objects, cluster-wide ones included; the CRDs stay.
    helm(cp, Action::Uninstall, &release, ns.name(), &json!({}));
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    control_plane::eventually("the release's objects removed", WAIT, || {
        let (deployments, cluster_roles, operator) = (deployments.clone(), cluster_roles.clone(), operator.clone());
        async move {
            deployments.get_opt(&operator).await.unwrap().is_none()
                && cluster_roles.get_opt(&operator).await.unwrap().is_none()
                && cluster_roles
                    .get_opt(&format!("{operator}-blueprints"))
                    .await
                    .unwrap()
                    .is_none()
        }
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin);
    assert!(
        crds.get_opt("applications.plinth.dev").await.unwrap().is_some(),
        "Helm never deletes CRDs"
    );
}

#[test]
fn chart_script_is_where_the_tests_expect_it() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tests/chart.py");
    assert!(script.is_file(), "{} is missing", script.display());
}
