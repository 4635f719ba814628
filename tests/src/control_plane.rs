//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on loopback.
//!
//! The processes listen on free ports of 127.0.0.1 only, with certificates made
//! here (a CA, the serving certificate, client certificates minted on demand with
//! `CN=user`, `O=group`, and the service-account signing key). Each control plane
//! has a state directory with its PKI, kubeconfigs, etcd data and one log per
//! process; when a test panics the tails of those logs are printed.
//!
//! The processes never outlive the test process: they are spawned from one
//! long-lived thread with a parent-death signal (SIGKILL), each in its own process
//! group, and killed by group on drop. State directories of dead test processes are
//! swept at the next start.
//!
//! Binaries (Kubernetes v1.20.2, the version the registries carry) come from
//! `PLINTH_KUBE_BIN_DIR`, else `${PLINTH_CACHE_DIR:-$HOME/.cache/plinth}/kubernetes/v1.20.2/bin`,
//! which `tests/control-plane/provision.sh` fills. When they are missing the
//! fixture panics, telling to run that script: a suite never skips silently.
//!
//! With `PLINTH_TEST_KUBECONFIG=path` the same suites run against an existing
//! cluster: [`ControlPlane::shared`] then wraps that cluster, named identities are
//! made by impersonation, and [`ControlPlane::start`] (a private control plane, for
//! restart tests) panics saying that the test needs the local fixture.
//!
//! ```no_run
//! # async fn example() {
//! use plinth_tests::ControlPlane;
//! let cp = ControlPlane::shared().await;
//! let ns = cp.namespace("reconcile").await;
//! let admin = cp.client().await;
//! let operator = cp.client_for("plinth-operator", &[]).await;
//! # let _ = (ns.name(), admin, operator);
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use tokio::sync::OnceCell;

/// The Kubernetes version of the local control plane.
pub const KUBE_VERSION: &str = "v1.20.2";
/// Directory holding `kube-apiserver`, `kube-controller-manager` (and optionally `etcd`).
pub const BIN_DIR_ENV: &str = "PLINTH_KUBE_BIN_DIR";
/// Kubeconfig of an existing cluster to run the suites against instead of the local control plane.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "PLINTH_TEST_KUBECONFIG";
/// Set to `1` to keep state directories (PKI, kubeconfigs, etcd data, logs) after the tests.
pub const KEEP_STATE_ENV: &str = "PLINTH_TEST_KEEP_STATE";
/// Label put on every namespace made by [`ControlPlane::namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "plinth.dev/test-namespace";

const PROVISION_HINT: &str = "run `tests/control-plane/provision.sh` (it builds them once and caches them), \
     or set PLINTH_KUBE_BIN_DIR to a directory holding them, \
     or set PLINTH_TEST_KUBECONFIG to run the suites against an existing cluster";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const LOG_TAIL_LINES: usize = 40;
const SERVICE_CIDR: &str = "10.0.0.0/24";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const CLUSTER_NAME: &str = "plinth-test";
const START_ATTEMPTS: usize = 3;

/// A Kubernetes API server for tests: the local control plane, or an external cluster.
pub struct ControlPlane {
    inner: Inner,
}

enum Inner {
    Local(Box<LocalPlane>),
    External(ExternalCluster),
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Local(local) => f
                .debug_struct("ControlPlane")
                .field("server", &local.server)
                .field("state_dir", &local.state_dir)
                .finish_non_exhaustive(),
            Inner::External(external) => f
                .debug_struct("ControlPlane")
                .field("external_kubeconfig", &external.kubeconfig)
                .finish_non_exhaustive(),
        }
    }
}

static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

