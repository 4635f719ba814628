//! The operator in-process for the end-to-end suites, under the identity the Helm chart gives it.
//!
//! [`ChartIdentity::install`] renders charts/plinth with the real Helm library (`charts/tests/chart.py`, through
//! helm-python-sdk), and creates the operator's ServiceAccount, ClusterRoles, ClusterRoleBindings and its
//! leader-election Role and RoleBinding exactly as rendered. The operator then runs with a client authenticated
//! as that ServiceAccount (`ControlPlane::client_for_service_account`), so it holds what the chart grants and
//! nothing more. [`InProcess`] runs the operator's lifecycle (`plinth_operator::reconcile::lifecycle`) in the test's
//! runtime, the same code `plinth operator` runs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, Config};
use plinth_operator::reconcile::http::Health;
use plinth_operator::reconcile::leader::LeaderConfig;
use plinth_operator::reconcile::lifecycle::{self, Lifecycle, Stopped};
use plinth_operator::reconcile::metrics::{Metrics, counted_client};
use plinth_operator::reconcile::throttle::WriteLimit;
use plinth_operator::reconcile::{self, Settings};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, watch};

use crate::control_plane::{self, ControlPlane};

/// How long an operator may take to sync its caches or to stop.
const WAIT: Duration = Duration::from_secs(60);

/// The namespace the chart is released in: the operator's own, where its Lease and Blueprint revisions live.
pub const RELEASE_NAMESPACE: &str = plinth_operator::rollout::controller::DEFAULT_NAMESPACE;

/// Logs of the code under test, to the test's output; `RUST_LOG` overrides the filter.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("plinth_operator=info")),
        )
        .try_init();
}

/// The chart's operator identity, installed on a control plane.
#[derive(Debug, Clone)]
pub struct ChartIdentity {
    /// The Helm release name the RBAC was rendered for.
    pub release: String,
    /// The release namespace: the ServiceAccount's, and where the leader-election Role lets it hold a Lease.
    pub namespace: String,
    /// The operator's ServiceAccount (`<release>-operator`).
    pub service_account: String,
    /// A kubeconfig authenticating as the ServiceAccount, for `plinth operator` processes.
    pub kubeconfig: PathBuf,
}

