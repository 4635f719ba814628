//! `plinth flows` against a running node agent: real packets between network namespaces, the agent's BPF
//! datapath and flow socket, and the `plinth` binary following them with filters, as text and JSON.
//!
//! Needs root, bpffs and clang (the agent's datapath is built by `plinth-policies`' `bpf` feature).

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plinth_policies::agent::{self, Options, Source};
use plinth_policies::flows::Flow;
use plinth_policies::load::{Config, Datapath};
use plinth_policies::netns::{self, PinDirGuard, TestNet};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// x/a, x/b, x/c, dual-stack; only x/b may reach x/a.
fn world(net: &TestNet) -> String {
    let mut s = String::from("namespaces:\n  - name: x\npods:\n");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let ips: Vec<String> = net.pods[i].ips().iter().map(|ip| format!("\"{ip}\"")).collect();
        s += &format!(
            "  - {{namespace: x, name: {name}, labels: {{pod: {name}}}, ips: [{}]}}\n",
            ips.join(", ")
        );
    }
    s += "policies:\n  - metadata: {name: allow-b, namespace: x}\n    spec:\n      podSelector: {matchLabels: {pod: a}}\n      ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\n";
    s
}

/// The agent, in-process, in the node namespace; stopped and uninstalled on drop.
struct RunningAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    node: String,
    config: Config,
}

impl RunningAgent {
    fn start(net: &TestNet, world_file: &Path, socket: &Path, pin_dir: PathBuf) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = Config {
            pin_dir,
            ..Config::default()
        };
        let opts = Options {
            source: Source::File(world_file.to_owned()),
            config: config.clone(),
            metrics_addr: None,
            flows_socket: Some(socket.to_owned()),
            ct_gc_interval: plinth_policies::agent::DEFAULT_CT_GC_INTERVAL,
        };
        let node = net.node.clone();
        let thread = std::thread::spawn(move || {
            // Everything the agent does (attach, routes, its ring buffer thread) happens in the node namespace.
            netns::enter(&node).expect("enter the node namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(agent::run_until(opts, async {
                let _ = rx.await;
            }))
            .expect("the agent runs until stopped");
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
            node: net.node.clone(),
            config,
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let config = self.config.clone();
        let _ = netns::in_netns(&self.node, move || Datapath::load(&config).and_then(Datapath::teardown));
    }
}

struct Plinth(Child);

impl Drop for Plinth {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `plinth flows ARGS` and forwards its stdout lines.
fn plinth_flows(args: &[&str]) -> (Plinth, mpsc::Receiver<String>) {
    let mut child = Command::new(PLINTH)
        .arg("flows")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plinth flows");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Plinth(child), rx)
}

fn reachable(net: &TestNet, from: usize, to: usize) -> bool {
    reachable_over(net, from, to, false)
}

fn reachable_over(net: &TestNet, from: usize, to: usize, ipv6: bool) -> bool {
    net.probe_many_over(from, &[(to, "TCP".into(), 80)], ipv6, Duration::from_millis(500))
        .expect("probe")[0]
        .is_some()
}

/// Probes `from -> to` (a fresh source port each time, so each is a new flow) until `n` lines arrive.
fn lines_while_probing(net: &TestNet, rx: &mpsc::Receiver<String>, from: usize, to: usize, n: usize) -> Vec<String> {
    lines_while_probing_over(net, rx, from, to, n, false)
}

/// [`lines_while_probing`] over IPv6 when `ipv6`.
fn lines_while_probing_over(
    net: &TestNet,
    rx: &mpsc::Receiver<String>,
    from: usize,
    to: usize,
    n: usize,
    ipv6: bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut lines = Vec::new();
    while lines.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "plinth flows printed {lines:?}, expected {n} lines"
        );
        let _ = reachable_over(net, from, to, ipv6);
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    lines
}

