//! The `plinth` command line: render, validate and inspect Applications and Blueprints offline.

pub mod blueprints;
pub mod diff;
pub mod flows;
pub mod input;
pub mod operator;
pub mod render;
pub mod report;
pub mod rollout;
pub mod schema;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, the same for every command.
pub mod exit {
    /// Everything is valid.
    pub const OK: u8 = 0;
    /// Invalid input, or findings.
    pub const INVALID: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// Something failed inside Plinth.
    pub const INTERNAL: u8 = 3;
}

/// Plinth: Applications in, secure Kubernetes workloads out.
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render Applications into Kubernetes objects offline, like `helm template`.
    Render(render::RenderArgs),
    /// Check Application and Blueprint manifests offline, as the cluster and the operator would; the CI gate.
    Validate(validate::ValidateArgs),
    /// Print a JSON Schema of Application and Blueprint for editors (yaml-language-server).
    Schema(schema::SchemaArgs),
    /// Print the CustomResourceDefinitions of Application and Blueprint.
    Crds,
    /// Run the controller: keep Applications rendered, applied and reported in a cluster.
    Operator(Box<operator::OperatorArgs>),
    /// List, show and export Blueprints.
    #[command(subcommand)]
    Blueprints(blueprints::BlueprintsCommand),
    /// Show what the operator would change in the cluster for Applications: a server-side dry-run per object.
    Diff(diff::LiveDiffArgs),
    /// Follow and steer the rollout of a Blueprint change: status, pause, resume, abort, undo.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Follow the node agent's NetworkPolicy verdicts (pod, namespace, verdict filters; text or JSON lines).
    Flows(flows::FlowsArgs),
}

/// Output formats for objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ObjectFormat {
    /// Multi-document YAML.
    #[default]
    Yaml,
    /// A JSON `List`.
    Json,
}

/// Where Blueprints come from besides the bundled ones.
#[derive(Debug, Clone, clap::Args)]
pub struct BlueprintSource {
    /// A folder of Blueprint folders (each with a blueprint.yaml), or one Blueprint folder; overrides bundled Blueprints of the same name.
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // A panic is a bug in Plinth, never the user's fault: say so and exit with the internal-error code.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error: {info}\nThis is a bug in Plinth; please report it with the input that caused it.");
        std::process::exit(i32::from(exit::INTERNAL));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let code = match cli.command {
        Command::Render(args) => render::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Crds => crds(),
        Command::Operator(args) => operator::run(*args),
        Command::Blueprints(cmd) => blueprints::run(&cmd),
        Command::Rollout(cmd) => rollout::run(&cmd),
        Command::Diff(args) => diff::run_live(&args),
        Command::Flows(args) => flows::run(&args),
    };
    ExitCode::from(code)
}

fn crds() -> u8 {
    let docs: Vec<serde_json::Value> = plinth_api::crds()
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    blueprints::print_stream(&docs)
}
