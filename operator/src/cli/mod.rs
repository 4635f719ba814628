//! The `plinth` command line: render, validate and inspect Applications and Blueprints offline.

pub mod blueprints;
pub mod input;
pub mod render;
pub mod report;

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
    /// Print the CustomResourceDefinitions of Application and Blueprint.
    Crds,
    /// List, show and export Blueprints.
    #[command(subcommand)]
    Blueprints(blueprints::BlueprintsCommand),
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
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let code = match cli.command {
        Command::Render(args) => render::run(&args),
        Command::Crds => crds(),
        Command::Blueprints(cmd) => blueprints::run(&cmd),
    };
    ExitCode::from(code)
}

fn crds() -> u8 {
    let docs: Vec<serde_json::Value> = plinth_api::crds()
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    print!("{}", crate::render::emit::to_yaml_stream(&docs));
    exit::OK
}
