//! `plinth-bench`: per-packet verdict cost, connection rate against iptables and no policy, and rule-update time.
//!
//! Not a test: prints a Markdown report (and writes it with `--write FILE`).
//! Everything runs in network namespaces it creates, with 198.18.0.0/15
//! and 2001:2::/48 addresses. Needs root, bpffs and iptables.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aya::programs::SchedClassifier;
use clap::Parser;
use plinth_policies::abi::{DIR_INGRESS, EP_ENFORCE_INGRESS, Endpoint, PolicyKey, PolicyValue};
use plinth_policies::compile::Compiled;
use plinth_policies::load::{Config, Datapath, ct_gc};
use plinth_policies::net::Prefix;
use plinth_policies::netns::{self, TestNet};
use plinth_policies::testrun;

#[derive(Debug, Parser)]
#[command(
    name = "plinth-bench",
    about = "Plinth datapath benchmarks (root; network namespaces only)"
)]
struct Args {
    /// Seconds per connection-rate measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rule counts for the per-packet benchmark.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    packet_rules: Vec<usize>,
    /// Interleaved rounds per connection-rate configuration (median reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Client threads opening connections in the connection-rate benchmark
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Rule counts for the connection-rate benchmark.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    conn_rules: Vec<usize>,
    /// Sections to run (all by default).
    #[arg(long, value_delimiter = ',', default_value = "packet,packet6,conn,update")]
    sections: Vec<Section>,
    /// Also write the report here.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// Fake peer i: an address in 198.19.0.0/16 that no namespace holds.
fn peer_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8)
}

/// A compilation with `rules` ingress rules (map entries) for the endpoint
/// on `ifname`: up to 10,000 peer identities, each allowed on TCP/80 and,
/// beyond 10,000 rules, on more ports; the real client (if any) is the last
/// peer. Peer 0's port-80 rule is on `extra_port` instead.
fn synthetic(rules: usize, ifname: &str, client: Option<IpAddr>, extra_port: u16) -> Compiled {
    let mut c = Compiled::default();
    c.endpoints.insert(
        ifname.to_owned(),
        Endpoint {
            ep_id: 1,
            flags: EP_ENFORCE_INGRESS,
        },
    );
    c.identities
        .ipcache
        .insert(Prefix::new(Ipv4Addr::UNSPECIFIED.into(), 0), 2);
    let peers = rules.min(10_000);
    for i in 0..peers {
        let id = 256 + i as u32;
        let ip = match client {
            Some(ip) if i + 1 == peers => ip,
            _ => IpAddr::V4(peer_ip(i)),
        };
        c.identities.ipcache.insert(Prefix::host(ip), id);
    }
    for r in 0..rules {
        let (i, extra) = (r % peers, r / peers);
        let port = if r == 0 { extra_port } else { 80 + extra as u16 * 100 };
        c.policy.insert(
            PolicyKey {
                ep_id: 1,
                peer_id: 256 + i as u32,
                dir: DIR_INGRESS,
                proto: 6,
                dport: port.to_be(),
            },
            PolicyValue {
                policy_id: 1,
                rule: 0,
                flags: 0,
            },
        );
    }
    c
}

fn prog<'a>(dp: &'a Datapath, name: &str) -> anyhow::Result<&'a SchedClassifier> {
    Ok(dp.ebpf_ref().program(name).context("program")?.try_into()?)
}

