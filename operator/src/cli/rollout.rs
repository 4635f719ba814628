//! `plinth rollout status|pause|resume|abort|undo BLUEPRINT`: drive a Blueprint's rollout from a terminal.
//!
//! Commands are annotations on the Blueprint (the operator acts on them and reports in `status.rollout`);
//! `undo` puts an earlier revision's content back into the Blueprint's spec, which rolls out like any edit.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt as _};
use plinth_api::Blueprint;
use plinth_api::rollout::{ABORT_ANNOTATION, PAUSE_ANNOTATION, Phase, RESUME_ANNOTATION, RolloutStatus, Strategy};

use super::exit;
use crate::rollout::controller::{revisions, revisions_namespace};

/// `plinth rollout …`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show the rollout: revision, step, Applications updated / total / failed / pinned, and what happens next.
    Status {
        #[command(flatten)]
        target: Target,
        /// Keep showing progress until the rollout completes, fails or is aborted (exit 1 unless it completes).
        #[arg(short, long)]
        watch: bool,
    },
    /// Hold the rollout where it is; Applications already moved stay moved.
    Pause(Target),
    /// Continue a paused rollout: release a pause step, lift `pause`, or retry a failed step.
    Resume(Target),
    /// Stop the rollout and move every moved Application back to the stable revision.
    Abort(Target),
    /// Put an earlier revision's content back into the Blueprint (the stable one during a rollout, else the one
    /// before the current); it rolls out like any edit.
    Undo {
        #[command(flatten)]
        target: Target,
        /// The revision to go back to.
        #[arg(long, value_name = "N")]
        to_revision: Option<i64>,
    },
}

/// Which Blueprint, in which cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Blueprint name.
    pub blueprint: String,
    /// Kubeconfig file; the usual discovery when left out.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

fn target(cmd: &RolloutCommand) -> &Target {
    match cmd {
        RolloutCommand::Status { target, .. } | RolloutCommand::Undo { target, .. } => target,
        RolloutCommand::Pause(t) | RolloutCommand::Resume(t) | RolloutCommand::Abort(t) => t,
    }
}

/// Runs `plinth rollout …`.
pub fn run(cmd: &RolloutCommand) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("internal error: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match client(target(cmd)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        };
        match execute(&client, cmd).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        }
    })
}

pub(crate) async fn client(t: &Target) -> Result<Client, String> {
    let options = KubeConfigOptions {
        context: t.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &t.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("load {}: {e}", path.display()))?
        }
        None if t.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("load the kubeconfig: {e}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig and not in a cluster: {e}; pass --kubeconfig"))?,
    };
    Client::try_from(config).map_err(|e| format!("connect: {e}"))
}

async fn annotate(api: &Api<Blueprint>, name: &str, annotations: serde_json::Value) -> Result<(), String> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("annotate Blueprint {name}: {e}"))
}

