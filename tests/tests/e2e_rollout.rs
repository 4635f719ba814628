//! End-to-end tests of progressive Blueprint rollouts against the real test control plane
//! (kube-apiserver, kube-controller-manager and etcd v1.20.2).
//!
//! The controller runs in-process (`plinth_operator::reconcile::run`, which also drives rollouts),
//! scoped to the test's namespace; each test has a Blueprint of its own. Revisions are
//! ControllerRevisions in `plinth-system`.
//!
//! The control plane has no kubelet, so pods never run. A small stand-in kubelet in each test marks
//! pods ready through the `pods/status` subresource, except the pods of Applications the test makes
//! unhealthy: their Deployments never become available, which is how a failing health gate is
//! simulated here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure stops the test with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use plinth_api::rollout::{Phase, RolloutStatus};
use plinth_api::{Application, Blueprint};
use plinth_operator::cli::rollout::{RolloutCommand, Target, execute, render};
use plinth_operator::rollout::order::{Candidate, order};
use plinth_tests::control_plane::{self, ControlPlane};
use plinth_tests::operator::{ChartIdentity, InProcess, init_tracing};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(180);

/// Installs the CRDs and the revisions' namespace, once per test process.
async fn installed(cp: &ControlPlane) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        // The fixture removes CEL rules on servers before 1.25 and waits until each API is served.
        for crd in plinth_api::crds() {
            cp.install_crd(&crd).await;
        }
        let client = cp.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "plinth-system"}})).unwrap();
        let _ = Api::<Namespace>::all(client).create(&PostParams::default(), &ns).await;
    })
    .await;
}

/// The bundled `web` Blueprint under another name, with a rollout strategy and `rev` as a pod annotation (a
/// change of `defaults`, which changes every Deployment's pod template).
fn blueprint(name: &str, rollout: &Value, rev: &str) -> Value {
    let web = &plinth_operator::render::bundled::objects().unwrap()["web"];
    let mut v = serde_json::to_value(web).unwrap();
    v["apiVersion"] = json!(plinth_api::API_VERSION);
    v["kind"] = json!("Blueprint");
    v["metadata"] = json!({"name": name});
    // The 1.20 test server refuses empty strings in custom resources (kubernetes#99804): no core group here.
    v["spec"]["policy"]["allowedPermissions"] =
        json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]);
    v["spec"]["defaults"]["values"] = json!({"annotations": {"example.com/rev": rev}});
    v["spec"]["rollout"] = rollout.clone();
    v
}

async fn put_blueprint(client: &Client, v: Value) {
    let bps: Api<Blueprint> = Api::all(client.clone());
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let mut bp: Blueprint = serde_json::from_value(v).unwrap();
    match bps.get_opt(&name).await.unwrap() {
        None => {
            bps.create(&PostParams::default(), &bp).await.unwrap();
        }
        Some(existing) => {
            bp.metadata.resource_version = existing.metadata.resource_version;
            bps.replace(&name, &PostParams::default(), &bp).await.unwrap();
        }
    }
}

