//! Prometheus metrics: verdicts per policy and reason, map occupancy, map-full events, program errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::abi::Counter as BpfCounter;
use crate::compile::Compiled;
use crate::flows::{REASON_CODES, reason_name};
use crate::load::Datapath;

type Labels = Vec<(String, String)>;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verdicts: Family<Labels, Counter>,
    packets: Family<Labels, Counter>,
    program_errors: Family<Labels, Counter>,
    map_entries: Family<Labels, Gauge>,
    map_full: Family<Labels, Counter>,
    applies: Family<Labels, Counter>,
    changes: Counter,
    ct_deleted: Counter,
    update_seconds: Histogram,
    // Last kernel readings, to turn kernel totals into counter increments.
    last: Mutex<HashMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plinth");
        let m = Self {
            registry: Registry::default(),
            verdicts: Family::default(),
            packets: Family::default(),
            program_errors: Family::default(),
            map_entries: Family::default(),
            map_full: Family::default(),
            applies: Family::default(),
            changes: Counter::default(),
            ct_deleted: Counter::default(),
            // 50 µs to about 1.6 s.
            update_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            last: Mutex::new(HashMap::new()),
        };
        registry.register(
            "policy_verdicts",
            "New flows per policy and verdict",
            m.verdicts.clone(),
        );
        registry.register("datapath_packets", "Packets per verdict reason", m.packets.clone());
        registry.register(
            "program_errors",
            "Datapath errors (conntrack insert, events lost)",
            m.program_errors.clone(),
        );
        registry.register("map_entries", "Entries in each policy map", m.map_entries.clone());
        registry.register(
            "map_full",
            "Writes refused because a map is full (endpoints fail closed)",
            m.map_full.clone(),
        );
        registry.register("applies", "Policy applications by result", m.applies.clone());
        registry.register("map_changes", "Map entries written or deleted", m.changes.clone());
        registry.register(
            "ct_gc_deleted",
            "Expired conntrack entries deleted by the agent",
            m.ct_deleted.clone(),
        );
        registry.register(
            "update_seconds",
            "Time from a new world to its map entries written: compiled by difference and applied",
            m.update_seconds.clone(),
        );
        Self { registry, ..m }
    }

    fn add_delta(&self, key: String, total: u64, counter: &Counter) {
        let Ok(mut last) = self.last.lock() else { return };
        let prev = last.insert(key, total).unwrap_or(0);
        counter.inc_by(total.saturating_sub(prev));
    }

    /// A map refused a write.
    pub fn map_full(&self, map: &str) {
        self.map_full
            .get_or_create(&vec![("map".to_owned(), map.to_owned())])
            .inc();
    }

    /// An apply succeeded with `changes` writes and deletes.
    pub fn applied(&self, changes: usize) {
        self.applies
            .get_or_create(&vec![("result".to_owned(), "ok".to_owned())])
            .inc();
        self.changes.inc_by(changes as u64);
    }

    /// A world was compiled and applied in `elapsed`.
    pub fn updated(&self, elapsed: std::time::Duration) {
        self.update_seconds.observe(elapsed.as_secs_f64());
    }

    /// A conntrack collection ran.
    pub fn ct_collected(&self, gc: &crate::load::ct_gc::CtGc) {
        use crate::load::ct_gc::{CT4, CT6};
        for (name, r) in [(CT4, &gc.ct4), (CT6, &gc.ct6)] {
            self.ct_deleted.inc_by(r.deleted as u64);
            self.map_entries
                .get_or_create(&vec![("map".to_owned(), name.to_owned())])
                .set(r.remaining() as i64);
            if r.remaining() >= r.capacity {
                self.map_full(name);
            }
        }
    }

    /// An apply failed.
    pub fn apply_failed(&self) {
        self.applies
            .get_or_create(&vec![("result".to_owned(), "error".to_owned())])
            .inc();
    }

    /// Reads the kernel counters and map sizes.
    pub fn refresh(&self, dp: &mut Datapath, compiled: Option<&Compiled>) {
        let st = dp.state().clone();
        for (map, n) in [
            ("plinth_ipcache", st.ipcache.keys().filter(|p| !p.is_ipv6()).count()),
            ("plinth_ipcache6", st.ipcache.keys().filter(|p| p.is_ipv6()).count()),
            ("plinth_endpts", st.endpoints.len()),
            ("plinth_policy", st.policy.len()),
            ("plinth_polrange", st.ranges.len()),
        ] {
            self.map_entries
                .get_or_create(&vec![("map".to_owned(), map.to_owned())])
                .set(n as i64);
        }
        let ebpf = dp.ebpf();
        if let Some(Ok(arr)) = ebpf
            .map("plinth_metrics")
            .map(PerCpuArray::<&MapData, BpfCounter>::try_from)
        {
            for code in REASON_CODES {
                let Ok(v) = arr.get(&u32::from(code), 0) else { continue };
                let total: u64 = v.iter().map(|c| c.packets).sum();
                let name = reason_name(code).to_owned();
                if code >= 32 {
                    let c = self
                        .program_errors
                        .get_or_create(&vec![("error".to_owned(), name.clone())])
                        .clone();
                    self.add_delta(format!("err/{name}"), total, &c);
                } else {
                    let verdict = if code >= 16 { "denied" } else { "allowed" };
                    let c = self
                        .packets
                        .get_or_create(&vec![
                            ("reason".to_owned(), name.clone()),
                            ("verdict".to_owned(), verdict.to_owned()),
                        ])
                        .clone();
                    self.add_delta(format!("pkt/{name}"), total, &c);
                    if code == 16 {
                        let d = self
                            .verdicts
                            .get_or_create(&vec![
                                ("policy".to_owned(), "default-deny".to_owned()),
                                ("verdict".to_owned(), "denied".to_owned()),
                            ])
                            .clone();
                        self.add_delta("deny/default".to_owned(), total, &d);
                    }
                }
            }
        }
        if let (Some(c), Some(Ok(arr))) = (
            compiled,
            ebpf.map("plinth_polstats")
                .map(PerCpuArray::<&MapData, BpfCounter>::try_from),
        ) {
            for ((ns, name), id) in &c.policy_ids {
                let Ok(v) = arr.get(id, 0) else { continue };
                let total: u64 = v.iter().map(|c| c.packets).sum();
                let labels = vec![
                    ("policy".to_owned(), format!("{ns}/{name}")),
                    ("verdict".to_owned(), "allowed".to_owned()),
                ];
                let counter = self.verdicts.get_or_create(&labels).clone();
                self.add_delta(format!("pol/{id}"), total, &counter);
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// Serves `GET /metrics` over plain HTTP/1.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, %addr, "cannot serve metrics");
            return;
        }
    };
    tracing::info!(%addr, "serving metrics");
    while let Ok((mut s, _)) = listener.accept().await {
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = metrics.encode();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
