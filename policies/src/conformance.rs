//! The conformance runner: a scenario, the model in network namespaces, real packets, a truth table.
//!
//! TCP and UDP probes are real connections between pod namespaces through
//! the node namespace, where the datapath is attached to every host-side
//! veth, over IPv4 or IPv6 (every model pod is dual-stack). SCTP probes (no
//! SCTP sockets here) are crafted packets run through both programs with
//! BPF_PROG_TEST_RUN on the same interfaces and maps.

use std::path::PathBuf;
use std::time::Duration;

use aya::programs::SchedClassifier;

use crate::compile::{Compiled, Compiler};
use crate::load::{Config, Datapath, LoadError};
use crate::netns::{self, NetnsError, TestNet};
use crate::scenario::{self, IpFamily, MODEL_PORTS, Probe, ProbeResult, Scenario, ScenarioError, Table};
use crate::world::World;

/// The run failed before it could compare anything.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario file.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The network fixture.
    #[error("network fixture: {0}")]
    Net(#[from] NetnsError),
    /// The datapath.
    #[error("datapath: {0}")]
    Load(#[from] LoadError),
    /// Reading the file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A BPF test run failed.
    #[error("BPF_PROG_TEST_RUN of {prog}: {reason}")]
    TestRun {
        /// Program.
        prog: &'static str,
        /// Cause.
        reason: String,
    },
}

/// Runner settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a probe waits for the server's reply.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1000),
        }
    }
}

/// The model world in a test network with the datapath attached.
#[derive(Debug)]
pub struct Model {
    /// The network (dropped last).
    pub net: TestNet,
    /// The datapath.
    pub datapath: Option<Datapath>,
    /// The current world.
    pub world: World,
    /// The compiler, as the agent runs it: each world compiled by difference with the last.
    pub compiler: Compiler,
    /// Pin directory of this run.
    pub pin_dir: PathBuf,
    next_sctp_port: u16,
}

impl Model {
    /// Builds the model: 9 dual-stack pods serving TCP and UDP on 80 and 81, and the
    /// datapath loaded with its own pin directory. Moves the calling thread
    /// into the node namespace.
    pub fn new() -> Result<Self, RunError> {
        netns::ensure_bpffs()?;
        let n = scenario::MODEL_NAMESPACES.len() * scenario::MODEL_PODS.len();
        let mut net = TestNet::new(n)?;
        let probe_world = scenario::model_world(|i| net.pods[i].ips(), |_| None);
        let names: Vec<String> = probe_world
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        net.serve(&MODEL_PORTS, |i| names[i].clone())?;
        netns::enter(&net.node)?;
        // Pods' interfaces come from the node's routes, as the agent finds them.
        let mut world = probe_world;
        for p in &mut world.pods {
            p.interface = p.ips.iter().find_map(|ip| netns::route_interface(*ip));
        }
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", net.node));
        let datapath = Datapath::load(&Config {
            pin_dir: pin_dir.clone(),
            ..Config::default()
        })?;
        Ok(Self {
            net,
            datapath: Some(datapath),
            world,
            compiler: Compiler::new(),
            pin_dir,
            next_sctp_port: 30000,
        })
    }

    /// Compiles the current world and applies the difference.
    pub fn apply(&mut self) -> Result<crate::load::ApplyReport, RunError> {
        let dp = self.datapath.as_mut().ok_or_else(|| LoadError::Map {
            name: "datapath",
            reason: "unloaded".into(),
        })?;
        let d = self.compiler.update(self.world.clone());
        Ok(dp.apply_diff(self.compiler.compiled(), &d)?)
    }

    /// The last compilation applied.
    pub fn compiled(&self) -> &Compiled {
        self.compiler.compiled()
    }