async fn annotate(client: &Client, bp: &str, key: &str, value: Option<&str>) {
    Api::<Blueprint>::all(client.clone())
        .patch(
            bp,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

/// The operator in-process for one namespace (it also drives rollouts), under the chart's operator identity.
async fn operator(cp: &'static ControlPlane, namespace: &str) -> InProcess {
    InProcess::start(ChartIdentity::shared(cp).await, namespace, Duration::from_secs(5)).await
}

/// Stands in for the kubelet: marks every pod of the namespace ready, except those of the `sick` Applications.
fn kubelet(client: Client, namespace: String, sick: Arc<Mutex<BTreeSet<String>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for pod in list.items {
                    let app = pod.labels().get("plinth.dev/application").cloned().unwrap_or_default();
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if ready || sick.lock().unwrap().contains(&app) {
                        continue;
                    }
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
                    let statuses: Vec<Value> = containers
                        .iter()
                        .map(|c| {
                            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                                   "ready": true, "started": true, "restartCount": 0,
                                   "state": {"running": {"startedAt": now}}})
                        })
                        .collect();
                    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                    let status = json!({"status": {
                        "phase": "Running", "startTime": now, "podIP": "10.244.0.10",
                        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                        "containerStatuses": statuses,
                    }});
                    let _ = pods
                        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn create_apps(client: &Client, ns: &str, bp: &str, names: &[String], pinned: Option<(&str, i64)>) {
    let api: Api<Application> = Api::namespaced(client.clone(), ns);
    for name in names {
        let mut spec = json!({"blueprint": bp, "image": "ghcr.io/acme/shop:1.0", "port": 8080, "replicas": 1});
        if let Some((p, rev)) = pinned
            && p == name
        {
            spec["blueprintRevision"] = json!(rev);
        }
        let app: Application = serde_json::from_value(json!({
            "apiVersion": plinth_api::API_VERSION, "kind": "Application",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        api.create(&PostParams::default(), &app).await.unwrap();
    }
}

/// `name → the revision its status says it runs`, and whether it is Ready.
async fn running(client: &Client, ns: &str) -> BTreeMap<String, (Option<i64>, bool)> {
    Api::<Application>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| {
            let status = a.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (a.name_any(), (status.blueprint.and_then(|b| b.revision), ready))
        })
        .collect()
}

async fn rollout(client: &Client, bp: &str) -> Option<RolloutStatus> {
    Api::<Blueprint>::all(client.clone())
        .get(bp)
        .await
        .unwrap()
        .status
        .and_then(|s| s.rollout)
}

/// Polls the rollout status until `check` holds, calling `seen` with every status observed on the way.
async fn wait_rollout(
    client: &Client,
    bp: &str,
    what: &str,
    mut seen: impl FnMut(&RolloutStatus),
    check: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = rollout(client, bp).await {
            seen(&r);
            if check(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; rollout: {}",
                serde_json::to_string_pretty(&r).unwrap()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; no rollout status"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_running(
    client: &Client,
    ns: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, (Option<i64>, bool)>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = running(client, ns).await;
        if check(&r) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a `plinth rollout` command as the CLI does, with the test's client.
async fn cli(client: &Client, cmd: RolloutCommand) {
    assert_eq!(execute(client, &cmd).await, Ok(0), "{cmd:?}");
}

fn target(bp: &str) -> Target {
    Target {
        blueprint: bp.to_owned(),
        kubeconfig: None,
        context: None,
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("app{i:02}")).collect()
}

/// The order a rollout of `bp` moves the Applications of `ns` in (the operator's own ordering function).
fn rollout_order(bp: &str, ns: &str, apps: &[String]) -> Vec<String> {
    order(
        bp,
        apps.iter()
            .map(|a| Candidate {
                key: format!("{ns}/{a}"),
                early: false,
            })
            .collect(),
    )
    .into_iter()
    .map(|c| c.key.split_once('/').unwrap().1.to_owned())
    .collect()
}

async fn revisions(client: &Client, bp: &str) -> Vec<i64> {
    let mut v: Vec<i64> = Api::<ControllerRevision>::namespaced(client.clone(), "plinth-system")
        .list(&ListParams::default().labels(&format!("plinth.dev/blueprint={bp}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.revision)
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_across_20_applications_in_3_steps_reaches_all_of_them_and_leaves_the_pinned_one() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("ro-canary").await;
    let client = cp.client().await;
    let bp = "ro-canary";
    let strategy = json!({"strategy": "Canary", "progressDeadlineSeconds": 120,
        "steps": [{"percent": 10}, {"applications": 5}, {"percent": 50}]});
    put_blueprint(&client, blueprint(bp, &strategy, "1")).await;
    let op = operator(cp, ns.name()).await;
    let sick = Arc::new(Mutex::new(BTreeSet::new()));
    let kubelet = kubelet(client.clone(), ns.name().to_owned(), Arc::clone(&sick));
    let mut apps = names(20);
    create_apps(&client, ns.name(), bp, &apps, None).await;
    apps.push("pinned".into());
    create_apps(&client, ns.name(), bp, &["pinned".to_owned()], Some(("pinned", 1))).await;
    wait_running(&client, ns.name(), "every Application ready on revision 1", |r| {
        r.len() == 21 && r.values().all(|(rev, ready)| *rev == Some(1) && *ready)
    })
    .await;
    // An Application reports its Blueprint's generation until the rollout driver has recorded a revision: wait for
    // the driver, so that the edit below is a change from revision 1 and not the first revision it sees.
    wait_rollout(&client, bp, "revision 1 recorded", |_| {}, |r| r.revision == 1).await;

    put_blueprint(&client, blueprint(bp, &strategy, "2")).await;
    let mut moved_counts = BTreeSet::new();
    let done = wait_rollout(
        &client,
        bp,
        "the rollout of revision 2 to complete",
        |r| {
            if r.revision == 2 && r.phase != Phase::Completed {
                moved_counts.insert(r.moved.len());
            }
        },
        |r| r.revision == 2 && r.phase == Phase::Completed,
    )
    .await;
    assert_eq!((done.stable_revision, done.total, done.failed), (2, 21, 0));
    assert_eq!(done.pinned, [format!("{}/pinned", ns.name())]);
    // The steps moved 2 (10 %), then 7 (5 more), then 10 (50 %), then all 20.
    for n in [2, 7, 10, 20] {
        assert!(moved_counts.contains(&n), "a step moved {n}: {moved_counts:?}");
    }
    wait_running(
        &client,
        ns.name(),
        "every Application on revision 2, the pinned one on 1",
        |r| {
            r.iter()
                .all(|(name, (rev, _))| *rev == Some(if name == "pinned" { 1 } else { 2 }))
        },
    )
    .await;
    assert_eq!(
        revisions(&client, bp).await,
        [1, 2],
        "revision 1 is kept: the pinned Application runs it"
    );
    kubelet.abort();
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gate_pauses_and_moves_back_exactly_the_moved_applications() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("ro-fail").await;
    let client = cp.client().await;
    let bp = "ro-fail";
    let strategy = json!({"strategy": "Canary", "progressDeadlineSeconds": 20,
        "steps": [{"applications": 2}, {"pause": {}}]});
    put_blueprint(&client, blueprint(bp, &strategy, "1")).await;
    let op = operator(cp, ns.name()).await;
    let sick = Arc::new(Mutex::new(BTreeSet::new()));
    let kubelet = kubelet(client.clone(), ns.name().to_owned(), Arc::clone(&sick));
    let apps = names(6);
    create_apps(&client, ns.name(), bp, &apps, None).await;
    wait_running(&client, ns.name(), "every Application ready on revision 1", |r| {
        r.len() == 6 && r.values().all(|(rev, ready)| *rev == Some(1) && *ready)
    })
    .await;
    // An Application reports its Blueprint's generation until the rollout driver has recorded a revision: wait for
    // the driver, so that the edit below is a change from revision 1 and not the first revision it sees.
    wait_rollout(&client, bp, "revision 1 recorded", |_| {}, |r| r.revision == 1).await;
    // The second Application to move never becomes available on the new revision.
    let first = rollout_order(bp, ns.name(), &apps);
    let (moved, bad) = (first[..2].to_vec(), first[1].clone());
    sick.lock().unwrap().insert(bad.clone());

    put_blueprint(&client, blueprint(bp, &strategy, "2")).await;
    let mut ever_moved = BTreeSet::new();
    let failed = wait_rollout(
        &client,
        bp,
        "the step to fail",
        |r| ever_moved.extend(r.moved.iter().cloned()),
        |r| r.revision == 2 && r.phase == Phase::Failed,
    )
    .await;
    let key = |n: &str| format!("{}/{n}", ns.name());
    assert_eq!(
        ever_moved,
        moved.iter().map(|m| key(m)).collect::<BTreeSet<_>>(),
        "only the first two moved"
    );
    assert_eq!(failed.failures.len(), 1, "{failed:?}");
    assert_eq!(failed.failures[0].application, key(&bad));
    assert!(
        failed.failures[0].reason.contains("not healthy within 20s"),
        "{failed:?}"
    );
    assert!(failed.moved.is_empty());
    // The moved ones go back to revision 1; the others never left it.
    sick.lock().unwrap().clear();
    wait_running(&client, ns.name(), "every Application back on revision 1", |r| {
        r.values().all(|(rev, _)| *rev == Some(1))
    })
    .await;
    assert_eq!(
        rollout(&client, bp).await.unwrap().phase,
        Phase::Failed,
        "it stays paused"
    );
    let view = render(&Api::<Blueprint>::all(client.clone()).get(bp).await.unwrap());
    assert!(
        view.contains("phase:     Failed") && view.contains(&format!("failed:    {}", key(&bad))),
        "{view}"
    );

    // `plinth rollout undo` puts revision 1's content back: that is the stable revision, so it completes at once.
    cli(
        &client,
        RolloutCommand::Undo {
            target: target(bp),
            to_revision: None,
        },
    )
    .await;
    let undone = wait_rollout(&client, bp, "the undo", |_| {}, |r| r.phase == Phase::Completed).await;
    assert_eq!((undone.revision, undone.stable_revision), (1, 1));
    let spec = Api::<Blueprint>::all(client.clone()).get(bp).await.unwrap().spec;
    assert_eq!(spec.defaults.values.unwrap()["annotations"]["example.com/rev"], "1");
    assert!(spec.rollout.is_some(), "the rollout strategy stays");
    kubelet.abort();
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_restart_and_a_new_edit_mid_rollout() {
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("ro-pause").await;
    let client = cp.client().await;
    let bp = "ro-pause";
    let strategy = json!({"strategy": "Canary", "progressDeadlineSeconds": 120,
        "steps": [{"applications": 1}, {"pause": {}}, {"applications": 1}, {"pause": {}}]});
    put_blueprint(&client, blueprint(bp, &strategy, "1")).await;
    let op = operator(cp, ns.name()).await;
    let kubelet = kubelet(client.clone(), ns.name().to_owned(), Arc::default());
    let apps = names(4);
    create_apps(&client, ns.name(), bp, &apps, None).await;
    wait_running(&client, ns.name(), "every Application ready on revision 1", |r| {
        r.len() == 4 && r.values().all(|(rev, ready)| *rev == Some(1) && *ready)
    })
    .await;
    // An Application reports its Blueprint's generation until the rollout driver has recorded a revision: wait for
    // the driver, so that the edit below is a change from revision 1 and not the first revision it sees.
    wait_rollout(&client, bp, "revision 1 recorded", |_| {}, |r| r.revision == 1).await;

    put_blueprint(&client, blueprint(bp, &strategy, "2")).await;
    let paused = wait_rollout(
        &client,
        bp,
        "the pause at step 1",
        |_| {},
        |r| r.revision == 2 && r.phase == Phase::Paused && r.step == 1,
    )
    .await;
    assert_eq!(paused.moved.len(), 1);

    // A restarted operator continues from the status in the API: still paused at step 1, then resumed.
    op.stop().await;
    let op = operator(cp, ns.name()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = rollout(&client, bp).await.unwrap();
    assert_eq!((still.phase, still.step, still.moved.len()), (Phase::Paused, 1, 1));
    cli(&client, RolloutCommand::Resume(target(bp))).await;
    let second = wait_rollout(
        &client,
        bp,
        "the pause at step 3",
        |_| {},
        |r| r.phase == Phase::Paused && r.step == 3,
    )
    .await;
    assert_eq!(second.moved.len(), 2);
    wait_running(&client, ns.name(), "two Applications on revision 2", |r| {
        r.values().filter(|(rev, _)| *rev == Some(2)).count() == 2
    })
    .await;

    // A new edit supersedes revision 2: it starts again from the stable revision 1.
    put_blueprint(&client, blueprint(bp, &strategy, "3")).await;
    let third = wait_rollout(
        &client,
        bp,
        "revision 3 paused at step 1",
        |_| {},
        |r| r.revision == 3 && r.phase == Phase::Paused && r.step == 1,
    )
    .await;
    assert_eq!(third.stable_revision, 1);
    wait_running(&client, ns.name(), "one Application on 3, the rest on 1", |r| {
        r.values().filter(|(rev, _)| *rev == Some(3)).count() == 1
            && r.values().filter(|(rev, _)| *rev == Some(1)).count() == 3
    })
    .await;
    // `plinth rollout pause` holds it even when resumed steps would go on.
    annotate(&client, bp, "plinth.dev/rollout-pause", Some("true")).await;
    annotate(&client, bp, "plinth.dev/rollout-resume", Some("2")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rollout(&client, bp).await.unwrap().step, 1, "held by the pause");
    annotate(&client, bp, "plinth.dev/rollout-pause", None).await;
    wait_rollout(&client, bp, "step 3", |_| {}, |r| r.revision == 3 && r.step == 3).await;
    cli(&client, RolloutCommand::Pause(target(bp))).await;
    cli(&client, RolloutCommand::Resume(target(bp))).await;
    wait_rollout(
        &client,
        bp,
        "completion",
        |_| {},
        |r| r.revision == 3 && r.phase == Phase::Completed,
    )
    .await;
    wait_running(&client, ns.name(), "every Application on revision 3", |r| {
        r.values().all(|(rev, _)| *rev == Some(3))
    })
    .await;
    kubelet.abort();
    op.stop().await;
}

/// A metrics endpoint the test controls: `plinth_test_errors{blueprint="…"} <value>`.
async fn metrics_endpoint(blueprint: &'static str, value: Arc<std::sync::atomic::AtomicU64>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let value = f64::from_bits(value.load(std::sync::atomic::Ordering::SeqCst));
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = format!(
                    "# TYPE plinth_test_errors gauge\nplinth_test_errors{{blueprint=\"{blueprint}\"}} {value}\n"
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// A Prometheus server (Debian's `prometheus` package) scraping `target` every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: PathGuard,
}

struct PathGuard(std::path::PathBuf);

impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn prometheus(target_port: u16) -> Prometheus {
    let bin = std::path::Path::new("/usr/bin/prometheus");
    assert!(
        bin.exists(),
        "the Prometheus gate test needs a real Prometheus server: install Debian's `prometheus` package (apt-get install prometheus)"
    );
    let dir = std::env::temp_dir().join(format!("plinth-prometheus-{}-{target_port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let p = Prometheus {
        child,
        url,
        _dir: PathGuard(dir),
    };
    let ready = p.url.clone();
    control_plane::eventually("Prometheus ready", WAIT, || {
        let ready = ready.clone();
        async move {
            tokio::net::TcpStream::connect(ready.trim_start_matches("http://"))
                .await
                .is_ok()
        }
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_gate_passes_and_fails_against_a_real_prometheus() {
    use plinth_operator::rollout::plan::Analysis;
    use plinth_operator::rollout::prometheus::evaluate;
    init_tracing();
    let value = Arc::new(std::sync::atomic::AtomicU64::new(0.0f64.to_bits()));
    let port = metrics_endpoint("ro-analysis", Arc::clone(&value)).await;
    let prom = prometheus(port).await;
    let spec = plinth_api::rollout::Analysis {
        query: "max(plinth_test_errors{blueprint=\"{{blueprint}}\"})".into(),
        max: Some(1.0),
        min: None,
    };
    let until = |want: fn(&Analysis) -> bool, what: &'static str| {
        let (url, spec) = (prom.url.clone(), spec.clone());
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let got = evaluate(&url, &spec, "ro-analysis", 2).await;
                if want(&got) {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the gate to {what}: {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Passing: the scraped value (0) is within the maximum.
    let passed = until(|a| matches!(a, Analysis::Passed(_)), "pass").await;
    assert_eq!(
        passed,
        Analysis::Passed("max(plinth_test_errors{blueprint=\"ro-analysis\"}) = 0".into())
    );
    // Failing: the endpoint now reports 5 errors.
    value.store(5.0f64.to_bits(), std::sync::atomic::Ordering::SeqCst);
    let failed = until(|a| matches!(a, Analysis::Failed(_)), "fail").await;
    let Analysis::Failed(why) = failed else { unreachable!() };
    assert!(why.contains("= 5, above the maximum 1"), "{why}");
    // A query Prometheus refuses fails the gate with Prometheus's reason.
    let bad = plinth_api::rollout::Analysis {
        query: "max(".into(),
        max: Some(1.0),
        min: None,
    };
    let refused = evaluate(&prom.url, &bad, "ro-analysis", 2).await;
    assert!(
        matches!(&refused, Analysis::Failed(m) if m.contains("bad_data")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plinth_diff_shows_what_the_operator_would_change_by_server_side_dry_run() {
    use plinth_operator::cli::diff::{LiveDiffArgs, live};
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("ro-livediff").await;
    let client = cp.client().await;
    let bp = "ro-livediff";
    put_blueprint(&client, blueprint(bp, &json!({"strategy": "Immediate"}), "1")).await;
    let op = operator(cp, ns.name()).await;
    let kubelet = kubelet(client.clone(), ns.name().to_owned(), Arc::default());
    create_apps(&client, ns.name(), bp, &["shop".to_owned()], None).await;
    wait_running(&client, ns.name(), "the Application ready", |r| {
        r.get("shop").is_some_and(|(_, ready)| *ready)
    })
    .await;
    let dir = std::env::temp_dir().join(format!("plinth-livediff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |image: &str| {
        format!(
            "apiVersion: plinth.dev/v1alpha1\nkind: Application\nmetadata:\n  name: shop\n  namespace: {}\nspec:\n  blueprint: {bp}\n  image: {image}\n  port: 8080\n  replicas: 1\n",
            ns.name()
        )
    };
    let args = |file: &str| LiveDiffArgs {
        paths: vec![dir.join(file)],
        namespace: "default".into(),
        platform: None,
        kubeconfig: None,
        context: None,
    };
    std::fs::write(dir.join("same.yaml"), manifest("ghcr.io/acme/shop:1.0")).unwrap();
    let (text, changed) = live(&client, &args("same.yaml")).await.unwrap();
    assert!(!changed, "nothing changes for the applied spec:\n{text}");
    assert!(text.ends_with("0 objects would change, 0 would be created\n"), "{text}");

    std::fs::write(dir.join("new.yaml"), manifest("ghcr.io/acme/shop:2.0")).unwrap();
    let (text, changed) = live(&client, &args("new.yaml")).await.unwrap();
    assert!(changed, "{text}");
    assert!(
        text.contains(&format!("~ Deployment {}/shop would change", ns.name())),
        "{text}"
    );
    assert!(
        text.contains("-        - image: ghcr.io/acme/shop:1.0")
            || text.contains("-          image: ghcr.io/acme/shop:1.0"),
        "{text}"
    );
    assert!(text.contains("ghcr.io/acme/shop:2.0"), "{text}");
    assert!(text.ends_with("1 objects would change, 0 would be created\n"), "{text}");
    // A dry run: the cluster still runs 1.0.
    let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns.name())
        .get("shop")
        .await
        .unwrap();
    let image = d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "ghcr.io/acme/shop:1.0");
    std::fs::remove_dir_all(&dir).ok();
    kubelet.abort();
    op.stop().await;
}

/// Stands in for the reconciler: each Application reports, Ready, the revision the rollout gives it.
async fn report_as_reconciled(client: &Client, ns: &str, bp: &str) {
    let bps: Api<Blueprint> = Api::all(client.clone());
    let rollout = bps.get(bp).await.unwrap().status.and_then(|s| s.rollout);
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    for app in apps.list(&ListParams::default()).await.unwrap().items {
        let key = format!("{ns}/{}", app.name_any());
        let revision =
            plinth_operator::rollout::plan::revision_for(&key, app.spec.blueprint_revision, rollout.as_ref())
                .unwrap_or(1);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "observedGeneration": app.metadata.generation,
            "blueprint": {"name": bp, "revision": revision},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "stand-in",
                            "lastTransitionTime": now, "observedGeneration": app.metadata.generation}],
        }});
        apps.patch_status(&app.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prometheus_analysis_fails_the_step_and_a_passing_one_lets_it_complete() {
    use plinth_operator::rollout::controller::Driver;
    init_tracing();
    let cp = ControlPlane::shared().await;
    installed(cp).await;
    let ns = cp.namespace("ro-analysis").await;
    let client = cp.client().await;
    let bp = "ro-analysis";
    let value = Arc::new(std::sync::atomic::AtomicU64::new(5.0f64.to_bits()));
    let port = metrics_endpoint("ro-analysis", Arc::clone(&value)).await;
    let prom = prometheus(port).await;
    let strategy = json!({"strategy": "Canary", "steps": [{"applications": 1}],
        "analysis": {"query": "max(plinth_test_errors{blueprint=\"{{blueprint}}\"})", "max": 1.0}});
    put_blueprint(&client, blueprint(bp, &strategy, "1")).await;
    create_apps(&client, ns.name(), bp, &names(3), None).await;
    // The driver alone, with the Prometheus address; the test plays the reconciler (no Deployments here).
    let mut driver = Driver::new(client.clone(), "plinth-system".into());
    driver.scope = Some(ns.name().to_owned());
    driver.prometheus = Some(prom.url.clone());
    let bps: Api<Blueprint> = Api::all(client.clone());
    let step = |driver: Driver| {
        let (bps, client, ns) = (bps.clone(), client.clone(), ns.name().to_owned());
        async move {
            driver
                .step(&bps.get(bp).await.unwrap(), k8s_openapi::jiff::Timestamp::now())
                .await
                .unwrap();
            report_as_reconciled(&client, &ns, bp).await;
            rollout(&client, bp).await.unwrap()
        }
    };
    let first = step(driver.clone()).await;
    assert_eq!((first.revision, first.phase), (1, Phase::Completed));

    put_blueprint(&client, blueprint(bp, &strategy, "2")).await;
    // The first pass moves one Application; once it reports revision 2, the analysis decides.
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let r = step(driver.clone()).await;
        if r.phase == Phase::Failed {
            break r;
        }
        assert!(Instant::now() < deadline, "the analysis never failed the step: {r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(failed.failures.len(), 1, "{failed:?}");
    assert_eq!(failed.failures[0].application, "analysis");
    assert!(
        failed.failures[0].reason.contains("= 5, above the maximum 1"),
        "{failed:?}"
    );
    assert!(failed.moved.is_empty());

    // The errors stop; a resume retries the step, and the analysis passes.
    value.store(0.0f64.to_bits(), std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cli(&client, RolloutCommand::Resume(target(bp))).await;
    let deadline = Instant::now() + WAIT;
    let done = loop {
        let r = step(driver.clone()).await;
        if r.phase == Phase::Completed {
            break r;
        }
        assert!(Instant::now() < deadline, "the rollout never completed: {r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((done.revision, done.stable_revision), (2, 2));
    assert!(
        done.analysis.as_deref().is_some_and(|a| a.starts_with("passed:")),
        "{done:?}"
    );
}
