//! `plinth-agent`: the node agent, its flow client, and the conformance runner.
//!
//! Exit codes: 0 ok, 1 mismatches or invalid input, 2 usage, 3 internal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plinth_policies::agent::{self, Options, Source};
use plinth_policies::flows::{DEFAULT_SOCKET, FlowFilter, follow};
use plinth_policies::load::{Config, DEFAULT_PIN_DIR, Datapath};
use plinth_policies::{compile, conformance, scenario, world::World};

#[derive(Debug, Parser)]
#[command(
    name = "plinth-agent",
    version,
    about = "Plinth's NetworkPolicy node agent (eBPF, policy-only, beside any CNI)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enforce policies on this node until interrupted (maps and links stay pinned afterwards).
    Run {
        /// World file (namespaces, pods, policies) instead of the Kubernetes API.
        #[arg(long, conflicts_with = "node")]
        world: Option<PathBuf>,
        /// This node's name: watch the Kubernetes API (in-cluster or kubeconfig).
        #[arg(long, env = "NODE_NAME")]
        node: Option<String>,
        /// bpffs directory for pinned maps and links.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Serve Prometheus metrics here.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics_addr: std::net::SocketAddr,
        /// Serve flows (JSON lines) on this Unix socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        flows_socket: PathBuf,
        /// Seconds before the first conntrack collection (then adapted to the load, 1 to 60).
        #[arg(long, default_value_t = 10)]
        ct_gc_interval: u64,
    },
    /// Follow flow verdicts from a running agent, like `hubble observe`.
    Flows {
        /// Agent socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Only flows to or from this pod (`ns/pod` or `pod`).
        #[arg(long)]
        pod: Option<String>,
        /// Only flows to or from this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only `allowed` or `denied` flows.
        #[arg(long)]
        verdict: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run scenario files with real packets in network namespaces and print truth tables.
    Conformance {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Compile a world file and print the map entries it needs (no BPF).
    Compile {
        /// World file.
        world: PathBuf,
    },
    /// Detach from every interface and remove the pins (enforcement stops).
    Uninstall {
        /// bpffs directory.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.cmd {
        Cmd::Run {
            world,
            node,
            pin_dir,
            metrics_addr,
            flows_socket,
            ct_gc_interval,
        } => {
            let source = match (world, node) {
                (Some(w), _) => Source::File(w),
                (None, Some(node)) => Source::Kube { node },
                (None, None) => {
                    eprintln!("error: give --world FILE or --node NAME (or NODE_NAME)");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
                source,
                config: Config {
                    pin_dir,
                    ..Config::default()
                },
                metrics_addr: Some(metrics_addr),
                flows_socket: Some(flows_socket),
                ct_gc_interval: std::time::Duration::from_secs(ct_gc_interval),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(3);
                }
            };
            match rt.block_on(agent::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(3)
                }
            }
        }
        Cmd::Flows {
            socket,
            pod,
            namespace,
            verdict,
            json,
        } => {
            let filter = FlowFilter {
                pod,
                namespace,
                verdict,
            };
            let r = follow(&socket, &filter, |f| {
                if json {
                    println!("{}", serde_json::to_string(&f).unwrap_or_default());
                } else {
                    println!("{}", f.to_text());
                }
                true
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "error: cannot follow flows on {}: {e}; is plinth-agent running?",
                        socket.display()
                    );
                    ExitCode::from(3)
                }
            }
        }
        Cmd::Conformance { files, json } => {
            let mut failed = false;
            let mut all = Vec::new();
            for f in &files {
                match conformance::run_file(f, &conformance::Options::default()) {
                    Ok((sc, results)) => {
                        failed |= results.iter().any(|r| !r.mismatches.is_empty());
                        if json {
                            all.push(serde_json::json!({"scenario": sc.name, "file": f, "results": results}));
                        } else {
                            print!("{}", scenario::render_text(&sc.name, &results));
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {}: {e}", f.display());
                        return ExitCode::from(
                            if matches!(
                                e,
                                conformance::RunError::Scenario(_) | conformance::RunError::Read { .. }
                            ) {
                                1
                            } else {
                                3
                            },
                        );
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            }
            if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Cmd::Compile { world } => match World::from_file(&world) {
            Ok(w) => {
                let c = compile::compile(&w, None);
                println!("identities: {}", c.identities.by_key.len());
                println!("ipcache entries: {}", c.identities.ipcache.len());
                println!("endpoints: {}", c.endpoints.len());
                for (ifname, ep) in &c.endpoints {
                    println!("  {ifname}: ep {} flags {:#x}", ep.ep_id, ep.flags);
                }
                println!("policy entries: {}", c.policy.len());
                println!("port-range entries: {}", c.ranges.len());
                for w in &c.warnings {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Uninstall { pin_dir } => {
            let cfg = Config {
                pin_dir,
                ..Config::default()
            };
            match Datapath::load(&cfg).and_then(Datapath::teardown) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(3)
                }
            }
        }
    }
}
