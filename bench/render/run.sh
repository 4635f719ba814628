#!/usr/bin/env bash
# Render benchmark: Plinth and Helm render the same workload on one core, in one run, side by side.
#   bench/render/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-5}"
python3 -c 'import helm_python' 2>/dev/null || python3 -m pip install -q 'helm-python-sdk==0.2.2'
cargo build -q --release -p plinth-operator --bench render
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r); date: $(date -u +%F)"
plinth=$(taskset -c 0 cargo bench -q -p plinth-operator --bench render -- "$seconds" | tail -n 1)
helm=$(taskset -c 0 python3 bench/render/helm_render.py "$seconds" | tail -n 1)
echo "$plinth"
echo "$helm"
p=$(sed -E 's/.*= ([0-9]+) renders\/s.*/\1/' <<<"$plinth")
h=$(sed -E 's/.*= ([0-9]+) renders\/s.*/\1/' <<<"$helm")
echo "ratio: Plinth renders $(python3 -c "print(f'{$p / $h:.1f}')")x as many Applications per second as Helm"
