//! The node agent: sources of the world (file, Kubernetes), the apply loop, flow events and metrics.
//!
//! Plinth is not a CNI: the agent runs beside the cluster's CNI and only
//! enforces policy. It finds each local pod's host-side veth from the node's
//! routes ([`routes`]), compiles each world by difference with the last
//! ([`crate::compile::Compiler`]), and writes only the changed map entries. On exit it leaves maps and links pinned, so
//! enforcement continues until the next agent takes over.

pub mod bridge;
pub mod events;
pub mod kube_source;
pub mod metrics;
pub mod routes;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::compile::Compiler;
use crate::flows::Flow;
use crate::load::{Config, Datapath};
use crate::world::World;

/// Where the world comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A YAML world file, re-read when it changes.
    File(PathBuf),
    /// The Kubernetes API: all Pods, Namespaces and NetworkPolicies; pods
    /// scheduled to `node` are local.
    Kube {
        /// This node's name.
        node: String,
    },
}

/// Agent settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// World source.
    pub source: Source,
    /// Loader settings (pin directory).
    pub config: Config,
    /// Prometheus endpoint (`/metrics`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Unix socket serving flows as JSON lines.
    pub flows_socket: Option<PathBuf>,
    /// First gap between conntrack collections (then adapted to the load,
    /// within [`crate::load::ct_gc::GC_MIN`] and [`crate::load::ct_gc::GC_MAX`]).
    pub ct_gc_interval: Duration,
}

/// First gap between conntrack collections, by default.
pub const DEFAULT_CT_GC_INTERVAL: Duration = Duration::from_secs(10);

/// Names behind addresses and policy ids, for flow events.
#[derive(Debug, Default)]
pub struct Names {
    pods: std::collections::HashMap<IpAddr, (String, String)>,
    policies: std::collections::HashMap<u32, String>,
}

impl Names {
    /// Names an event.
    pub fn flow(&self, e: &crate::abi::FlowEvent) -> Flow {
        Flow::from_event(
            e,
            |ip| self.pods.get(&ip).cloned(),
            |id| self.policies.get(&id).cloned(),
        )
    }
}

/// Fills the interface of each pod that has a direct /32 or /128 route on
/// this node, or else a port on a bridge where its MAC was learned ([`bridge`]).
pub fn resolve_local_interfaces(world: &mut World) {
    let unresolved: Vec<usize> = (0..world.pods.len())
        .filter(|i| world.pods[*i].interface.is_none())
        .collect();
    let ips: Vec<Vec<IpAddr>> = unresolved.iter().map(|i| world.pods[*i].ips.clone()).collect();
    for (i, interface) in unresolved.into_iter().zip(pod_interfaces(&ips, local_interfaces)) {
        world.pods[i].interface = interface;
    }
}

/// The interface of each pod from its addresses: that of the first of them
/// that has one. `lookup` ([`local_interfaces`] on a node) is called once
/// with all the addresses of all the pods.
pub fn pod_interfaces(pods: &[Vec<IpAddr>], lookup: impl Fn(&[IpAddr]) -> Vec<Option<String>>) -> Vec<Option<String>> {
    let all: Vec<IpAddr> = pods.iter().flatten().copied().collect();
    let mut found = lookup(&all).into_iter();
    pods.iter()
        .map(|ips| {
            let mut first = None;
            for _ in ips {
                let f = found.next().flatten();
                first = first.or(f);
            }
            first
        })
        .collect()
}

/// The host-side interface of each of `ips` in this thread's network
/// namespace: the direct /32 or /128 route's ([`routes`]), or else the
/// bridge port where the address's MAC was learned ([`bridge`]). The tables
/// are read once for all addresses.
pub fn local_interfaces(ips: &[IpAddr]) -> Vec<Option<String>> {
    let tables = routes::RouteTables::read();
    let mut found: Vec<Option<String>> = ips.iter().map(|ip| tables.interface_for(*ip)).collect();
    let off_route: Vec<usize> = (0..ips.len()).filter(|i| found[*i].is_none()).collect();
    if !off_route.is_empty() {
        let wanted: Vec<IpAddr> = off_route.iter().map(|i| ips[*i]).collect();
        for (i, interface) in off_route.into_iter().zip(bridge::interfaces_for(&wanted)) {
            found[i] = interface;
        }
    }
    found
}

