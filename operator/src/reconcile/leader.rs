//! Leader election on a `coordination.k8s.io/v1` Lease, and the gate every write passes.
//!
//! A replica may write only until `renewed at + lease duration − margin`, measured on its own
//! clock from before the renewing request was sent. Another replica takes the Lease over only
//! after it has seen the same holder and renew time unchanged for a full lease duration on its
//! own clock. So when the API server is unreachable, the leader stops writing before anyone else
//! can start, and two replicas never both write.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Whether this replica may write now.
#[derive(Debug, Clone, Default)]
pub struct WriteGate {
    until: Option<Arc<Mutex<Option<Instant>>>>,
}

impl WriteGate {
    /// A gate that is always open: a single replica, or tests.
    pub fn always() -> WriteGate {
        WriteGate { until: None }
    }

    /// A gate that opens while a Lease is held.
    pub fn leased() -> WriteGate {
        WriteGate {
            until: Some(Arc::new(Mutex::new(None))),
        }
    }

    /// Whether writes are allowed now.
    pub fn open(&self) -> bool {
        match &self.until {
            None => true,
            Some(until) => until
                .lock()
                .map(|u| u.is_some_and(|u| Instant::now() < u))
                .unwrap_or(false),
        }
    }

    fn set(&self, until: Option<Instant>) {
        if let Some(u) = &self.until
            && let Ok(mut g) = u.lock()
        {
            *g = until;
        }
    }
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower checks whether the Lease is free.
    pub retry_every: Duration,
}

impl LeaderConfig {
    /// Defaults: 15 s lease, renewed every 5 s, checked every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaderConfig {
        LeaderConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }

    fn margin(&self) -> Duration {
        (self.duration / 5).max(Duration::from_secs(1))
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What a follower saw of the Lease, and since when (on its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    since: Instant,
}

/// Runs leader election until `release_when` turns true; `leader` follows whether this replica may write.
///
/// Then releases the Lease when it holds it. The caller sends `release_when` once nothing writes any more (see
/// [`super::lifecycle`]): until then the Lease is renewed and the gate stays open.
pub async fn run(
    api: Api<Lease>,
    config: LeaderConfig,
    gate: WriteGate,
    leader: watch::Sender<bool>,
    mut release_when: watch::Receiver<bool>,
) {
    let mut observed: Option<Observed> = None;
    loop {
        let started = Instant::now();
        match step(&api, &config, &mut observed).await {
            Ok(true) => {
                gate.set(Some(started + config.duration - config.margin()));
                leader.send_if_modified(|l| !std::mem::replace(l, true));
            }
            Ok(false) => {
                gate.set(None);
                leader.send_if_modified(|l| std::mem::replace(l, false));
            }
            Err(error) => {
                // The gate closes by itself when the last renewal runs out.
                tracing::warn!(%error, lease = %config.name, "cannot read or renew the leader Lease");
            }
        }
        if *leader.borrow() && !gate.open() {
            tracing::error!(lease = %config.name, "the leader Lease ran out before it could be renewed; writes stop");
            leader.send_replace(false);
        }
        let wait = if *leader.borrow() {
            config.renew_every
        } else {
            config.retry_every
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = release_when.changed() => {}
        }
        if *release_when.borrow() {
            break;
        }
    }
    if *leader.borrow() {
        gate.set(None);
        leader.send_replace(false);
        if let Err(error) = release(&api, &config).await {
            tracing::warn!(%error, "could not release the leader Lease; another replica takes over when it expires");
        }
    }
}

/// One round: create, renew or take over the Lease. `Ok(true)` when this replica holds it.
async fn step(api: &Api<Lease>, config: &LeaderConfig, observed: &mut Option<Observed>) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(identity = %config.identity, "became leader (created the Lease)");
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(config.identity.as_str());
    if !mine {
        let seen = Observed {
            holder: holder.clone(),
            renew: spec.renew_time.clone(),
            since: Instant::now(),
        };
        let same = observed
            .as_ref()
            .is_some_and(|o| o.holder == seen.holder && o.renew == seen.renew);
        if !same {
            *observed = Some(seen);
        }
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(config.duration, Duration::from_secs);
        let expired = holder.is_none() || observed.as_ref().is_some_and(|o| o.since.elapsed() > held_for);
        if !expired {
            return Ok(false);
        }
    }
    let mut next = spec;
    if !mine {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or_default() + 1);
    }
    next.holder_identity = Some(config.identity.clone());
    next.lease_duration_seconds = Some(seconds);
    next.renew_time = Some(now());
    lease.spec = Some(next);
    // `replace` carries the resourceVersion read above: a concurrent change makes it fail with 409.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            if !mine {
                tracing::info!(identity = %config.identity, "became leader");
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, config: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(&config.name, &PostParams::default(), &lease).await?;
    tracing::info!(identity = %config.identity, "released the leader Lease");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_open_and_close() {
        assert!(WriteGate::always().open());
        let g = WriteGate::leased();
        assert!(!g.open(), "a follower may not write");
        g.set(Some(Instant::now() + Duration::from_secs(10)));
        assert!(g.open());
        let clone = g.clone();
        g.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!clone.open(), "a lapsed renewal closes every clone");
    }
}