impl ControlPlane {
    /// The control plane shared by all tests of this test binary, started on first use.
    ///
    /// Under `PLINTH_TEST_KUBECONFIG` this is the cluster that kubeconfig names.
    /// Isolate each test in its own [`namespace`](Self::namespace).
    ///
    /// # Panics
    /// When the binaries are missing or the control plane does not become ready.
    pub async fn shared() -> &'static ControlPlane {
        let started = SHARED
            .get_or_init(|| async {
                if let Some(path) = std::env::var_os(EXTERNAL_KUBECONFIG_ENV) {
                    return ExternalCluster::open(PathBuf::from(path))
                        .await
                        .map(|external| ControlPlane {
                            inner: Inner::External(external),
                        })
                        .map_err(|error| format!("{error:#}"));
                }
                LocalPlane::start()
                    .await
                    .map(|local| ControlPlane {
                        inner: Inner::Local(Box::new(local)),
                    })
                    .map_err(|error| format!("{error:#}"))
            })
            .await;
        match started {
            Ok(control_plane) => control_plane,
            Err(message) => panic!("the shared test control plane is not available: {message}"),
        }
    }

    /// A control plane of this test's own, for tests that stop or restart its processes.
    ///
    /// It is stopped, and its state directory removed, when dropped.
    ///
    /// # Panics
    /// Under `PLINTH_TEST_KUBECONFIG` (such a test needs the local fixture), when the
    /// binaries are missing, or when the control plane does not become ready.
    pub async fn start() -> ControlPlane {
        if let Some(path) = std::env::var_os(EXTERNAL_KUBECONFIG_ENV) {
            panic!(
                "this test needs the local control plane fixture (it starts and restarts its own \
                 kube-apiserver), which PLINTH_TEST_KUBECONFIG={} replaces; run it without \
                 PLINTH_TEST_KUBECONFIG, or skip it with `-- --skip local_`",
                PathBuf::from(path).display()
            );
        }
        match LocalPlane::start().await {
            Ok(local) => ControlPlane {
                inner: Inner::Local(Box::new(local)),
            },
            Err(error) => panic!("the test control plane did not start: {error:#}"),
        }
    }

    /// True for the local control plane, false for a cluster named by `PLINTH_TEST_KUBECONFIG`.
    pub fn is_local(&self) -> bool {
        matches!(self.inner, Inner::Local(_))
    }

    /// The API server's URL.
    pub fn server_url(&self) -> &str {
        match &self.inner {
            Inner::Local(local) => &local.server,
            Inner::External(external) => &external.server,
        }
    }

    /// The kubeconfig of the admin identity (`system:masters` on the local control plane).
    pub fn admin_kubeconfig(&self) -> &Path {
        match &self.inner {
            Inner::Local(local) => &local.admin_kubeconfig,
            Inner::External(external) => &external.kubeconfig,
        }
    }

    /// The local control plane's state directory (PKI, kubeconfigs, etcd data, `logs/`).
    pub fn state_dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Local(local) => Some(&local.state_dir),
            Inner::External(_) => None,
        }
    }

    /// A client with the admin identity, bound to the calling test's runtime.
    ///
    /// # Panics
    /// When the kubeconfig cannot be loaded.
    pub async fn client(&self) -> Client {
        client_from_kubeconfig(self.admin_kubeconfig())
            .await
            .expect("build an admin client for the test control plane")
    }

    /// Writes a kubeconfig for the identity `user` in `groups` and returns its path.
    ///
    /// On the local control plane this is a client certificate with `CN=user` and an
    /// `O=group` attribute per group (at most two groups); on an external cluster
    /// the admin identity impersonates `user` and `groups`. Either way the identity
    /// holds only what RBAC grants it (plus `system:authenticated`).
    ///
    /// # Panics
    /// When the certificate or the file cannot be made.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        let made = match &self.inner {
            Inner::Local(local) => local.kubeconfig_for(user, groups),
            Inner::External(external) => external.kubeconfig_for(user, groups),
        };
        made.unwrap_or_else(|error| panic!("make a kubeconfig for user {user:?}: {error:#}"))
    }

    /// A client with the identity `user` in `groups` (see [`kubeconfig_for`](Self::kubeconfig_for)).
    ///
    /// # Panics
    /// When the kubeconfig cannot be made or loaded.
    pub async fn client_for(&self, user: &str, groups: &[&str]) -> Client {
        let path = self.kubeconfig_for(user, groups);
        client_from_kubeconfig(&path)
            .await
            .unwrap_or_else(|error| panic!("build a client for user {user:?}: {error:#}"))
    }

    /// A client authenticated as the service account `namespace/name`: user
    /// `system:serviceaccount:<namespace>:<name>` in the groups `system:serviceaccounts`
    /// and `system:serviceaccounts:<namespace>`, so RBAC bindings that name the
    /// service account (as the Helm chart's do) apply to it. The service account
    /// itself need not exist.
    ///
    /// # Panics
    /// When the kubeconfig cannot be made or loaded.
    pub async fn client_for_service_account(&self, namespace: &str, name: &str) -> Client {
        let path = self.kubeconfig_for_service_account(namespace, name);
        client_from_kubeconfig(&path)
            .await
            .unwrap_or_else(|error| panic!("build a client for the service account {namespace}/{name}: {error:#}"))
    }

    /// Writes a kubeconfig for the service account `namespace/name` (the identity of
    /// [`client_for_service_account`](Self::client_for_service_account)) and returns its path, for a
    /// process (such as `plinth operator`) that reads a kubeconfig.
    ///
    /// # Panics
    /// When the certificate or the file cannot be made.
    pub fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let namespace_group = format!("system:serviceaccounts:{namespace}");
        self.kubeconfig_for(&user, &["system:serviceaccounts", &namespace_group])
    }

    /// Creates a namespace named `<prefix>-<random>` for one test and waits for its
    /// `default` service account.
    ///
    /// The returned guard deletes the namespace when dropped; when the test panics it
    /// keeps the namespace and prints the tails of the control plane's logs.
    ///
    /// # Panics
    /// When the namespace cannot be created.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let client = self.client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("create test namespace {name}: {error}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "waiting for the default service account"),
            }
            if Instant::now() > deadline {
                self.print_logs();
                panic!(
                    "namespace {name}: the service account controller did not create `default` within {READY_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::debug!(namespace = %name, "test namespace ready");
        TestNamespace {
            name,
            kubeconfig: self.admin_kubeconfig().to_owned(),
            diagnostics: self.diagnostics(),
        }
    }

    /// The API server's minor version (`20` for the local control plane).
    ///
    /// # Panics
    /// When the server cannot be reached or reports an unreadable version.
    pub async fn server_minor_version(&self) -> u32 {
        let version = self
            .client()
            .await
            .apiserver_version()
            .await
            .expect("read the API server's version");
        version
            .minor
            .trim_end_matches('+')
            .parse()
            .unwrap_or_else(|_| panic!("unreadable minor version {:?}", version.minor))
    }

    /// Installs (creates or replaces) a CRD and waits until its resources are served.
    ///
    /// On servers older than 1.25 (the local control plane is 1.20) the CEL
    /// validation rules (`x-kubernetes-validations`) are removed first: such a
    /// server cannot store them, and refuses them in a server-side apply. The
    /// operator and `plinth validate` check those rules themselves.
    ///
    /// # Panics
    /// When the CRD is refused or not established within two minutes.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> CustomResourceDefinition {
        let mut crd = crd.clone();
        if self.server_minor_version().await < 25 {
            strip_cel_rules(&mut crd);
        }
        let name = crd.metadata.name.clone().expect("the CRD has a name");
        let crds: Api<CustomResourceDefinition> = Api::all(self.client().await);
        let installed = match crds.get_opt(&name).await.expect("look up the CRD") {
            None => crds.create(&PostParams::default(), &crd).await,
            Some(existing) => {
                crd.metadata.resource_version = existing.metadata.resource_version;
                crds.replace(&name, &PostParams::default(), &crd).await
            }
        }
        .unwrap_or_else(|error| panic!("install CRD {name}: {error}"));
        eventually(&format!("CRD {name} to be established"), READY_TIMEOUT, || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                crds.get(&name).await.is_ok_and(|crd| {
                    crd.status
                        .and_then(|status| status.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
            }
        })
        .await;
        // Discovery can lag the Established condition: wait until a list is served.
        let client = self.client().await;
        for version in installed.spec.versions.iter().filter(|v| v.served) {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(&installed.spec.group, &version.name, &installed.spec.names.kind),
                &installed.spec.names.plural,
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            eventually(
                &format!("{} {} to be served", name, version.name),
                READY_TIMEOUT,
                || {
                    let api = api.clone();
                    async move { api.list(&ListParams::default().limit(1)).await.is_ok() }
                },
            )
            .await;
        }
        installed
    }

    /// The process ids of the local control plane's running processes, by name
    /// (`etcd`, `kube-apiserver`, `kube-controller-manager`); empty on an external cluster.
    pub fn process_ids(&self) -> Vec<(&'static str, u32)> {
        match &self.inner {
            Inner::Local(local) => local
                .lock()
                .running
                .iter()
                .map(|p| (p.component.name(), p.child.id()))
                .collect(),
            Inner::External(_) => Vec::new(),
        }
    }

    /// Prints the tails of the processes' logs to stderr (shown with a failing test's output).
    pub fn print_logs(&self) {
        self.diagnostics().print();
    }

    /// Stops the kube-apiserver (SIGKILL to its process group); etcd keeps the data.
    ///
    /// # Panics
    /// On an external cluster.
    pub fn stop_apiserver(&self) {
        self.local("stop the kube-apiserver").stop(Component::ApiServer);
    }

    /// Starts the kube-apiserver again with the same flags and port, and waits until it is ready.
    ///
    /// # Panics
    /// On an external cluster, or when it does not become ready.
    pub async fn start_apiserver(&self) {
        let local = self.local("start the kube-apiserver");
        if let Err(error) = local.start_apiserver().await {
            local.diagnostics().print();
            panic!("restart the kube-apiserver: {error:#}");
        }
    }

    /// Stops and starts the kube-apiserver (see [`stop_apiserver`](Self::stop_apiserver)).
    ///
    /// # Panics
    /// On an external cluster, or when it does not become ready again.
    pub async fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver().await;
    }

    fn local(&self, what: &str) -> &LocalPlane {
        match &self.inner {
            Inner::Local(local) => local,
            Inner::External(_) => panic!(
                "cannot {what} of a cluster named by PLINTH_TEST_KUBECONFIG: this test needs the local control plane fixture"
            ),
        }
    }

    fn diagnostics(&self) -> Diagnostics {
        match &self.inner {
            Inner::Local(local) => local.diagnostics(),
            Inner::External(external) => Diagnostics {
                logs: Vec::new(),
                state_dir: None,
                note: format!(
                    "external cluster from {}: its logs are not collected",
                    external.kubeconfig.display()
                ),
            },
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Inner::Local(local) = &mut self.inner {
            local.shutdown(std::thread::panicking());
        }
    }
}

