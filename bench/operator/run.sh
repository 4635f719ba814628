#!/usr/bin/env bash
# Operator benchmark on the test control plane: time for N Applications to converge from creation,
# the operator's peak RSS and CPU, API requests per reconcile, and writes during a full resync of
# unchanged Applications. Prints one JSON line per size.
#
#   bench/operator/run.sh            # 1000 and 10000 Applications
#   bench/operator/run.sh 1000       # one size
#
# Needs the control-plane binaries (tests/control-plane/provision.sh). Builds in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("${@:-1000 10000}")
cargo build --release -p plinth-operator --bin plinth
target="${CARGO_TARGET_DIR:-target}"
export PLINTH_BIN="$target/release/plinth"
# The allocator settings the image runs the operator with (Dockerfile): freed memory goes back at once.
export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY:-0}" MIMALLOC_ARENA_EAGER_COMMIT="${MIMALLOC_ARENA_EAGER_COMMIT:-0}"
for n in ${sizes[@]}; do
  PLINTH_BENCH_APPS="$n" PLINTH_BENCH_RESYNC_SECONDS="${PLINTH_BENCH_RESYNC_SECONDS:-60}" RUST_LOG="${RUST_LOG:-info}" \
    cargo test --release -p plinth-tests --test e2e_operator -- --ignored --exact bench_convergence --nocapture 2>&1 \
    | tee "/tmp/plinth-bench-operator-$n.log" | grep --line-buffered -E "PLINTH_BENCH_RESULT|converging|panicked"
done
