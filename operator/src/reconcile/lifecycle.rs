//! The operator's lifecycle: wait for the leader Lease, run the controller, and stop in order.
//!
//! A requested stop (SIGTERM) goes: stop taking new work, let the reconciles in flight finish (at most
//! `shutdown_timeout`), and only then release the Lease. The Lease is renewed while the reconciles drain, so
//! their writes still pass the [`WriteGate`], and no other replica starts writing before they are done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;

use super::http::Health;
use super::leader::{self, LeaderConfig, WriteGate};
use super::metrics::Metrics;
use super::{Error, Settings};

/// How long releasing the Lease may take after the controller stopped.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the operator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A stop was requested; every reconcile in flight finished before the Lease was released.
    Requested,
    /// A stop was requested; the reconciles in flight did not finish within the shutdown timeout.
    TimedOut,
    /// The leader Lease was lost (or could not be renewed): the process should exit non-zero and come back as a
    /// follower.
    LostLease,
}

/// What the lifecycle needs besides the client.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The controller's settings.
    pub settings: Settings,
    /// Leader election; `None` for a single replica (always writes).
    pub election: Option<LeaderConfig>,
    /// How long the reconciles in flight may take to finish after a stop is requested.
    pub shutdown_timeout: Duration,
}

/// Runs the operator until `stop` turns true or the Lease is lost.
///
/// A follower stands by (ready) until it holds the Lease. On a requested stop the controller takes no new work,
/// the reconciles in flight finish (bounded by [`Lifecycle::shutdown_timeout`]), and then the Lease is released.
///
/// # Errors
/// When the controller cannot start (the API server's discovery fails).
pub async fn run(
    client: Client,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<Stopped, Error> {
    // The leader task releases the Lease when `release` turns true: after the drain, never at the stop itself.
    let (release_tx, release_rx) = watch::channel(false);
    let (gate, leader_rx, leader_task) = match &lifecycle.election {
        Some(config) => {
            let gate = WriteGate::leased();
            let (leader_tx, leader_rx) = watch::channel(false);
            let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
            let task = tokio::spawn(leader::run(api, config.clone(), gate.clone(), leader_tx, release_rx));
            (gate, Some(leader_rx), Some(task))
        }
        None => (WriteGate::always(), None, None),
    };
    let release = |release_tx: watch::Sender<bool>, task: Option<tokio::task::JoinHandle<()>>| async move {
        let _ = release_tx.send(true);
        if let Some(task) = task
            && tokio::time::timeout(RELEASE_TIMEOUT, task).await.is_err()
        {
            tracing::warn!(timeout = ?RELEASE_TIMEOUT, "the leader Lease was not released in time; it expires by itself");
        }
    };

    // A follower is ready: it serves and stands by.
    if let (Some(mut leader_rx), Some(config)) = (leader_rx.clone(), &lifecycle.election) {
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = %config.identity, lease = %format!("{}/{}", config.namespace, config.name), "waiting to become leader");
        let mut stop = stop.clone();
        loop {
            if *leader_rx.borrow_and_update() {
                break;
            }
            if *stop.borrow_and_update() {
                release(release_tx, leader_task).await;
                return Ok(Stopped::Requested);
            }
            tokio::select! {
                changed = leader_rx.changed() => if changed.is_err() {
                    release(release_tx, leader_task).await;
                    return Ok(Stopped::LostLease);
                },
                _ = stop.changed() => {}
            }
        }
        health.ready.store(false, Ordering::Relaxed);
    }
    metrics.leader.set(1);

    // The controller stops taking work on a requested stop, or when leadership is lost.
    let lost = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let (mut stop, lost, mut leader_rx) = (stop.clone(), Arc::clone(&lost), leader_rx);
        async move {
            loop {
                tokio::select! {
                    // A requested stop wins over a leadership change seen at the same time.
                    biased;
                    changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
                    changed = async { match leader_rx.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    } } => {
                        if *stop.borrow() {
                            return;
                        }
                        let leading = changed.is_ok() && leader_rx.as_ref().is_some_and(|rx| *rx.borrow());
                        if !leading {
                            lost.store(true, Ordering::Relaxed);
                            tracing::error!("lost the leader Lease; stopping");
                            return;
                        }
                    }
                }
            }
        }
    };
    let controller = super::run(
        client,
        lifecycle.settings.clone(),
        Arc::clone(&metrics),
        gate,
        health,
        shutdown,
    );
    let timeout = lifecycle.shutdown_timeout;
    let mut stop_timer = stop.clone();
    let drained = tokio::select! {
        result = controller => Some(result),
        () = async move {
            while !*stop_timer.borrow_and_update() {
                if stop_timer.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            tracing::info!(?timeout, "stop requested: finishing the reconciles in flight");
            tokio::time::sleep(timeout).await;
        } => None,
    };
    metrics.leader.set(0);
    // Only now, with nothing left writing, may another replica take over.
    release(release_tx, leader_task).await;
    match drained {
        None => {
            tracing::warn!(
                ?timeout,
                "the reconciles in flight did not finish in time; stopped them"
            );
            Ok(Stopped::TimedOut)
        }
        Some(Err(e)) => Err(e),
        Some(Ok(())) if lost.load(Ordering::Relaxed) => Ok(Stopped::LostLease),
        Some(Ok(())) => Ok(Stopped::Requested),
    }
}