/// A namespace for one test; deleted on drop unless the test panicked.
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    diagnostics: Diagnostics,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for TestNamespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test namespace {} kept for inspection", self.name);
            self.diagnostics.print();
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete from
        // a thread with a runtime of its own.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let deleted = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(namespace = %self.name, error = %format!("{error:#}"), "could not delete test namespace");
            }
            Err(_) => {
                tracing::warn!(namespace = %self.name, "deleting the test namespace panicked")
            }
        }
    }
}

/// Removes CEL validation rules (`x-kubernetes-validations`) from every schema of a CRD.
pub fn strip_cel_rules(crd: &mut CustomResourceDefinition) {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            let mut value = serde_json::to_value(&*schema).expect("a CRD schema serializes");
            strip(&mut value);
            *schema = serde_json::from_value(value).expect("a CRD schema without CEL rules deserializes");
        }
    }
}

/// Polls `check` every 100 ms until it returns true.
///
/// # Panics
/// When `timeout` passes first, naming `what` was awaited.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `count` pods matching `selector` in `namespace` and marks them
/// running and ready through the `pods/status` subresource.
///
/// The test control plane has no scheduler and no kubelet, so pods never run:
/// this stands in for the kubelet, so that ReplicaSets and Deployments become
/// available the way they would on a cluster.
///
/// # Panics
/// When the pods do not appear within `timeout` or a status cannot be written.
pub async fn mark_pods_ready(client: &Client, namespace: &str, selector: &str, count: usize, timeout: Duration) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(selector);
    eventually(
        &format!("{count} pods matching {selector} in {namespace}"),
        timeout,
        || {
            let pods = pods.clone();
            let params = params.clone();
            async move { pods.list(&params).await.is_ok_and(|list| list.items.len() >= count) }
        },
    )
    .await;
    let found = pods
        .list(&params)
        .await
        .unwrap_or_else(|error| panic!("list pods matching {selector} in {namespace}: {error}"))
        .items;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for pod in found {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers = pod.spec.map(|spec| spec.containers).unwrap_or_default();
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "image": c.image.clone().unwrap_or_default(),
                    "imageID": "",
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "state": { "running": { "startedAt": now } },
                })
            })
            .collect();
        let condition = |type_: &str| serde_json::json!({ "type": type_, "status": "True", "lastTransitionTime": now });
        let status = serde_json::json!({
            "status": {
                "phase": "Running",
                "startTime": now,
                "podIP": "10.244.0.10",
                "conditions": [
                    condition("PodScheduled"),
                    condition("Initialized"),
                    condition("ContainersReady"),
                    condition("Ready"),
                ],
                "containerStatuses": statuses,
            }
        });
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|error| panic!("mark pod {namespace}/{name} ready: {error}"));
    }
}