/// Runs a command with a client; the exit code, or what went wrong.
///
/// # Errors
/// When the Blueprint or its revisions cannot be read or written.
pub async fn execute(client: &Client, cmd: &RolloutCommand) -> Result<u8, String> {
    let name = target(cmd).blueprint.clone();
    let api: Api<Blueprint> = Api::all(client.clone());
    let bp = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("read Blueprint {name}: {e}"))?
        .ok_or_else(|| format!("no Blueprint named {name:?} in the cluster; `kubectl get blueprints` lists them"))?;
    let rollout = bp.status.as_ref().and_then(|s| s.rollout.clone());
    match cmd {
        RolloutCommand::Status { watch, .. } => {
            if !*watch {
                print!("{}", render(&bp));
                return Ok(exit::OK);
            }
            let mut last = String::new();
            loop {
                let bp = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("read Blueprint {name}: {e}"))?;
                let text = render(&bp);
                if text != last {
                    println!("{text}");
                    last = text;
                }
                let phase = bp.status.as_ref().and_then(|s| s.rollout.as_ref()).map(|r| r.phase);
                match phase {
                    Some(Phase::Completed) => return Ok(exit::OK),
                    Some(Phase::Failed | Phase::Aborted) => return Ok(exit::INVALID),
                    _ => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        }
        RolloutCommand::Pause(_) => {
            annotate(&api, &name, serde_json::json!({PAUSE_ANNOTATION: "true"})).await?;
            println!("Blueprint {name}: rollout paused; `plinth rollout resume {name}` continues");
            Ok(exit::OK)
        }
        RolloutCommand::Resume(_) => {
            let token = k8s_openapi::jiff::Timestamp::now().to_string();
            annotate(
                &api,
                &name,
                serde_json::json!({PAUSE_ANNOTATION: null, RESUME_ANNOTATION: token}),
            )
            .await?;
            println!("Blueprint {name}: rollout resumed");
            Ok(exit::OK)
        }
        RolloutCommand::Abort(_) => {
            let Some(r) = rollout.filter(|r| r.phase != Phase::Completed) else {
                return Err(format!("Blueprint {name} has no rollout in progress"));
            };
            annotate(
                &api,
                &name,
                serde_json::json!({ABORT_ANNOTATION: r.revision.to_string()}),
            )
            .await?;
            println!(
                "Blueprint {name}: rollout of revision {} aborted; moved Applications go back to revision {}",
                r.revision, r.stable_revision
            );
            Ok(exit::OK)
        }
        RolloutCommand::Undo { to_revision, .. } => {
            let all = revisions(client, &revisions_namespace(), &name)
                .await
                .map_err(|e| crate::reconcile::error_chain(&e))?;
            let current = rollout.as_ref().map(|r| r.revision);
            let want = match (to_revision, &rollout) {
                (Some(n), _) => *n,
                (None, Some(r)) if r.phase != Phase::Completed => r.stable_revision,
                (None, _) => all
                    .iter()
                    .map(|r| r.number)
                    .filter(|n| Some(*n) < current)
                    .max()
                    .ok_or_else(|| format!("Blueprint {name} has no revision before {}", current.unwrap_or(0)))?,
            };
            let Some(rev) = all.into_iter().find(|r| r.number == want) else {
                return Err(format!("Blueprint {name} has no revision {want}"));
            };
            let mut updated = bp.clone();
            updated.spec = plinth_api::BlueprintSpec {
                rollout: bp.spec.rollout.clone(),
                ..rev.spec
            };
            api.replace(&name, &PostParams::default(), &updated)
                .await
                .map_err(|e| format!("write Blueprint {name}: {e}"))?;
            println!(
                "Blueprint {name}: spec restored from revision {want}; `plinth rollout status {name} --watch` follows it"
            );
            Ok(exit::OK)
        }
    }
}

/// The status view.
pub fn render(bp: &Blueprint) -> String {
    use std::fmt::Write as _;
    let name = bp.name_any();
    let strategy = bp.spec.rollout.as_ref().map(|r| r.strategy).unwrap_or_default();
    let steps = bp.spec.rollout.as_ref().map_or(0, |r| r.steps.len());
    let mut out = String::new();
    let Some(r) = bp.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        let _ = writeln!(
            out,
            "Blueprint {name}: no rollout recorded ({}); changes apply to every Application at once",
            if bp.spec.rollout.is_some() {
                "the operator has not seen it yet"
            } else {
                "spec.rollout is not set"
            }
        );
        return out;
    };
    let strategy = match strategy {
        Strategy::Immediate => "Immediate".to_owned(),
        Strategy::Canary => format!("Canary, {steps} steps"),
    };
    let _ = writeln!(
        out,
        "Blueprint {name}: revision {} ({}), {strategy}",
        r.revision,
        short(&r.hash)
    );
    let step = if r.phase == Phase::Completed {
        String::new()
    } else {
        format!(", step {} of {}", r.step + 1, steps + 1)
    };
    let _ = writeln!(out, "  phase:     {:?}{step}", r.phase);
    let _ = writeln!(
        out,
        "  stable:    revision {} ({})",
        r.stable_revision,
        short(&r.stable_hash)
    );
    let _ = writeln!(out, "  updated:   {}", bar(r));
    let _ = writeln!(
        out,
        "  counts:    {} updated / {} total / {} failed / {} pinned",
        r.updated,
        r.total,
        r.failed,
        r.pinned.len()
    );
    if let Some(next) = &r.next_step_at {
        let _ = writeln!(out, "  next step: {}", next.0);
    }
    if let Some(a) = &r.analysis {
        let _ = writeln!(out, "  analysis:  {a}");
    }
    if !r.message.is_empty() {
        let _ = writeln!(out, "  message:   {}", r.message);
    }
    for f in &r.failures {
        let _ = writeln!(out, "  failed:    {}: {}", f.application, f.reason);
    }
    for p in &r.pinned {
        let _ = writeln!(out, "  pinned:    {p}");
    }
    out
}

fn bar(r: &RolloutStatus) -> String {
    let total = usize::try_from(r.total).unwrap_or(0).max(1);
    let done = usize::try_from(r.updated).unwrap_or(0).min(total);
    let width = 30;
    let filled = done * width / total;
    format!(
        "[{}{}] {}/{}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        r.updated,
        r.total
    )
}

fn short(hash: &str) -> &str {
    hash.get(..19).unwrap_or(hash)
}
