//! Renders per second on one thread: the 10-line example Application through the bundled `web` Blueprint,
//! validated, rendered, decoded into typed objects, checked, and printed as YAML (what `plinth render` does).
//!
//! Run: `cargo bench -p plinth-operator --bench render -- [SECONDS]` (pin to one core with `taskset -c 0`).

#![allow(clippy::expect_used, reason = "a benchmark stops with a message")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use plinth_api::Application;
use plinth_operator::render::{self, Platform, bundled, emit};

fn main() {
    let seconds: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5.0);
    let app: Application = serde_json::from_value(serde_json::json!({
        "apiVersion": "plinth.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"image": "ghcr.io/acme/checkout:1.4.2", "port": 8080, "replicas": 3, "allowFrom": [{"app": "frontend"}]}
    }))
    .expect("example application");
    let bp = bundled::loaded().expect("bundled blueprints").get("web").expect("web");
    let platform = Platform::default();
    let once = || {
        let rendered = render::render(black_box(&app), bp, &platform).expect("renders");
        let docs: Vec<serde_json::Value> = rendered.objects.iter().map(|o| o.object.to_json()).collect();
        emit::to_yaml_stream(&docs)
    };
    let bytes = once().len();
    // Warm up, then count whole renders for the given time.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        black_box(once());
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..100 {
            black_box(once());
        }
        n += 100;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("plinth renders: {n} in {elapsed:.2} s = {:.0} renders/s, {:.1} µs each, {bytes} bytes of YAML", n as f64 / elapsed, elapsed * 1e6 / n as f64);
}