/// The directory with `kube-apiserver` and `kube-controller-manager`: `PLINTH_KUBE_BIN_DIR`,
/// else `${PLINTH_CACHE_DIR:-$HOME/.cache/plinth}/kubernetes/v1.20.2/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("PLINTH_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/plinth")))
        .unwrap_or_else(|| PathBuf::from(".cache/plinth"));
    cache.join("kubernetes").join(KUBE_VERSION).join("bin")
}

#[derive(Debug, Clone)]
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
}

impl Binaries {
    /// Finds the binaries, or panics telling how to provision them.
    fn find() -> Binaries {
        let dir = bin_dir();
        let apiserver = dir.join("kube-apiserver");
        let controller_manager = dir.join("kube-controller-manager");
        let etcd = [dir.join("etcd")]
            .into_iter()
            .chain(
                std::env::var_os("PATH")
                    .map(|path| std::env::split_paths(&path).map(|p| p.join("etcd")).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
            .chain([PathBuf::from("/usr/bin/etcd")])
            .find(|candidate| is_executable(candidate));
        let mut missing = Vec::new();
        for (name, path) in [
            ("kube-apiserver", &apiserver),
            ("kube-controller-manager", &controller_manager),
        ] {
            if !is_executable(path) {
                missing.push(format!("{name} (looked for {})", path.display()));
            }
        }
        if etcd.is_none() {
            missing.push(format!("etcd (looked in {}, PATH and /usr/bin)", dir.display()));
        }
        match etcd {
            Some(etcd) if missing.is_empty() => Binaries {
                etcd,
                apiserver,
                controller_manager,
            },
            _ => panic!(
                "the test control plane (Kubernetes {KUBE_VERSION}) is not provisioned: missing {}. To fix: {PROVISION_HINT}.",
                missing.join(", ")
            ),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
        }
    }
}

struct Process {
    component: Component,
    child: Child,
}

impl Process {
    /// Kills the process's group with SIGKILL and reaps the process.
    fn kill(mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // The child is its group's leader (process_group(0)).
            if let Err(errno) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                tracing::debug!(component = self.component.name(), %errno, "killpg");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Processes {
    running: Vec<Process>,
}

impl Processes {
    fn take(&mut self, component: Component) -> Option<Process> {
        let index = self.running.iter().position(|p| p.component == component)?;
        Some(self.running.remove(index))
    }
}

struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

impl Ports {
    fn pick() -> anyhow::Result<Ports> {
        // Hold all three listeners at once so that the ports differ.
        let listeners = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()
            .context("bind a free port on 127.0.0.1")?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Ports {
            etcd_client: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
        })
    }
}

struct LocalPlane {
    state_dir: PathBuf,
    keep_state: bool,
    binaries: Binaries,
    pki: Pki,
    ports: Ports,
    server: String,
    admin_kubeconfig: PathBuf,
    processes: Mutex<Processes>,
    minted: AtomicU64,
}

impl LocalPlane {
    async fn start() -> anyhow::Result<LocalPlane> {
        install_crypto_provider();
        let binaries = Binaries::find();
        let root = std::env::temp_dir().join("plinth-control-plane");
        sweep_stale_state(&root);
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let state_dir = root.join(unique_name(&format!("{}", std::process::id())));
            let plane = LocalPlane::prepare(state_dir, binaries.clone())?;
            match plane.boot().await {
                Ok(()) => return Ok(plane),
                Err(error) => {
                    let port_taken = plane.logs_mention("address already in use");
                    if !port_taken || attempt == START_ATTEMPTS {
                        plane.diagnostics().print();
                        return Err(error);
                    }
                    tracing::warn!(attempt, error = %format!("{error:#}"), "a port was taken: starting again on other ports");
                    let dir = plane.state_dir.clone();
                    drop(plane);
                    let _ = fs::remove_dir_all(dir);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("the control plane did not start")))
    }

    /// Makes the state directory, the PKI and the admin kubeconfig.
    fn prepare(state_dir: PathBuf, binaries: Binaries) -> anyhow::Result<LocalPlane> {
        for sub in ["pki", "logs", "kubeconfigs", "etcd", "apiserver"] {
            let dir = state_dir.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restrict {}", dir.display()))?;
        }
        let keep_state = std::env::var(KEEP_STATE_ENV).is_ok_and(|v| v == "1" || v == "true");
        let pki = Pki::create(state_dir.join("pki"))?;
        let ports = Ports::pick()?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        let admin_kubeconfig = state_dir.join("kubeconfigs/admin.kubeconfig");
        let (cert, key) = pki.issue_client("admin", "plinth-test-admin", &["system:masters"])?;
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca_pem,
            "plinth-test-admin",
            &cert,
            &key,
        )?;
        let (cert, key) = pki.issue_client("kube-controller-manager", "system:kube-controller-manager", &[])?;
        write_kubeconfig(
            &state_dir.join("kubeconfigs/kube-controller-manager.kubeconfig"),
            &server,
            &pki.ca_pem,
            "system:kube-controller-manager",
            &cert,
            &key,
        )?;
        Ok(LocalPlane {
            state_dir,
            keep_state,
            binaries,
            pki,
            ports,
            server,
            admin_kubeconfig,
            processes: Mutex::new(Processes::default()),
            minted: AtomicU64::new(0),
        })
    }

    async fn boot(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.spawn(Component::Etcd)?;
        self.spawn(Component::ApiServer)?;
        self.wait_apiserver_ready().await?;
        self.spawn(Component::ControllerManager)?;
        // The controller manager is working once its service-account controller has
        // made the `default` service account.
        let client = client_from_kubeconfig(&self.admin_kubeconfig).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            if accounts.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            if Instant::now() > deadline {
                bail!("kube-controller-manager did not create the default service account within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(
            server = %self.server,
            state_dir = %self.state_dir.display(),
            elapsed = ?started.elapsed(),
            "test control plane ready"
        );
        Ok(())
    }

    fn log_path(&self, component: Component) -> PathBuf {
        self.state_dir.join("logs").join(format!("{}.log", component.name()))
    }

    fn command(&self, component: Component) -> Command {
        let dir = &self.state_dir;
        let pki = dir.join("pki");
        let path = |name: &str| pki.join(name).display().to_string();
        let etcd_url = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer_url = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let mut command;
        match component {
            Component::Etcd => {
                command = Command::new(&self.binaries.etcd);
                command.args([
                    "--name=plinth-test".to_owned(),
                    format!("--data-dir={}", dir.join("etcd").display()),
                    format!("--listen-client-urls={etcd_url}"),
                    format!("--advertise-client-urls={etcd_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster=plinth-test={peer_url}"),
                    "--initial-cluster-state=new".to_owned(),
                    "--logger=zap".to_owned(),
                    "--log-outputs=stderr".to_owned(),
                ]);
                if cfg!(target_arch = "aarch64") {
                    command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
                }
            }
            Component::ApiServer => {
                command = Command::new(&self.binaries.apiserver);
                command.args([
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".to_owned(),
                    "--advertise-address=127.0.0.1".to_owned(),
                    format!("--secure-port={}", self.ports.apiserver),
                    "--insecure-port=0".to_owned(),
                    format!("--cert-dir={}", dir.join("apiserver").display()),
                    format!("--tls-cert-file={}", path("apiserver.crt")),
                    format!("--tls-private-key-file={}", path("apiserver.key")),
                    format!("--client-ca-file={}", path("ca.crt")),
                    "--authorization-mode=RBAC".to_owned(),
                    format!("--service-account-key-file={}", path("sa.pub")),
                    format!("--service-account-signing-key-file={}", path("sa.key")),
                    format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    // Loopback cannot be an endpoint of the `kubernetes` service.
                    "--endpoint-reconciler-type=none".to_owned(),
                    "--allow-privileged=true".to_owned(),
                    "--profiling=false".to_owned(),
                ]);
            }
            Component::ControllerManager => {
                command = Command::new(&self.binaries.controller_manager);
                command.args([
                    format!(
                        "--kubeconfig={}",
                        dir.join("kubeconfigs/kube-controller-manager.kubeconfig").display()
                    ),
                    "--leader-elect=false".to_owned(),
                    // No serving ports: nothing to collide with other control planes.
                    "--port=0".to_owned(),
                    "--secure-port=0".to_owned(),
                    "--use-service-account-credentials=true".to_owned(),
                    format!("--service-account-private-key-file={}", path("sa.key")),
                    format!("--root-ca-file={}", path("ca.crt")),
                    format!("--cluster-signing-cert-file={}", path("ca.crt")),
                    format!("--cluster-signing-key-file={}", path("ca.key")),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--profiling=false".to_owned(),
                    // The default client-side limit (20 writes a second) makes thousands of Deployments (the
                    // operator benchmark) take an hour to settle; a test wants the controllers' behaviour, not
                    // their throttle.
                    "--kube-api-qps=500".to_owned(),
                    "--kube-api-burst=1000".to_owned(),
                ]);
            }
        }
        command
    }

    fn lock(&self) -> MutexGuard<'_, Processes> {
        self.processes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(&self, component: Component) -> anyhow::Result<()> {
        let log_path = self.log_path(component);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut command = self.command(component);
        let _ = writeln!(
            log,
            "==> {:?} {:?}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>()
        );
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicate the log file")?)
            .stderr(log);
        let child = spawn_tied_to_this_process(command)
            .with_context(|| format!("start {} ({})", component.name(), self.binaries_hint(component)))?;
        tracing::debug!(component = component.name(), pid = child.id(), "started");
        self.lock().running.push(Process { component, child });
        Ok(())
    }

    fn binaries_hint(&self, component: Component) -> String {
        let binary = match component {
            Component::Etcd => &self.binaries.etcd,
            Component::ApiServer => &self.binaries.apiserver,
            Component::ControllerManager => &self.binaries.controller_manager,
        };
        binary.display().to_string()
    }

    fn stop(&self, component: Component) {
        let process = self.lock().take(component);
        if let Some(process) = process {
            process.kill();
            tracing::debug!(component = component.name(), "stopped");
        }
    }

    async fn start_apiserver(&self) -> anyhow::Result<()> {
        self.stop(Component::ApiServer);
        self.spawn(Component::ApiServer)?;
        self.wait_apiserver_ready().await
    }

    /// Fails when a started process has exited.
    fn check_running(&self) -> anyhow::Result<()> {
        let mut processes = self.lock();
        for process in &mut processes.running {
            if let Some(status) = process.child.try_wait().context("check a control plane process")? {
                bail!(
                    "{} exited ({status}); its log is {}",
                    process.component.name(),
                    self.log_path(process.component).display()
                );
            }
        }
        Ok(())
    }

    async fn wait_apiserver_ready(&self) -> anyhow::Result<()> {
        let client = client_from_kubeconfig(&self.admin_kubeconfig).await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .context("build the /readyz request")?;
            let last = match client.request_text(request).await {
                Ok(_) => return Ok(()),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver at {} not ready within {READY_TIMEOUT:?}: {last}",
                    self.server
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let file_stem = format!("{}-{n}", sanitize(user));
        let (cert, key) = self.pki.issue_client(&file_stem, user, groups)?;
        let path = self
            .state_dir
            .join("kubeconfigs")
            .join(format!("{file_stem}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.pki.ca_pem, user, &cert, &key)?;
        Ok(path)
    }

    fn logs_mention(&self, needle: &str) -> bool {
        [Component::Etcd, Component::ApiServer, Component::ControllerManager]
            .into_iter()
            .any(|c| fs::read_to_string(self.log_path(c)).is_ok_and(|text| text.contains(needle)))
    }

    fn diagnostics(&self) -> Diagnostics {
        Diagnostics {
            logs: [Component::Etcd, Component::ApiServer, Component::ControllerManager]
                .into_iter()
                .map(|c| (c.name().to_owned(), self.log_path(c)))
                .collect(),
            state_dir: Some(self.state_dir.clone()),
            note: format!("test control plane at {}", self.server),
        }
    }

    fn shutdown(&mut self, panicking: bool) {
        self.stop(Component::ControllerManager);
        self.stop(Component::ApiServer);
        self.stop(Component::Etcd);
        if panicking || self.keep_state {
            eprintln!("test control plane state kept in {}", self.state_dir.display());
            if panicking {
                self.diagnostics().print();
            }
        } else if let Err(error) = fs::remove_dir_all(&self.state_dir) {
            tracing::warn!(state_dir = %self.state_dir.display(), %error, "could not remove the state directory");
        }
    }
}

impl Drop for LocalPlane {
    fn drop(&mut self) {
        // Also reached when start() gives up on a half-started plane.
        let processes = std::mem::take(&mut self.lock().running);
        for process in processes.into_iter().rev() {
            process.kill();
        }
    }
}

/// An existing cluster named by `PLINTH_TEST_KUBECONFIG`.
struct ExternalCluster {
    kubeconfig: PathBuf,
    server: String,
    scratch: PathBuf,
    minted: AtomicU64,
}

impl ExternalCluster {
    async fn open(kubeconfig: PathBuf) -> anyhow::Result<ExternalCluster> {
        install_crypto_provider();
        let client = client_from_kubeconfig(&kubeconfig).await?;
        let version = client.apiserver_version().await.with_context(|| {
            format!(
                "reach the cluster named by {EXTERNAL_KUBECONFIG_ENV}={}",
                kubeconfig.display()
            )
        })?;
        let config =
            Config::from_custom_kubeconfig(Kubeconfig::read_from(&kubeconfig)?, &KubeConfigOptions::default()).await?;
        let scratch = std::env::temp_dir()
            .join("plinth-control-plane")
            .join(unique_name(&format!("{}", std::process::id())));
        fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        tracing::info!(server = %config.cluster_url, version = %version.git_version, "running against an external cluster");
        Ok(ExternalCluster {
            kubeconfig,
            server: config.cluster_url.to_string(),
            scratch,
            minted: AtomicU64::new(0),
        })
    }

    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let mut config = Kubeconfig::read_from(&self.kubeconfig)?;
        let context_name = config
            .current_context
            .clone()
            .context("the kubeconfig has no current-context")?;
        let user_name = config
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())
            .with_context(|| format!("context {context_name} names no user"))?;
        let auth = config
            .auth_infos
            .iter_mut()
            .find(|a| a.name == user_name)
            .and_then(|a| a.auth_info.as_mut())
            .with_context(|| format!("user {user_name} not found in the kubeconfig"))?;
        auth.impersonate = Some(user.to_owned());
        auth.impersonate_groups = (!groups.is_empty()).then(|| groups.iter().map(|g| (*g).to_owned()).collect());
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let path = self.scratch.join(format!("{}-{n}.kubeconfig", sanitize(user)));
        let text = serde_json::to_string_pretty(&config)?;
        write_private(&path, text.as_bytes())?;
        Ok(path)
    }
}

impl Drop for ExternalCluster {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// Where to look when a test fails.
#[derive(Debug, Clone)]
struct Diagnostics {
    logs: Vec<(String, PathBuf)>,
    state_dir: Option<PathBuf>,
    note: String,
}

impl Diagnostics {
    fn print(&self) {
        let mut out = String::new();
        out.push_str(&format!("\n===== {} =====\n", self.note));
        if let Some(dir) = &self.state_dir {
            out.push_str(&format!("state directory: {}\n", dir.display()));
        }
        for (name, path) in &self.logs {
            out.push_str(&format!(
                "----- last {LOG_TAIL_LINES} lines of {name} ({}) -----\n",
                path.display()
            ));
            match tail(path, LOG_TAIL_LINES) {
                Ok(lines) => {
                    for line in lines {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
                Err(error) => out.push_str(&format!("(cannot read: {error})\n")),
            }
        }
        out.push_str("===== end of control plane logs =====\n");
        eprint!("{out}");
    }
}

fn tail(path: &Path, lines: usize) -> io::Result<VecDeque<String>> {
    let mut last = VecDeque::with_capacity(lines);
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line.unwrap_or_else(|_| "(not UTF-8)".to_owned());
        if last.len() == lines {
            last.pop_front();
        }
        last.push_back(line);
    }
    Ok(last)
}

/// The test CA and the certificates it issues.
struct Pki {
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
    serial: AtomicU64,
}

impl Pki {
    fn create(dir: PathBuf) -> anyhow::Result<Pki> {
        let ca_key = KeyPair::generate().context("generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "plinth-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.serial_number = Some(SerialNumber::from(1u64));
        let ca_pem = ca_params.self_signed(&ca_key).context("self-sign the CA")?.pem();
        write_private(&dir.join("ca.crt"), ca_pem.as_bytes())?;
        write_private(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;

        let pki = Pki {
            dir,
            ca_params,
            ca_key,
            ca_pem,
            serial: AtomicU64::new(2),
        };
        let mut serving = pki.leaf_params("kube-apiserver", &[])?;
        serving.subject_alt_names = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.0.0.1",
        ]
        .into_iter()
        .map(|name| {
            Ok(match name.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(name.try_into()?),
            })
        })
        .collect::<Result<_, rcgen::Error>>()?;
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.issue("apiserver", &serving)?;

        let service_accounts = KeyPair::generate().context("generate the service-account key")?;
        write_private(&pki.dir.join("sa.key"), service_accounts.serialize_pem().as_bytes())?;
        write_private(&pki.dir.join("sa.pub"), service_accounts.public_key_pem().as_bytes())?;
        Ok(pki)
    }

    fn leaf_params(&self, common_name: &str, organizations: &[&str]) -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        // A distinguished name holds one value per attribute type; the second group
        // goes in as the same attribute (organizationName, 2.5.4.10) spelled as a custom type.
        match organizations {
            [] => {}
            [one] => params.distinguished_name.push(DnType::OrganizationName, *one),
            [one, two] => {
                params.distinguished_name.push(DnType::OrganizationName, *one);
                params
                    .distinguished_name
                    .push(DnType::CustomDnType(vec![2, 5, 4, 10]), *two);
            }
            more => bail!(
                "a test identity can have at most two groups, {} given ({more:?}): bind the roles to fewer groups",
                more.len()
            ),
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.serial_number = Some(SerialNumber::from(self.serial.fetch_add(1, Ordering::Relaxed)));
        Ok(params)
    }

    /// Issues a certificate for `params`; writes `<stem>.crt` and `<stem>.key`, returns their PEM.
    fn issue(&self, stem: &str, params: &CertificateParams) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate().context("generate a key")?;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("sign the certificate {stem}"))?
            .pem();
        let key = key.serialize_pem();
        write_private(&self.dir.join(format!("{stem}.crt")), cert.as_bytes())?;
        write_private(&self.dir.join(format!("{stem}.key")), key.as_bytes())?;
        Ok((cert, key))
    }

    fn issue_client(&self, stem: &str, user: &str, groups: &[&str]) -> anyhow::Result<(String, String)> {
        let mut params = self.leaf_params(user, groups)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, &params)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("write {}", path.display()))
}

/// Writes a self-contained kubeconfig (certificates embedded).
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CLUSTER_NAME,
            "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{
            "name": user,
            "user": { "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem) },
        }],
        "contexts": [{
            "name": CLUSTER_NAME,
            "context": { "cluster": CLUSTER_NAME, "user": user },
        }],
        "current-context": CLUSTER_NAME,
    });
    write_private(path, serde_json::to_string_pretty(&config)?.as_bytes())
}