    /// Probes every ordered pair of distinct pods.
    pub fn probe(&mut self, probe: &Probe, opts: &Options) -> Result<Table, RunError> {
        let n = self.world.pods.len();
        let mut cells = vec![vec![None; n]; n];
        if probe.protocol == "SCTP" {
            for (i, row) in cells.iter_mut().enumerate() {
                for (j, cell) in row.iter_mut().enumerate() {
                    if i != j {
                        *cell = Some(self.sctp(i, j, probe.port, probe.ip_family)?);
                    }
                }
            }
        } else {
            // All clients at once: denied probes cost one timeout in total.
            let results: Vec<Result<Vec<Option<String>>, NetnsError>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|i| {
                        let targets: Vec<(usize, String, u16)> = (0..n)
                            .filter(|j| *j != i)
                            .map(|j| (j, probe.protocol.clone(), probe.port))
                            .collect();
                        let net = &self.net;
                        let timeout = opts.timeout;
                        let v6 = probe.ip_family == IpFamily::IPv6;
                        s.spawn(move || net.probe_many_over(i, &targets, v6, timeout))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new())))
                    .collect()
            });
            for (i, r) in results.into_iter().enumerate() {
                let replies = r?;
                for (k, j) in (0..n).filter(|j| *j != i).enumerate() {
                    let want = format!("{}/{}", self.world.pods[j].namespace, self.world.pods[j].name);
                    cells[i][j] = Some(replies.get(k).cloned().flatten().is_some_and(|r| r == want));
                }
            }
        }
        Ok(Table {
            pods: self
                .world
                .pods
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect(),
            cells,
        })
    }

    /// An SCTP INIT from pod `i` to pod `j` over `family`: through
    /// `plinth_from_pod` on i's host veth, then `plinth_to_pod` on j's.
    fn sctp(&mut self, i: usize, j: usize, port: u16, family: IpFamily) -> Result<bool, RunError> {
        self.next_sctp_port = self.next_sctp_port.wrapping_add(1).max(30000);
        let (Some(src), Some(dst)) = (family.address(&self.world.pods[i]), family.address(&self.world.pods[j])) else {
            return Ok(false);
        };
        let Some(pkt) = crate::testrun::ip_packet(src, dst, 132, self.next_sctp_port, port) else {
            return Ok(false);
        };
        let idx = |k: usize| -> u32 {
            self.world.pods[k]
                .interface
                .as_deref()
                .and_then(|n| nix::net::if_::if_nametoindex(n).ok())
                .unwrap_or(0)
        };
        let (src_if, dst_if) = (idx(i), idx(j));
        let dp = self.datapath.as_mut().ok_or_else(|| LoadError::Map {
            name: "datapath",
            reason: "unloaded".into(),
        })?;
        let mut verdict = |prog: &'static str, ifindex: u32| -> Result<u32, RunError> {
            let p: &SchedClassifier = dp
                .ebpf()
                .program(prog)
                .ok_or(RunError::TestRun {
                    prog,
                    reason: "missing".into(),
                })?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| RunError::TestRun {
                    prog,
                    reason: e.to_string(),
                })?;
            crate::testrun::run(p, ifindex, &pkt, 1)
                .map(|r| r.0)
                .map_err(|e| RunError::TestRun {
                    prog,
                    reason: format!("{e}: {e:?}"),
                })
        };
        let out = verdict("plinth_from_pod", src_if)?;
        if out != crate::testrun::TC_ACT_OK {
            return Ok(false);
        }
        Ok(verdict("plinth_to_pod", dst_if)? == crate::testrun::TC_ACT_OK)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if let Some(dp) = self.datapath.take() {
            let _ = dp.teardown();
        }
    }
}

/// Runs a scenario file in a fresh model.
pub fn run_file(path: &std::path::Path, opts: &Options) -> Result<(Scenario, Vec<ProbeResult>), RunError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut model = Model::new()?;
    let scenario = scenario::parse(&text, &shown, &model.world)?;
    let results = run(&mut model, &scenario, &shown, opts)?;
    Ok((scenario, results))
}

/// Runs a parsed scenario's steps in `model`.
pub fn run(model: &mut Model, scenario: &Scenario, path: &str, opts: &Options) -> Result<Vec<ProbeResult>, RunError> {
    let mut out = Vec::new();
    for step in &scenario.steps {
        scenario::apply_step(&mut model.world, step, path)?;
        let report = model.apply()?;
        tracing::info!(step = %step.name, changes = report.changes(), "applied");
        for probe in scenario::step_probes(step) {
            let key = probe.to_string();
            let (expected, source) = match step.expect.get(&key) {
                Some(t) => (
                    Table::parse(t, &model.world).map_err(|reason| ScenarioError::Expect {
                        path: path.to_owned(),
                        step: step.name.clone(),
                        probe: key.clone(),
                        reason,
                    })?,
                    "explicit",
                ),
                None => (Table::reference(&model.world, &probe), "reference"),
            };
            let actual = model.probe(&probe, opts)?;
            let mismatches = expected.mismatches(&actual);
            out.push(ProbeResult {
                step: step.name.clone(),
                probe: key,
                source: source.to_owned(),
                expected,
                actual,
                mismatches,
            });
        }
    }
    Ok(out)
}
