//! `plinth render`: Applications in, Kubernetes objects out, offline, like `helm template`.

use std::path::PathBuf;

use super::{BlueprintSource, ObjectFormat, exit};
use crate::render::Object;
use crate::validate::{Options, Severity};

/// Arguments of `plinth render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Application manifests: files, folders (recursive), or `-` for standard input. Blueprint manifests among them are used too.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub source: BlueprintSource,
    /// Namespace for Applications that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Platform settings (cluster DNS, default requests) as a YAML file.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: ObjectFormat,
}

/// Runs `plinth render`: the same checks as `plinth validate` (one walk over the inputs, shared), then the objects.
pub fn run(args: &RenderArgs) -> u8 {
    let platform = match super::validate::load_platform(args.platform.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let options = Options {
        namespace: args.namespace.clone(),
        platform,
        keep_rendered: true,
        ..Options::default()
    };
    let read = match super::validate::read_inputs(&args.paths, &options.limits, options.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let outcome = match super::validate::run_checks(&read, &args.source, &options) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let diags = super::validate::diagnostics(&outcome, &read.sources);
    super::validate::print_diagnostics(&diags, false);
    if outcome.has_errors() {
        let n = diags.iter().filter(|(s, _)| *s == Severity::Error).count();
        eprintln!("{n} problem{} found; nothing rendered", if n == 1 { "" } else { "s" });
        return exit::INVALID;
    }
    let objects: Vec<&Object> = outcome
        .rendered
        .iter()
        .flat_map(|r| r.objects.iter().map(|o| &o.object))
        .collect();
    match args.output {
        ObjectFormat::Yaml => return super::blueprints::print_stream(&objects),
        ObjectFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            match serde_json::to_string_pretty(&list) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("internal error: cannot write JSON: {e}");
                    return exit::INTERNAL;
                }
            }
        }
    }
    exit::OK
}