/// Watches a world file (polling its modification time) and sends each valid version.
pub async fn file_source(path: PathBuf, tx: watch::Sender<Option<World>>) {
    let mut last = None;
    loop {
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if mtime != last {
            last = mtime;
            match World::from_file(&path) {
                Ok(w) => {
                    let _ = tx.send(Some(w));
                }
                Err(e) => tracing::error!(error = %e, "world file rejected; keeping the last good world"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the agent until interrupted (SIGINT).
pub async fn run(opts: Options) -> anyhow::Result<()> {
    run_until(opts, async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot wait for SIGINT; stop the agent with SIGKILL");
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Runs the agent until `stop` completes (tests run it in-process this way).
pub async fn run_until(opts: Options, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut datapath = Datapath::load(&opts.config)?;
    let names = Arc::new(RwLock::new(Names::default()));
    let metrics = Arc::new(metrics::Metrics::new());
    let (flow_tx, _) = broadcast::channel::<Arc<Flow>>(4096);

    let ring = datapath
        .ebpf()
        .take_map("plinth_events")
        .ok_or_else(|| anyhow::anyhow!("map plinth_events missing from the object"))?;
    events::pump(ring, Arc::clone(&names), flow_tx.clone());
    if let Some(sock) = opts.flows_socket.clone() {
        tokio::spawn(events::serve(sock, flow_tx.clone()));
    }
    if let Some(addr) = opts.metrics_addr {
        tokio::spawn(metrics::serve(addr, Arc::clone(&metrics)));
    }

    let (tx, mut rx) = watch::channel(None::<World>);
    match &opts.source {
        Source::File(p) => {
            tokio::spawn(file_source(p.clone(), tx));
        }
        Source::Kube { node } => {
            let client = kube::Client::try_default().await?;
            tokio::spawn(kube_source::run(client, node.clone(), tx));
        }
    }

    // Compiles each world by difference with the last: a change costs what it touches.
    let mut compiler = Compiler::new();
    let mut warned = std::collections::HashSet::new();
    let mut compiled_once = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut gc_every = opts.ct_gc_interval;
    let gc = tokio::time::sleep(gc_every);
    tokio::pin!(gc);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    anyhow::bail!("world source stopped");
                }
                let Some(mut world) = rx.borrow_and_update().clone() else { continue };
                if matches!(opts.source, Source::File(_)) {
                    resolve_local_interfaces(&mut world);
                }
                let started = std::time::Instant::now();
                let diff = compiler.update(world);
                let stats = compiler.last_stats();
                if let Some(retired) = compiler.take_retired() {
                    // Freed off this loop: its cost follows the world's size, not the change.
                    tokio::task::spawn_blocking(move || drop(retired));
                }
                let compiled = compiler.compiled();
                tracing::debug!(
                    policies = stats.policies,
                    rules = stats.rules,
                    pods = stats.pods,
                    changes = diff.len(),
                    elapsed_us = started.elapsed().as_micros(),
                    "compiled"
                );
                if stats.warnings_changed {
                    // Each warning once, when it appears.
                    let now: std::collections::HashSet<String> = compiled.warnings.iter().cloned().collect();
                    for w in now.difference(&warned) {
                        tracing::warn!(warning = %w, "policy not fully honoured");
                    }
                    warned = now;
                }
                match datapath.apply_diff(compiled, &diff) {
                    Ok(report) => {
                        tracing::info!(
                            changes = report.changes(),
                            endpoints = compiled.endpoints.len(),
                            entries = compiled.policy.len() + compiled.ranges.len(),
                            "applied"
                        );
                        for m in &report.full_maps {
                            metrics.map_full(m);
                        }
                        for i in &report.missing_interfaces {
                            tracing::warn!(interface = %i, "endpoint interface not found");
                        }
                        metrics.applied(report.changes());
                        metrics.updated(started.elapsed());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "apply failed; the datapath keeps its last state");
                        metrics.apply_failed();
                    }
                }
                if (stats.pods > 0 || stats.policies > 0 || !compiled_once)
                    && let Ok(mut n) = names.write()
                {
                    n.pods = compiler
                        .world()
                        .pods
                        .iter()
                        .flat_map(|p| p.ips.iter().map(|ip| (*ip, (p.namespace.clone(), p.name.clone()))))
                        .collect();
                    n.policies = compiled
                        .policy_ids
                        .iter()
                        .map(|((ns, name), id)| (*id, format!("{ns}/{name}")))
                        .collect();
                }
                compiled_once = true;
            }
            _ = tick.tick() => {
                metrics.refresh(&mut datapath, compiled_once.then(|| compiler.compiled()));
            }
            () = &mut gc => {
                match datapath.ct_gc() {
                    Ok(r) => {
                        metrics.ct_collected(&r);
                        gc_every = r.next_interval(gc_every);
                    }
                    Err(e) => tracing::error!(error = %e, "conntrack collection failed; retrying"),
                }
                gc.as_mut().reset(tokio::time::Instant::now() + gc_every);
            }
            () = &mut stop => {
                tracing::info!("stopping; maps and links stay pinned, enforcement continues");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_takes_the_interface_of_its_first_address_with_one_from_one_lookup() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let pods = vec![
            vec![ip("198.18.0.10"), ip("2001:2::10")], // IPv4 route
            vec![ip("198.18.0.11"), ip("2001:2::11")], // IPv6 route only
            vec![ip("2001:2::12")],                    // IPv6 only, no route
            vec![],
        ];
        let calls = std::cell::Cell::new(0);
        let lookup = |ips: &[IpAddr]| {
            calls.set(calls.get() + 1);
            assert_eq!(ips.len(), 5, "every address of every pod, at once");
            ips.iter()
                .map(|a| match a.to_string().as_str() {
                    "198.18.0.10" => Some("veth0".to_owned()),
                    "2001:2::10" => Some("other".to_owned()),
                    "2001:2::11" => Some("veth1".to_owned()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            pod_interfaces(&pods, lookup),
            [Some("veth0".to_owned()), Some("veth1".to_owned()), None, None]
        );
        assert_eq!(calls.get(), 1);
    }
}