struct PacketRow {
    rules: usize,
    nop: f64,
    established: f64,
    new_allowed: f64,
    new_allowed_event: f64,
    new_distinct: f64,
    new_distinct_steady: f64,
    new_denied: f64,
    cold_new: f64,
    cold_nop: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Median over 5 runs of the kernel's mean ns per packet, `reps` repetitions each.
fn warm(p: &SchedClassifier, pkt: &[u8], reps: u32) -> anyhow::Result<f64> {
    Ok(median(
        (0..5)
            .map(|_| testrun::run(p, 1, pkt, reps).map(|r| r.1.as_nanos() as f64))
            .collect::<Result<_, _>>()?,
    ))
}

/// Loads the datapath in the current namespace with `rules` entries for `lo`.
fn bench_datapath(pin_dir: &std::path::Path, rules: usize, client: IpAddr, cfg: Config) -> anyhow::Result<Datapath> {
    let mut dp = Datapath::load(&Config {
        pin_dir: pin_dir.to_owned(),
        ..cfg
    })?;
    dp.apply(&synthetic(rules, "lo", Some(client), 80))?;
    let nop: &mut SchedClassifier = dp.ebpf().program_mut("plinth_bench_nop").context("nop")?.try_into()?;
    nop.load()?;
    let new_flow: &mut SchedClassifier = dp
        .ebpf()
        .program_mut("plinth_bench_new_flow")
        .context("new-flow program")?
        .try_into()?;
    new_flow.load()?;
    Ok(dp)
}

/// One run of 10,000 distinct new flows (`plinth_bench_new_flow`): the
/// kernel's mean ns per packet; then drains the ring buffer of their events.
fn distinct_run(dp: &mut Datapath, pkt: &[u8]) -> anyhow::Result<f64> {
    let (v, d) = testrun::run(prog(dp, "plinth_bench_new_flow")?, 1, pkt, 10_000)?;
    if v != testrun::TC_ACT_OK {
        bail!("distinct new flow was dropped ({v})");
    }
    let ring = dp.ebpf().map_mut("plinth_events").context("plinth_events")?;
    let mut ring = aya::maps::RingBuf::try_from(ring)?;
    while ring.next().is_some() {}
    Ok(d.as_nanos() as f64)
}

/// Per-packet verdict cost through BPF_PROG_TEST_RUN on `lo` of a fresh
/// namespace, over IPv4 or (`ipv6`) IPv6; new distinct flows (a bench-only
/// program that varies IPv4 keys) only over IPv4 (NaN otherwise).
fn packet_bench(rules: usize, ipv6: bool) -> anyhow::Result<PacketRow> {
    let net = TestNet::new(0)?;
    let node = net.node.clone();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{node}"));
    let _cleanup = netns::PinDirGuard(pin_dir.clone());
    let row = netns::in_netns(&node, move || -> anyhow::Result<PacketRow> {
        let addr =
            |v4: [u8; 4], v6: &str| -> anyhow::Result<IpAddr> { Ok(if ipv6 { v6.parse()? } else { IpAddr::from(v4) }) };
        let client = addr([198, 18, 1, 1], "2001:2:1::1")?;
        let stranger = addr([198, 18, 2, 2], "2001:2:2::2")?;
        let dst = addr([198, 18, 0, 10], "2001:2::10")?;
        let reps = 200_000;
        let packet = |src: IpAddr, sport: u16, flags: u8| -> anyhow::Result<Vec<u8>> {
            testrun::ip_packet_flags(src, dst, 6, sport, 80, flags).context("one family")
        };
        let pkt = packet(client, 40000, testrun::TCP_SYN)?;
        let denied_pkt = packet(stranger, 40000, testrun::TCP_SYN)?;

        // Established: one allowed flow; the first run creates its entry.
        let mut dp = bench_datapath(&pin_dir, rules, client, Config::default())?;
        // New flows, distinct: every run a new conntrack key (real inserts) and
        // a new event; 10,000 per run so the ring buffer holds them, drained
        // between runs. The table grows from empty to 50,000 entries.
        let mut distinct = Vec::new();
        for _ in 0..if ipv6 { 0 } else { 5 } {
            distinct.push(distinct_run(&mut dp, &pkt)?);
        }
        let new_distinct = if ipv6 { f64::NAN } else { median(distinct) };
        let p = prog(&dp, "plinth_to_pod")?;
        let (v, _) = testrun::run(p, 1, &pkt, 1)?;
        if v != testrun::TC_ACT_OK {
            bail!("allowed flow was dropped ({v})");
        }
        // Later packets of the flow: ACKs (a bare SYN is always re-decided).
        let ack = packet(client, 40000, testrun::TCP_ACK)?;
        let established = warm(p, &ack, reps)?;
        let (v, _) = testrun::run(p, 1, &denied_pkt, 1)?;
        if v != testrun::TC_ACT_SHOT {
            bail!("unknown peer was allowed");
        }
        let new_denied = warm(p, &denied_pkt, reps)?;
        let nop_p = prog(&dp, "plinth_bench_nop")?;
        let nop = warm(nop_p, &pkt, reps)?;
        // Cold: distinct new flows, one run per call.
        let mut cold_new = Vec::new();
        let mut cold_nop = Vec::new();
        for i in 0..20_000u32 {
            let pk = packet(client, 1024 + (i % 60000) as u16, testrun::TCP_SYN)?;
            cold_nop.push(testrun::run(nop_p, 1, &pk, 1)?.1.as_nanos() as f64);
            cold_new.push(testrun::run(p, 1, &pk, 1)?.1.as_nanos() as f64);
        }
        // New flows, distinct, in a node's steady state (after the cold runs,
        // which it would slow): 15 more runs, each stamped on the
        // monotonic clock and started 10 ms later (after the coarse clock of
        // the entries has passed the stamp); before each of the last 5, the
        // agent's collector deletes the entries of all but the 9 runs before
        // it (as if their lifetime had passed). Each measured run inserts into
        // a table of 90,000 live entries and reuses the elements the collector
        // freed.
        let lifetime = u64::try_from(Config::default().ct_lifetime_tcp.as_nanos())?;
        let (mut steady, mut stamps) = (Vec::new(), Vec::new());
        for i in 0..if ipv6 { 0 } else { 15 } {
            if i >= 10 {
                let r = dp.ct_gc_at(stamps[i - 9] + lifetime)?.ct4;
                if r.remaining() != 90_000 {
                    bail!(
                        "steady state: {} live entries after collection, not 90,000",
                        r.remaining()
                    );
                }
            }
            stamps.push(ct_gc::monotonic_ns());
            std::thread::sleep(Duration::from_millis(10));
            let d = distinct_run(&mut dp, &pkt)?;
            if i >= 10 {
                steady.push(d);
            }
        }
        let new_distinct_steady = if ipv6 { f64::NAN } else { median(steady) };
        dp.teardown()?;

        // New flows, warm: conntrack lifetime 0 makes every run a new flow
        // (lookups miss, rules decide, the entry is rewritten).
        let cfg = Config {
            ct_lifetime_tcp: Duration::ZERO,
            ..Config::default()
        };
        let dp = bench_datapath(&pin_dir, rules, client, cfg)?;
        let new_allowed = warm(prog(&dp, "plinth_to_pod")?, &pkt, reps)?;
        dp.teardown()?;
        let cfg = Config {
            ct_lifetime_tcp: Duration::ZERO,
            event_interval: Duration::ZERO,
            ..Config::default()
        };
        let dp = bench_datapath(&pin_dir, rules, client, cfg)?;
        let new_allowed_event = warm(prog(&dp, "plinth_to_pod")?, &pkt, reps)?;
        dp.teardown()?;
        Ok(PacketRow {
            rules,
            nop,
            established,
            new_allowed,
            new_allowed_event,
            new_distinct,
            new_distinct_steady,
            new_denied,
            cold_new: median(cold_new),
            cold_nop: median(cold_nop),
        })
    })??;
    Ok(row)
}

/// A blocking server on 8080 in pod `i`: writes one byte and closes.
fn fast_server(net: &TestNet, i: usize, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let l = netns::in_netns(&net.pods[i].netns, || TcpListener::bind(("0.0.0.0", 8080)))??;
    for _ in 0..2 {
        let l = l.try_clone()?;
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut s) = s {
                    let _ = s.write_all(b"k");
                }
            }
        });
    }
    Ok(())
}

