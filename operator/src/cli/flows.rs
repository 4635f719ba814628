//! `plinth flows`: follow the node agent's flow verdicts, like `hubble observe`.
//!
//! The agent (`plinth-agent run`) serves flows as JSON lines on a Unix socket; the client and the
//! filter are `plinth_policies::flows`, so this command needs neither clang nor BPF.

use std::io::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;
use plinth_policies::flows::{DEFAULT_SOCKET, Flow, FlowFilter, follow};

use super::exit;

/// Which verdicts to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verdict {
    /// Flows a policy (or the absence of one) let through.
    Allowed,
    /// Flows the datapath dropped.
    Denied,
}

/// How to print flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FlowFormat {
    /// One line per flow: `x/c(198.18.0.12):40001 -> x/a(198.18.0.10):80 TCP ingress DENIED (policy-denied)`.
    #[default]
    Text,
    /// One JSON object per line (the agent's flow format).
    Json,
}

/// Arguments of `plinth flows`.
#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// The agent's flow socket (`plinth-agent run --flows-socket`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Only flows to or from this pod (`namespace/pod`, or `pod` in any namespace).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows to or from this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    pub verdict: Option<Verdict>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: FlowFormat,
    /// JSON lines; the same as `-o json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Stop after this many flows (default: follow until interrupted or the agent stops).
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
}

impl FlowsArgs {
    fn filter(&self) -> FlowFilter {
        FlowFilter {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            verdict: self.verdict.map(|v| {
                match v {
                    Verdict::Allowed => "allowed",
                    Verdict::Denied => "denied",
                }
                .to_owned()
            }),
        }
    }

    fn format(&self) -> FlowFormat {
        if self.json { FlowFormat::Json } else { self.output }
    }
}

fn line(flow: &Flow, format: FlowFormat) -> Result<String, serde_json::Error> {
    match format {
        FlowFormat::Text => Ok(flow.to_text()),
        FlowFormat::Json => serde_json::to_string(flow),
    }
}

/// Runs `plinth flows`.
pub fn run(args: &FlowsArgs) -> u8 {
    let format = args.format();
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut failure = None;
    if args.count == Some(0) {
        return exit::OK;
    }
    let followed = follow(&args.socket, &args.filter(), |flow| {
        let text = match line(&flow, format) {
            Ok(t) => t,
            Err(e) => {
                failure = Some(format!("cannot print a flow as JSON: {e}"));
                return false;
            }
        };
        // A closed stdout (`plinth flows | head`) ends the command quietly.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return false;
        }
        seen += 1;
        args.count.is_none_or(|n| seen < n)
    });
    if let Some(msg) = failure {
        eprintln!("internal error: {msg}");
        return exit::INTERNAL;
    }
    match followed {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            eprintln!(
                "error: the agent on {} sent a line that is not a flow: {e}; is `plinth` older than the agent?",
                args.socket.display()
            );
            exit::INTERNAL
        }
        Err(e) => {
            eprintln!(
                "error: cannot follow flows on {}: {e}\n  hint: is `plinth-agent run` running on this node? \
                 Point --socket at its --flows-socket.",
                args.socket.display()
            );
            exit::INVALID
        }
    }
}
