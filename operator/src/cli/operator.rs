//! `plinth operator`: runs the controller in a cluster, with leader election, metrics, health endpoints and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

use super::exit;
use crate::reconcile::http::{self, Health};
use crate::reconcile::leader::LeaderConfig;
use crate::reconcile::lifecycle::{self, Lifecycle, Stopped};
use crate::reconcile::metrics::{Metrics, counted_client};
use crate::reconcile::throttle::WriteLimit;
use crate::reconcile::{Settings, error_chain};
use crate::render::Platform;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `plinth operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// Reconcile Applications of this namespace only (Blueprints are cluster-wide).
    #[arg(long, env = "PLINTH_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Most reconciles at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Re-check every Application this often even without changes, e.g. `5m`, `30s`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,
    /// First retry delay after an error (doubles per consecutive error, with jitter).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest retry delay after errors.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// API writes per second, on average (a client-side token bucket; reads and watches are not limited); 0 for no
    /// limit.
    #[arg(long, default_value_t = WriteLimit::default().qps)]
    pub api_qps: u32,
    /// Most API writes at once after a quiet spell (the token bucket's size).
    #[arg(long, default_value_t = WriteLimit::default().burst)]
    pub api_burst: u32,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Elect a leader on a Lease so that only one replica writes; `--leader-election=false` for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "plinth-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "plinth-operator")]
    pub lease_name: String,
    /// How long the Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's name in the Lease and in Events; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Platform settings (cluster DNS, default requests) as a YAML file, as for `plinth render --platform`.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `plinth_operator=debug,kube=info`.
    #[arg(long, env = "PLINTH_LOG", default_value = "info")]
    pub log: String,
    /// On SIGTERM, how long in-flight reconciles may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Parses `250ms`, `30s`, `5m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn init_tracing(args: &OperatorArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs `plinth operator`; returns the exit code.
pub fn run(args: OperatorArgs) -> u8 {
    init_tracing(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return exit::INTERNAL;
        }
    };
    runtime.block_on(operate(args))
}

fn platform(path: Option<&PathBuf>) -> Result<Platform, String> {
    let Some(p) = path else { return Ok(Platform::default()) };
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let docs = crate::yaml::parse(&text, &crate::yaml::Limits::default())
        .map_err(|e| format!("{}:{}: {e}", p.display(), e.pos()))?;
    let json = docs.first().map(|d| d.root.to_json()).unwrap_or_default();
    serde_json::from_value(json).map_err(|e| format!("{}: {e}", p.display()))
}

async fn kube_config(args: &OperatorArgs) -> Result<kube::Config, String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    match &args.kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| format!("read {}: {}", path.display(), error_chain(&e)))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("load {}: {}", path.display(), error_chain(&e)))
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("load the kubeconfig: {}", error_chain(&e))),
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no kubeconfig and not in a cluster: {}; pass --kubeconfig",
                error_chain(&e)
            )
        }),
    }
}

async fn operate(args: OperatorArgs) -> u8 {
    // kube's TLS needs a process-wide crypto provider; Err means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let platform = match platform(args.platform.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the platform settings");
            return exit::INVALID;
        }
    };
    let config = match kube_config(&args).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot configure the Kubernetes client");
            return exit::INVALID;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let limit = WriteLimit {
        qps: args.api_qps,
        burst: args.api_burst,
    };
    let client = match counted_client(config, &metrics, limit) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot build the Kubernetes client");
            return exit::INTERNAL;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "plinth".into()),
            std::process::id()
        )
    });

    // SIGTERM or SIGINT: stop taking work, finish what runs, release the Lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });

    let health = Arc::new(Health::default());
    match http::serve(
        args.metrics_address,
        Arc::clone(&metrics),
        Arc::clone(&health),
        stop_rx.clone(),
    )
    .await
    {
        Ok(server) => {
            tokio::spawn(server);
        }
        Err(e) => {
            tracing::error!(address = %args.metrics_address, error = %e, "cannot serve metrics");
            return exit::INVALID;
        }
    }

    let settings = Settings {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        resync: args.resync,
        backoff_base: args.backoff_base,
        backoff_max: args.backoff_max,
        platform,
        instance: identity.clone(),
    };
    let election = args.leader_election.then(|| {
        let mut lc = LeaderConfig::new(&args.lease_namespace, &args.lease_name, &identity);
        lc.duration = args.lease_duration;
        lc.renew_every = args.lease_duration / 3;
        lc
    });
    let lifecycle = Lifecycle {
        settings,
        election,
        shutdown_timeout: args.shutdown_timeout,
    };
    // Stop on a signal (finish what runs, then release the Lease: exit 0), or when leadership is lost (exit
    // non-zero, to come back as a follower).
    match lifecycle::run(client, lifecycle, metrics, health, stop_rx).await {
        Ok(Stopped::Requested | Stopped::TimedOut) => exit::OK,
        Ok(Stopped::LostLease) => exit::INTERNAL,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "the operator failed");
            exit::INTERNAL
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