/// New TCP connections per second from pod 0 to pod 1:8080 for `secs`.
fn conn_rate(net: &TestNet, secs: u64, threads: usize) -> anyhow::Result<f64> {
    let dst = SocketAddr::from((net.pods[1].ip, 8080));
    let count = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (count, failures, ns) = (Arc::clone(&count), Arc::clone(&failures), net.pods[0].netns.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                netns::enter(&ns)?;
                let mut buf = [0u8; 4];
                while Instant::now() < deadline {
                    match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                        Ok(mut s) => {
                            let _ = s.read(&mut buf);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let f = failures.load(Ordering::Relaxed);
    if f > 0 {
        bail!("{f} connections failed");
    }
    Ok(count.load(Ordering::Relaxed) as f64 / secs as f64)
}

fn iptables_rules(net: &TestNet, rules: usize, extra_port: u16) -> String {
    let server = net.pods[1].ip;
    let client = net.pods[0].ip;
    let mut s = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s += "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n";
    for i in 0..rules {
        let peer = if i + 1 == rules { client } else { peer_ip(i) };
        let port = if i == 0 { extra_port } else { 8080 };
        let _ = writeln!(
            s,
            "-A FORWARD -s {peer}/32 -d {server}/32 -p tcp -m tcp --dport {port} -j ACCEPT"
        );
    }
    let _ = writeln!(s, "-A FORWARD -d {server}/32 -j DROP\nCOMMIT");
    s
}

fn iptables_restore(node: &str, rules: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", node, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .context("iptables-restore (apt-get install iptables)")?;
    child.stdin.take().context("stdin")?.write_all(rules.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        bail!("iptables-restore failed");
    }
    Ok(start.elapsed())
}

struct ConnRow {
    rules: usize,
    none: f64,
    plinth: f64,
    iptables: f64,
}

#[derive(Clone, Copy, Debug)]
enum Enforcer {
    None,
    Plinth,
    Iptables,
}

/// One measurement in a fresh two-pod network.
fn conn_once(rules: usize, secs: u64, threads: usize, how: Enforcer) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let net = TestNet::new(2)?;
    for p in &net.pods {
        netns::ip(&["netns", "exec", &p.netns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
        netns::ip(&[
            "netns",
            "exec",
            &p.netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])?;
    }
    fast_server(&net, 1, Arc::clone(&stop))?;
    let node = net.node.clone();
    let mut dp = None;
    let mut guard = None;
    match how {
        Enforcer::None => {}
        Enforcer::Plinth => {
            let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{node}"));
            guard = Some(netns::PinDirGuard(pin_dir.clone()));
            let server_if = net.pods[1].host_if.clone();
            let client_ip = net.pods[0].ip;
            dp = Some(netns::in_netns(&node, move || -> anyhow::Result<Datapath> {
                let mut dp = Datapath::load(&Config {
                    pin_dir,
                    ..Config::default()
                })?;
                let mut c = synthetic(rules, &server_if, Some(client_ip.into()), 80);
                // The server listens on 8080.
                c.policy = c
                    .policy
                    .into_iter()
                    .map(|(mut k, v)| {
                        if k.dport == 80u16.to_be() {
                            k.dport = 8080u16.to_be();
                        }
                        (k, v)
                    })
                    .collect();
                dp.apply(&c)?;
                Ok(dp)
            })??);
        }
        Enforcer::Iptables => {
            iptables_restore(&node, &iptables_rules(&net, rules, 8080))?;
        }
    }
    let rate = conn_rate(&net, secs, threads);
    stop.store(true, Ordering::Relaxed);
    if let Some(dp) = dp {
        netns::in_netns(&node, move || dp.teardown())??;
    }
    drop(guard);
    rate
}

fn conn_bench(rules: usize, secs: u64, rounds: usize, threads: usize) -> anyhow::Result<ConnRow> {
    let (mut none, mut plinth, mut ipt) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so background load hits all three alike.
    for _ in 0..rounds {
        none.push(conn_once(rules, secs, threads, Enforcer::None)?);
        plinth.push(conn_once(rules, secs, threads, Enforcer::Plinth)?);
        ipt.push(conn_once(rules, secs, threads, Enforcer::Iptables)?);
    }
    Ok(ConnRow {
        rules,
        none: median(none),
        plinth: median(plinth),
        iptables: median(ipt),
    })
}

struct UpdateRow {
    plinth_write: Duration,
    plinth_apply: Duration,
    /// One rule changed among 10,000: in one policy, in 10,000 policies.
    plinth_incremental: [Incremental; 2],
    iptables_restore: Duration,
    iptables_delete: Duration,
}

/// Medians of one rule change through the incremental compiler.
#[derive(Clone, Copy, Debug)]
struct Incremental {
    /// `Compiler::update`.
    compile: Duration,
    /// `Datapath::apply_diff` of its diff.
    apply: Duration,
    /// Freeing the world the update replaced (off the update path in the agent).
    free: Duration,
}

/// Runs `worlds` (each one rule apart from the last) through a compiler and `dp`: medians.
fn incremental_bench(dp: &mut Datapath, worlds: Vec<plinth_policies::world::World>) -> anyhow::Result<Incremental> {
    let mut compiler = plinth_policies::compile::Compiler::new();
    let mut worlds = worlds.into_iter();
    if let Some(w) = worlds.next() {
        let d = compiler.update(w);
        dp.apply_diff(compiler.compiled(), &d)?;
    }
    let (mut compiles, mut applies, mut frees) = (Vec::new(), Vec::new(), Vec::new());
    for w in worlds {
        let start = Instant::now();
        let d = compiler.update(w);
        compiles.push(start.elapsed());
        let start = Instant::now();
        let r = dp.apply_diff(compiler.compiled(), &d)?;
        applies.push(start.elapsed());
        if r.changes() != 2 || r.swapped {
            bail!(
                "one rule change made {} map changes (swapped: {})",
                r.changes(),
                r.swapped
            );
        }
        let retired = compiler.take_retired();
        let start = Instant::now();
        drop(retired);
        frees.push(start.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    Ok(Incremental {
        compile: median(compiles),
        apply: median(applies),
        free: median(frees),
    })
}

/// Changing one rule among 10,000.
fn update_bench() -> anyhow::Result<UpdateRow> {
    let net = TestNet::new(2)?;
    let node = net.node.clone();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{node}-upd"));
    let _cleanup = netns::PinDirGuard(pin_dir.clone());
    let server_if = net.pods[1].host_if.clone();
    let client = net.pods[0].ip;
    let worlds: Vec<plinth_policies::world::World> = (0..22u16)
        .map(|i| ip_block_world(10_000, 80 + i, &server_if))
        .collect::<anyhow::Result<_>>()?;
    let many_worlds = ip_block_policies_worlds(10_000, 22, &server_if)?;
    type Times = (Duration, Duration, [Incremental; 2]);
    let (plinth_write, plinth_apply, plinth_incremental) =
        netns::in_netns(&node, move || -> anyhow::Result<Times> {
            let mut dp = Datapath::load(&Config {
                pin_dir,
                ..Config::default()
            })?;
            dp.apply(&synthetic(10_000, &server_if, Some(client.into()), 80))?;
            let mut times = Vec::new();
            for i in 0..21u16 {
                let b = synthetic(10_000, &server_if, Some(client.into()), 81 + i);
                let start = Instant::now();
                let r = dp.apply(&b)?;
                times.push(start.elapsed());
                if r.changes() != 2 {
                    bail!("one rule change made {} map changes", r.changes());
                }
            }
            // The map write alone: one bpf_map_update_elem.
            let mut writes = Vec::new();
            {
                let m = dp.generation_mut().policy_mut();
                for i in 0..1001u16 {
                    let k = PolicyKey {
                        ep_id: 1,
                        peer_id: 256,
                        dir: DIR_INGRESS,
                        proto: 6,
                        dport: (2000 + i).to_be(),
                    };
                    let start = Instant::now();
                    m.insert(
                        k,
                        PolicyValue {
                            policy_id: 1,
                            rule: 0,
                            flags: 0,
                        },
                        0,
                    )?;
                    writes.push(start.elapsed());
                }
            }
            // End to end through the incremental compiler: one rule changed among 10,000 ipBlock rules, compiled
            // by difference and written entry by entry; in one policy, then in 10,000 policies of one rule.
            let one = incremental_bench(&mut dp, worlds)?;
            let many = incremental_bench(&mut dp, many_worlds)?;
            dp.teardown()?;
            times.sort();
            writes.sort();
            Ok((writes[writes.len() / 2], times[times.len() / 2], [one, many]))
        })??;
    let rules = iptables_rules(&net, 10_000, 8080);
    let mut restores: Vec<Duration> = (0..3)
        .map(|_| iptables_restore(&net.node, &rules))
        .collect::<Result<_, _>>()?;
    restores.sort();
    let spec = format!(
        "-s {}/32 -d {}/32 -p tcp -m tcp --dport 8080 -j ACCEPT",
        peer_ip(5000),
        net.pods[1].ip
    );
    let start = Instant::now();
    let st = Command::new("ip")
        .args(["netns", "exec", &net.node, "iptables", "-D", "FORWARD"])
        .args(spec.split(' '))
        .status()?;
    let iptables_delete = start.elapsed();
    if !st.success() {
        bail!("iptables -D failed");
    }
    Ok(UpdateRow {
        plinth_write,
        plinth_apply,
        plinth_incremental,
        iptables_restore: restores[1],
        iptables_delete,
    })
}

/// A world of one selected pod (on interface `ifname`) accepting `rules` ipBlock peers (a /32 each) on port 80,
/// rule 0 on `port`.
fn ip_block_world(rules: usize, port: u16, ifname: &str) -> anyhow::Result<plinth_policies::world::World> {
    let mut y = String::from("namespaces: [{name: x}]\npods:\n");
    let _ = writeln!(
        y,
        "  - {{namespace: x, name: s, labels: {{app: s}}, ip: 198.18.0.2, interface: {ifname}}}"
    );
    y.push_str("policies:\n  - metadata: {name: p, namespace: x}\n    spec:\n      podSelector: {matchLabels: {app: s}}\n      ingress:\n");
    for i in 0..rules {
        let p = if i == 0 { port } else { 80 };
        let _ = writeln!(
            y,
            "        - from: [{{ipBlock: {{cidr: {}/32}}}}]\n          ports: [{{port: {p}}}]",
            peer_ip(i)
        );
    }
    Ok(plinth_policies::world::World::from_yaml(&y, "bench world")?)
}

/// Worlds of one pod (on interface `ifname`) selected by `rules` policies of one ipBlock rule each (a /32 each,
/// port 80), the first on port 80, 81, ... (`count` worlds). Like the snapshots of the Kubernetes source, they
/// share every policy but the one that changed.
fn ip_block_policies_worlds(
    rules: usize,
    count: u16,
    ifname: &str,
) -> anyhow::Result<Vec<plinth_policies::world::World>> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut y = String::from("namespaces: [{name: x}]\npods:\n");
    let _ = writeln!(
        y,
        "  - {{namespace: x, name: s, labels: {{app: s}}, ip: 198.18.0.2, interface: {ifname}}}\npolicies:"
    );
    y.push_str("  - {metadata: {name: p, namespace: x}, spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/32}}], ports: [{port: 80}]}]}}\n");
    let mut base = plinth_policies::world::World::from_yaml(&y, "bench world")?;
    let template = base.policies.pop().context("the bench world has a policy")?;
    let policy = |i: usize, port: u16| -> anyhow::Result<Arc<NetworkPolicy>> {
        let mut np = (*template).clone();
        np.metadata.name = Some(format!("p{i}"));
        let rule = np
            .spec
            .as_mut()
            .and_then(|s| s.ingress.as_mut())
            .and_then(|r| r.first_mut())
            .context("the template has a rule")?;
        if let Some(b) = rule
            .from
            .as_mut()
            .and_then(|f| f.first_mut())
            .and_then(|p| p.ip_block.as_mut())
        {
            b.cidr = format!("{}/32", peer_ip(i));
        }
        if let Some(p) = rule.ports.as_mut().and_then(|p| p.first_mut()) {
            p.port = Some(IntOrString::Int(i32::from(port)));
        }
        Ok(Arc::new(np))
    };
    for i in 0..rules {
        base.policies.push(policy(i, 80)?);
    }
    let mut out = Vec::new();
    for n in 0..count {
        let mut w = base.clone();
        w.policies[0] = policy(0, 80 + n)?;
        out.push(w);
    }
    Ok(out)
}

/// The whole compiler on a world of `rules` ipBlock rules after one rule changed, and the diff of the two
/// compilations: medians of 11.
fn compile_bench(rules: usize) -> anyhow::Result<(Duration, Duration)> {
    use plinth_policies::compile::{compile, diff};
    let mut prev = compile(&ip_block_world(rules, 80, "v0")?, None);
    let (mut compiles, mut diffs) = (Vec::new(), Vec::new());
    for i in 0..11u16 {
        let world = ip_block_world(rules, 81 + i, "v0")?;
        let start = Instant::now();
        let next = compile(&world, Some(&prev));
        compiles.push(start.elapsed());
        let start = Instant::now();
        let d = diff(&prev, &next);
        diffs.push(start.elapsed());
        if next.policy.len() != rules {
            bail!("{} entries for {rules} rules", next.policy.len());
        }
        std::hint::black_box(d);
        prev = next;
    }
    compiles.sort();
    diffs.sort();
    Ok((compiles[5], diffs[5]))
}

/// A "| label | time in ms |" row of the update table.
fn row(md: &mut String, label: &str, d: Duration) {
    let _ = writeln!(md, "| {label} | {:.3} ms |", d.as_secs_f64() * 1e3);
}

/// Parts of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Per-packet verdict cost.
    Packet,
    /// Per-packet verdict cost over IPv6.
    Packet6,
    /// New connections per second.
    Conn,
    /// Changing one rule among 10,000.
    Update,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    netns::ensure_bpffs()?;
    let mut md = String::new();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        md,
        "# Plinth datapath benchmarks\n\nRun: {date}; Linux {}; {cpus} CPUs ({model}); load average at start {}.\nCommand: `cargo run --release -p plinth-policies --bin plinth-bench -- --write policies/BENCHMARKS.md`.\n",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    if args.sections.contains(&Section::Packet) {
        let _ = writeln!(
            md,
            "## Per-packet verdict cost (BPF_PROG_TEST_RUN, kernel-measured ns per packet)\n"
        );
        let _ = writeln!(
            md,
            "Warm: the kernel's mean over 200,000 repetitions of one packet (median of 5). Harness = an empty classifier run the same way. Established = conntrack hit. New = the same packet re-decided on every run (conntrack lifetime 0: the entry found is expired), ipcache and policy lookups, the conntrack entry rewritten, counters, the flow's event rate-limited (one per flow per second); new + event = an event on every packet. New distinct = every run a distinct flow (a bench-only program varies the conntrack key): a real conntrack insert and a flow event each, mean of 10,000 runs (median of 5), into a table growing from empty to 50,000 entries. Steady = the same into a table of 90,000 live entries that the agent's collector trims back after each run (the entries of the oldest runs deleted, their elements reused), 10 ms apart (median of 5). Denied = every lookup misses (six hash lookups), drop counted, event rate-limited. Cold = distinct new flows, one run per syscall (cold caches), median.\n"
        );
        let _ = writeln!(
            md,
            "| rules | harness | established | new | new + event | new distinct | new distinct, steady | denied | established − harness | new − harness | new distinct − harness | cold new | cold harness |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut rows = Vec::new();
        for &n in &args.packet_rules {
            eprintln!("per-packet: {n} rules");
            let r = packet_bench(n, false)?;
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.rules,
                r.nop,
                r.established,
                r.new_allowed,
                r.new_allowed_event,
                r.new_distinct,
                r.new_distinct_steady,
                r.new_denied,
                r.established - r.nop,
                r.new_allowed - r.nop,
                r.new_distinct - r.nop,
                r.cold_new,
                r.cold_nop
            );
            rows.push(r);
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let _ = writeln!(
                md,
                "\nFlatness {} → {} rules: established {:.2}x, new {:.2}x, denied {:.2}x.\n",
                first.rules,
                last.rules,
                last.established / first.established,
                last.new_allowed / first.new_allowed,
                last.new_denied / first.new_denied
            );
        }
    }
    if args.sections.contains(&Section::Packet6) {
        let _ = writeln!(
            md,
            "## Per-packet verdict cost over IPv6 (BPF_PROG_TEST_RUN, kernel-measured ns per packet)\n\nThe same packets and rules as above over IPv6 (the peer's /128 in the IPv6 ipcache, `plinth_ct6`). New distinct is not measured (the bench-only program varies IPv4 keys).\n"
        );
        let _ = writeln!(
            md,
            "| rules | harness | established | new | new + event | denied | established − harness | new − harness | cold new | cold harness |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &args.packet_rules {
            eprintln!("per-packet, IPv6: {n} rules");
            let r = packet_bench(n, true)?;
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.rules,
                r.nop,
                r.established,
                r.new_allowed,
                r.new_allowed_event,
                r.new_denied,
                r.established - r.nop,
                r.new_allowed - r.nop,
                r.cold_new,
                r.cold_nop
            );
        }
        let _ = writeln!(md);
    }
    if args.sections.contains(&Section::Conn) {
        let _ = writeln!(
            md,
            "## New TCP connections per second, pod to pod through the node namespace\n\n{}s per measurement, {} client thread(s), median of {} interleaved rounds, a fresh network each time. iptables (nf_tables backend): FORWARD chain with a conntrack ESTABLISHED accept first, then one rule per allowed peer (the client's rule last), then a drop; Plinth gets the same peers as map entries.\n",
            args.seconds, args.client_threads, args.rounds
        );
        let _ = writeln!(
            md,
            "| rules | no policy | Plinth | iptables | Plinth / no policy | iptables / no policy |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
        for &n in &args.conn_rules {
            eprintln!("connections: {n} rules");
            let r = conn_bench(n, args.seconds, args.rounds, args.client_threads)?;
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
                r.rules,
                r.none,
                r.plinth,
                r.iptables,
                r.plinth / r.none,
                r.iptables / r.none
            );
        }
    }
    if args.sections.contains(&Section::Update) {
        eprintln!("rule update");
        let u = update_bench()?;
        let _ = writeln!(md, "\n## Changing one rule among 10,000\n");
        let _ = writeln!(md, "| method | time |\n|---|---:|");
        row(
            &mut md,
            "Plinth: one policy map write (`bpf_map_update_elem`, median of 1,001)",
            u.plinth_write,
        );
        row(
            &mut md,
            "Plinth: `Datapath::apply` of a new compilation (diff of 10,001 entries, one written, one deleted; median of 21)",
            u.plinth_apply,
        );
        let (recompile, diff) = compile_bench(10_000)?;
        row(
            &mut md,
            "Plinth: the full compiler on a world of 10,000 ipBlock rules after one rule changed (median of 11)",
            recompile,
        );
        for (shape, i) in [
            ("in one policy", u.plinth_incremental[0]),
            ("in 10,000 policies of one rule", u.plinth_incremental[1]),
        ] {
            row(
                &mut md,
                &format!("Plinth, one rule changed among 10,000 {shape}: `Compiler::update` (median of 21)"),
                i.compile,
            );
            row(
                &mut md,
                "Plinth, the same: `Datapath::apply_diff` of its diff (one entry written, one deleted)",
                i.apply,
            );
            let _ = writeln!(
                md,
                "| **Plinth, the same, end to end: compiled and written** | **{:.3} ms** |",
                (i.compile + i.apply).as_secs_f64() * 1e3
            );
            row(
                &mut md,
                "Plinth, the same: freeing the replaced world (off the update path in the agent)",
                i.free,
            );
        }
        row(&mut md, "Plinth: diff of the two compilations (median of 11)", diff);
        let _ = writeln!(
            md,
            "| iptables-restore of 10,000 rules | {:.3} s |",
            u.iptables_restore.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "| iptables -D of one rule | {:.3} s |",
            u.iptables_delete.as_secs_f64()
        );
    }
    print!("{md}");
    if let Some(p) = args.write {
        std::fs::write(&p, &md).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}