#[test]
fn plinth_flows_follows_a_running_agent_with_filters_as_text_and_json() {
    netns::ensure_bpffs().expect("bpffs");
    let mut net = TestNet::new(3).expect("test network");
    net.serve(&[80], |i| format!("pod{i}")).expect("servers");
    let dir = std::env::temp_dir().join(format!("plinth-flows-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let world_file = dir.join("world.yaml");
    let socket = dir.join("flows.sock");
    std::fs::write(&world_file, world(&net)).expect("write world");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", net.node));
    let _pins = PinDirGuard(pin_dir.clone());
    let _agent = RunningAgent::start(&net, &world_file, &socket, pin_dir);

    let start = Instant::now();
    while reachable(&net, 2, 0) || !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent never enforced x/allow-b"
        );
    }
    assert!(reachable(&net, 1, 0), "x/b -> x/a allowed");

    // JSON, denied only: x/c -> x/a, dropped by x/a's ingress policy.
    let sock = socket.to_str().expect("utf-8 path");
    let (mut denied, rx) = plinth_flows(&["--socket", sock, "--verdict", "denied", "--json", "-n", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_while_probing(&net, &rx, 2, 0, 2);
    let status = denied.0.wait().expect("plinth flows exits after -n 2");
    assert!(status.success(), "plinth flows: {status}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let f: Flow = serde_json::from_str(l).expect("a JSON flow per line");
        assert_eq!(
            (f.verdict.as_str(), f.reason.as_str()),
            ("denied", "policy-denied"),
            "{l}"
        );
        assert_eq!(f.source.ip, std::net::IpAddr::V4(net.pods[2].ip));
        assert_eq!(
            (f.source.namespace.as_deref(), f.source.pod.as_deref()),
            (Some("x"), Some("c"))
        );
        assert_eq!((f.destination.pod.as_deref(), f.destination.port), (Some("a"), 80));
        assert_eq!((f.protocol.as_str(), f.direction.as_str()), ("TCP", "ingress"));
    }

    // Text, pod and verdict filters: x/b -> x/a, allowed by the policy's rule at x/a.
    let (_allowed, rx) = plinth_flows(&[
        "--socket",
        sock,
        "--pod",
        "x/b",
        "--namespace",
        "x",
        "--verdict",
        "allowed",
        "-n",
        "2",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_while_probing(&net, &rx, 1, 0, 2);
    let b = net.pods[1].ip;
    let a = net.pods[0].ip;
    let by_policy = lines
        .iter()
        .find(|l| l.contains("(allowed-by-policy)"))
        .unwrap_or_else(|| panic!("no allowed-by-policy flow in {lines:?}"));
    assert!(by_policy.starts_with(&format!("x/b({b}):")), "{by_policy}");
    assert!(
        by_policy.ends_with(&format!(
            " -> x/a({a}):80 TCP ingress ALLOWED (allowed-by-policy) by x/allow-b ingress[0]"
        )),
        "{by_policy}"
    );
    assert!(
        lines.iter().all(|l| l.contains("ALLOWED") && l.contains("x/b(")),
        "{lines:?}"
    );

    // IPv6, text: x/c -> x/a denied, both ends named by their IPv6 addresses.
    assert!(reachable_over(&net, 1, 0, true), "x/b -> x/a allowed over IPv6");
    let (mut denied6, rx) = plinth_flows(&["--socket", sock, "--pod", "x/c", "--verdict", "denied", "-n", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_while_probing_over(&net, &rx, 2, 0, 1, true);
    let status = denied6.0.wait().expect("plinth flows exits after -n 1");
    assert!(status.success(), "plinth flows: {status}");
    let (c6, a6) = (
        net.pods[2].ip6.expect("IPv6 test network"),
        net.pods[0].ip6.expect("IPv6 test network"),
    );
    assert!(lines[0].starts_with(&format!("x/c({c6}):")), "{lines:?}");
    assert!(
        lines[0].ends_with(&format!(" -> x/a({a6}):80 TCP ingress DENIED (policy-denied)")),
        "{lines:?}"
    );

    // Filtered out: flows of x/c never reach a client following x/b.
    let (_b_only, rx) = plinth_flows(&["--socket", sock, "--pod", "b", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let _ = reachable(&net, 2, 0);
    }
    let stray = rx.recv_timeout(Duration::from_millis(500)).ok();
    assert_eq!(stray, None, "a flow of x/c passed the pod filter b");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plinth_flows_without_an_agent_says_so_and_exits_1() {
    let out = Command::new(PLINTH)
        .args(["flows", "--socket", "/nonexistent/plinth/flows.sock"])
        .output()
        .expect("run plinth flows");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot follow flows on /nonexistent/plinth/flows.sock") && err.contains("plinth-agent run"),
        "{err}"
    );
    let out = Command::new(PLINTH)
        .args(["flows", "--verdict", "maybe"])
        .output()
        .expect("run plinth flows");
    assert_eq!(out.status.code(), Some(2), "a bad --verdict is a usage error");
}
