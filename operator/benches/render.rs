//! Renders per second on one thread: the 10-line example Application through the bundled `web` Blueprint.
//!
//! Two numbers: `render` (validate, guardrails, templates, decode into typed Kubernetes objects, scope and
//! Pod Security checks: what the operator does per reconcile) and `render+print` (the same, printed as YAML:
//! what `plinth render` does, and what Helm's render returns).
//!
//! Run: `cargo bench -p plinth-operator --bench render -- [SECONDS | COUNTx]` (pin with `taskset -c 0`);
//! `COUNTx` renders exactly COUNT times without warm-up, for instruction counts under callgrind.

#![allow(clippy::expect_used, reason = "a benchmark stops with a message")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use plinth_api::Application;
use plinth_operator::render::{self, Platform, bundled, emit};

/// The allocator the `plinth` binary uses (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "5".into());
    let app: Application = serde_json::from_value(serde_json::json!({
        "apiVersion": "plinth.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"image": "ghcr.io/acme/checkout:1.4.2", "port": 8080, "replicas": 3, "allowFrom": [{"app": "frontend"}]}
    }))
    .expect("example application");
    let bp = bundled::loaded().expect("bundled blueprints").get("web").expect("web");
    let platform = Platform::default();
    let render_only = || {
        render::render(black_box(&app), bp, &platform)
            .expect("renders")
            .objects
            .len()
    };
    let render_print = || {
        let rendered = render::render(black_box(&app), bp, &platform).expect("renders");
        emit::to_yaml_stream(rendered.objects.iter().map(|o| &o.object))
            .expect("prints")
            .len()
    };
    let bytes = render_print();
    if let Some(count) = arg.strip_suffix('x').and_then(|c| c.parse::<u64>().ok()) {
        for _ in 0..count {
            black_box(render_print());
        }
        println!("rendered and printed {count} times");
        return;
    }
    let seconds: f64 = arg.parse().unwrap_or(5.0);
    for (name, f) in [
        ("render", &render_only as &dyn Fn() -> usize),
        ("render+print", &render_print),
    ] {
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(300) {
            black_box(f());
        }
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..50 {
                black_box(f());
            }
            n += 50;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "plinth {name}: {n} in {elapsed:.2} s = {:.0} renders/s, {:.1} µs each ({bytes} bytes of YAML)",
            n as f64 / elapsed,
            elapsed * 1e6 / n as f64
        );
    }
}