/// A client from a kubeconfig file, bound to the current runtime.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("read kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", path.display()))?;
    Client::try_from(config).with_context(|| format!("build a client from {}", path.display()))
}

/// Installs rustls' ring provider for the process (kube's client needs one).
pub fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err means another provider is already installed: that one serves too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `<prefix>-<6 hex digits>`, a valid DNS label, unique within and across test processes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
    .bytes()
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut prefix = sanitize(prefix);
    prefix.truncate(50);
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    format!("{prefix}-{:06x}", hash & 0xff_ffff)
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect()
}

/// Removes state directories left by test processes that no longer run.
fn sweep_stale_state(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!(dir = %entry.path().display(), "removing the state of a finished test process");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` in its own process group, with SIGKILL as its parent-death signal.
///
/// The parent-death signal fires when the *thread* that forked exits, so every
/// child is forked by one thread that lives as long as the test process: test
/// runtimes come and go, the control plane's processes stay until the process ends.
fn spawn_tied_to_this_process(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    command.process_group(0);
    die_with_parent(&mut command);
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("plinth-control-plane-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the control plane's spawner thread");
        requests
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the control plane's spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the control plane's spawner thread did not answer"))?
}

#[allow(
    unsafe_code,
    reason = "pre_exec is unsafe; the closure only makes async-signal-safe system calls and does not allocate"
)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: runs in the forked child before exec; prctl and getppid are
    // async-signal-safe and nothing here allocates or takes a lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}
