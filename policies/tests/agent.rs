//! The agent binary end to end: a world file in, enforcement, incremental
//! updates on file changes, flows on the Unix socket, Prometheus metrics,
//! enforcement after the agent stops, and uninstall.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plinth_policies::flows::{Flow, FlowFilter, follow};
use plinth_policies::netns::{self, TestNet};

const BIN: &str = env!("CARGO_BIN_EXE_plinth-agent");

fn world(net: &TestNet, allow: &[&str]) -> String {
    let mut s = String::from("namespaces:\n  - name: x\npods:\n");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        s += &format!(
            "  - {{namespace: x, name: {name}, labels: {{pod: {name}}}, ip: {}}}\n",
            net.pods[i].ip
        );
    }
    let peers: Vec<String> = allow
        .iter()
        .map(|p| format!("{{podSelector: {{matchLabels: {{pod: {p}}}}}}}"))
        .collect();
    s += &format!(
        "policies:\n  - metadata: {{name: allow-listed, namespace: x}}\n    spec:\n      podSelector: {{matchLabels: {{pod: a}}}}\n      ingress: [{{from: [{}]}}]\n",
        peers.join(", ")
    );
    s
}

fn metrics(node: &str) -> String {
    netns::in_netns(node, || {
        let mut s = TcpStream::connect("127.0.0.1:9464").ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn applies(node: &str) -> u64 {
    metrics(node)
        .lines()
        .find(|l| l.starts_with("plinth_applies_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reachable(net: &TestNet, from: usize, to: usize) -> bool {
    net.probe_many(from, &[(to, "TCP".into(), 80)], Duration::from_millis(800))
        .expect("probe")[0]
        .is_some()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_enforces_a_world_file_and_serves_flows_and_metrics() {
    netns::ensure_bpffs().expect("bpffs");
    let mut net = TestNet::new(3).expect("test network");
    net.serve(&[80], |i| format!("pod{i}")).expect("servers");
    let dir = std::env::temp_dir().join(format!("plinth-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let world_file = dir.join("world.yaml");
    let sock = dir.join("flows.sock");
    let pin_dir = format!("/sys/fs/bpf/{}", net.node);
    std::fs::write(&world_file, world(&net, &["b"])).expect("write world");

    // nsenter, not `ip netns exec`: the latter remounts /sys and hides bpffs.
    let enter = format!("--net=/run/netns/{}", net.node);
    let agent = Command::new("nsenter")
        .args([enter.as_str(), BIN, "run", "--world"])
        .arg(&world_file)
        .args(["--pin-dir", &pin_dir, "--flows-socket"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plinth-agent");
    let mut agent = Agent(agent);
    wait_for("the first apply", || applies(&net.node) >= 1);
    assert!(reachable(&net, 1, 0), "x/b -> x/a allowed");
    assert!(!reachable(&net, 2, 0), "x/c -> x/a denied");

    // Flows: follow denied flows, provoke one.
    let (tx, rx) = mpsc::channel::<Flow>();
    let s2 = sock.clone();
    std::thread::spawn(move || {
        let filter = FlowFilter {
            verdict: Some("denied".into()),
            ..Default::default()
        };
        let _ = follow(&s2, &filter, |f| tx.send(f).is_ok());
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reachable(&net, 2, 0));
    let flow = rx.recv_timeout(Duration::from_secs(5)).expect("a denied flow event");
    assert_eq!(flow.verdict, "denied");
    assert_eq!(flow.reason, "policy-denied");
    assert_eq!(
        (flow.source.namespace.as_deref(), flow.source.pod.as_deref()),
        (Some("x"), Some("c"))
    );
    assert_eq!(flow.destination.pod.as_deref(), Some("a"));
    assert_eq!(flow.destination.port, 80);

    // Change the file: c is allowed too.
    std::fs::write(&world_file, world(&net, &["b", "c"])).expect("rewrite world");
    wait_for("the second apply", || applies(&net.node) >= 2);
    assert!(reachable(&net, 2, 0), "x/c -> x/a allowed after the update");

    // Metrics: verdicts per policy, map occupancy.
    wait_for("policy verdict metrics", || {
        metrics(&net.node).contains("plinth_policy_verdicts_total{policy=\"x/allow-listed\",verdict=\"allowed\"}")
    });
    let m = metrics(&net.node);
    assert!(m.contains("plinth_map_entries{map=\"plinth_policy\"}"), "{m}");
    // Every applied world is timed (two worlds applied by now: the first, and the rewrite).
    let updates = m
        .lines()
        .find_map(|l| l.strip_prefix("plinth_update_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(updates >= 2, "{m}");
    assert!(
        m.contains("plinth_datapath_packets_total{reason=\"policy-denied\",verdict=\"denied\"}"),
        "{m}"
    );

    // The agent stops: enforcement stays.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = agent.0.wait().expect("agent exit");
    assert!(status.success(), "agent exit status {status}");
    std::fs::write(&world_file, world(&net, &["b"])).expect("rewrite world");
    assert!(reachable(&net, 1, 0));
    assert!(reachable(&net, 2, 0), "the last applied policy still holds");
    assert!(std::path::Path::new(&pin_dir).join("plinth_pol_gen").exists());

    // Uninstall removes pins and links.
    let out = Command::new("nsenter")
        .args([enter.as_str(), BIN, "uninstall", "--pin-dir", &pin_dir])
        .output()
        .expect("uninstall");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::path::Path::new(&pin_dir).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conformance_command_prints_tables_and_exits_non_zero_on_mismatch() {
    let dir = std::env::temp_dir().join(format!("plinth-conf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    // Wrong on purpose: claims the x pods stay reachable under a deny-all policy.
    let wrong = dir.join("wrong.yaml");
    let mut table = String::from("from\\to x/a x/b x/c y/a y/b y/c z/a z/b z/c\n");
    for (i, from) in ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
        .iter()
        .enumerate()
    {
        let cells: Vec<&str> = (0..9).map(|j| if i == j { "-" } else { "." }).collect();
        table += &format!("{from} {}\n", cells.join(" "));
    }
    let indented: String = table.lines().map(|l| format!("        {l}\n")).collect();
    std::fs::write(
        &wrong,
        format!(
            "name: wrong\nsteps:\n  - name: deny x\n    apply:\n      - metadata: {{name: deny, namespace: x}}\n        spec: {{podSelector: {{}}}}\n    expect:\n      TCP/80: |\n{indented}"
        ),
    )
    .expect("write scenario");
    let out = Command::new(BIN)
        .args(["conformance", "--json"])
        .arg(&wrong)
        .output()
        .expect("run conformance");
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let mismatches = json[0]["results"][0]["mismatches"]
        .as_array()
        .expect("mismatches")
        .len();
    assert_eq!(mismatches, 24, "every client of the three x pods differs: {json}");
    assert_eq!(json[0]["results"][0]["source"], "explicit");

    // The same step judged by the reference evaluator passes, as text.
    let right = dir.join("right.yaml");
    std::fs::write(
        &right,
        "name: right\nsteps:\n  - name: deny x\n    apply:\n      - metadata: {name: deny, namespace: x}\n        spec: {podSelector: {}}\n",
    )
    .expect("write scenario");
    let out = Command::new(BIN)
        .arg("conformance")
        .arg(&right)
        .output()
        .expect("run conformance");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("step \"deny x\" probe TCP/80 (reference): ok"), "{text}");
    assert!(text.contains("from\\to"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