impl ChartIdentity {
    /// The identity on the shared control plane, installed once per test process.
    pub async fn shared(cp: &'static ControlPlane) -> &'static ChartIdentity {
        static SHARED: OnceCell<ChartIdentity> = OnceCell::const_new();
        SHARED.get_or_init(|| ChartIdentity::install(cp)).await
    }

    /// Renders the chart (with leader election on, so that its Lease Role is rendered too) and creates the
    /// operator's ServiceAccount and RBAC objects on `cp`, server-side applied, under a release name unique to
    /// this call (the ClusterRoles are cluster-wide).
    ///
    /// # Panics
    /// When Helm cannot render the chart or the API server refuses an object.
    pub async fn install(cp: &ControlPlane) -> ChartIdentity {
        let release = control_plane::unique_name("plinth-e2e");
        let namespace = RELEASE_NAMESPACE.to_owned();
        let admin = cp.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a Namespace");
        match Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create the namespace {namespace}: {e}"),
        }
        let values = json!({
            "operator": {"leaderElection": true},
            "agent": {"enabled": false},
            "blueprints": {"install": false},
        });
        let objects = render_chart(&release, &namespace, &values);
        let service_account = format!("{release}-operator");
        let identity_kinds = [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        let mine: Vec<&Value> = objects
            .iter()
            .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
            .filter(|o| identity_kinds.iter().any(|k| o["kind"] == *k))
            .collect();
        for kind in identity_kinds {
            assert!(
                mine.iter().any(|o| o["kind"] == kind),
                "the chart renders no operator {kind}: {:?}",
                objects.iter().map(kind_name).collect::<Vec<_>>()
            );
        }
        for object in mine {
            apply(&admin, object).await;
        }
        let kubeconfig = cp.kubeconfig_for_service_account(&namespace, &service_account);
        tracing::info!(%release, %namespace, %service_account, "installed the chart's operator identity");
        ChartIdentity {
            release,
            namespace,
            service_account,
            kubeconfig,
        }
    }

    /// The user name the API server knows the ServiceAccount by.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }

    /// A client configuration authenticated as the ServiceAccount.
    ///
    /// # Panics
    /// When the kubeconfig cannot be loaded.
    pub async fn config(&self) -> Config {
        control_plane::install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read the ServiceAccount's kubeconfig");
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("load the ServiceAccount's kubeconfig")
    }

    /// A client authenticated as the ServiceAccount.
    pub async fn client(&self, cp: &ControlPlane) -> Client {
        cp.client_for_service_account(&self.namespace, &self.service_account)
            .await
    }

    /// Leader election on a Lease of this test's own in the release namespace (the only namespace the chart lets
    /// the operator hold a Lease in).
    pub fn leader_config(&self, identity: &str) -> LeaderConfig {
        LeaderConfig::new(&self.namespace, &control_plane::unique_name("plinth-lease"), identity)
    }
}

fn kind_name(o: &Value) -> String {
    format!(
        "{} {}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// `helm template` of charts/plinth by Helm's own code (charts/tests/chart.py); the rendered objects.
///
/// # Panics
/// When python3 or the Helm library is missing, or the chart does not render.
pub fn render_chart(release: &str, namespace: &str, values: &Value) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/tests/chart.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([
            "--release",
            release,
            "--namespace",
            namespace,
            "--values",
            &values.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}; install Python 3", script.display()));
    assert!(
        output.status.success(),
        "helm template of {release} failed ({}):\n{}\nThe harness needs the Helm library: python3 -m pip install \
         'helm-python-sdk==0.2.2' PyYAML (scripts/test.sh installs them)",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut out: Value = serde_json::from_slice(&output.stdout).expect("chart.py prints JSON");
    serde_json::from_value(out["objects"].take()).expect("chart.py prints a list of objects")
}

/// Server-side applies one rendered object as the admin.
async fn apply(admin: &Client, object: &Value) {
    let what = kind_name(object);
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"));
    let (resource, caps) = discovery::pinned_kind(admin, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{what}: the server does not serve {gvk:?}: {e}"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            admin.clone(),
            object["metadata"]["namespace"].as_str().expect("a namespace"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(admin.clone(), &resource),
    };
    let name = object["metadata"]["name"].as_str().expect("a name");
    api.patch(name, &PatchParams::apply("plinth-tests").force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply the chart's {what}: {e}"));
}

/// Test defaults for the controller, scoped to one namespace: quick retries, and `resync`.
pub fn settings(namespace: &str, resync: Duration) -> Settings {
    Settings {
        namespace: Some(namespace.to_owned()),
        resync,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// The operator running in-process: `lifecycle::run`, stopped as SIGTERM stops `plinth operator`.
#[derive(Debug)]
pub struct InProcess {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Its health endpoints' state.
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<Stopped, reconcile::Error>>,
}

impl InProcess {
    /// Starts the operator for one namespace with the chart's identity, and waits until its caches are synced.
    ///
    /// # Panics
    /// When the client cannot be built or the caches do not sync within a minute.
    pub async fn start(identity: &ChartIdentity, namespace: &str, resync: Duration) -> InProcess {
        InProcess::start_config(identity.config().await, namespace, resync).await
    }

    /// Starts the operator for one namespace with the identity of `config` (a test of another identity, such as
    /// a token of the chart installed by Helm), and waits until its caches are synced.
    ///
    /// # Panics
    /// When the client cannot be built or the caches do not sync within a minute.
    pub async fn start_config(config: Config, namespace: &str, resync: Duration) -> InProcess {
        let metrics = Arc::new(Metrics::new());
        let client = counted_client(config, &metrics, WriteLimit::default()).expect("build the operator's client");
        let lifecycle = Lifecycle {
            settings: settings(namespace, resync),
            election: None,
            shutdown_timeout: WAIT,
        };
        InProcess::start_with(client, metrics, lifecycle).await
    }

    /// Starts the operator with a client and lifecycle of the test's making, and waits until it leads (with leader
    /// election) and its caches are synced.
    ///
    /// # Panics
    /// When the operator stops or does not get ready within a minute.
    pub async fn start_with(client: Client, metrics: Arc<Metrics>, lifecycle: Lifecycle) -> InProcess {
        let health = Arc::new(Health::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(lifecycle::run(
            client,
            lifecycle,
            Arc::clone(&metrics),
            Arc::clone(&health),
            stopped,
        ));
        let op = InProcess {
            metrics,
            health,
            stop,
            task,
        };
        // A follower is ready while it stands by; the leader turns `ready` off, then on again once its caches synced.
        let deadline = Instant::now() + WAIT;
        while !(op.metrics.leader.get() == 1 && op.health.ready.load(Ordering::SeqCst)) {
            assert!(!op.task.is_finished(), "the operator stopped before its caches synced");
            assert!(Instant::now() < deadline, "the operator's caches did not sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        op
    }

    /// Requests a stop, as SIGTERM does; [`wait`](Self::wait) for the result.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the operator stopped and returns how.
    ///
    /// # Panics
    /// When it does not stop within a minute (plus its shutdown timeout) or fails.
    pub async fn wait(mut self) -> Stopped {
        tokio::time::timeout(WAIT * 2, &mut self.task)
            .await
            .expect("the operator stops")
            .expect("the operator task")
            .expect("the operator ran without error")
    }

    /// Stops the operator (a requested stop) and checks that everything in flight finished.
    ///
    /// # Panics
    /// When it does not stop cleanly.
    pub async fn stop(self) {
        self.request_stop();
        assert_eq!(
            self.wait().await,
            Stopped::Requested,
            "a requested stop drains and exits cleanly"
        );
    }
}

/// Asserts that a request was forbidden by RBAC for the ServiceAccount `user`.
///
/// # Panics
/// When the request was not refused with 403, or the refusal does not name `user`.
#[track_caller]
pub fn forbidden<T: std::fmt::Debug>(what: &str, user: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(
                status.message.contains(user),
                "{what}: refused for {user}: {}",
                status.message
            );
        }
        other => panic!("{what}: expected 403 Forbidden for {user}, got {other:?}"),
    }
}
