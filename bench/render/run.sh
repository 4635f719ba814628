#!/usr/bin/env bash
# Render benchmark: Plinth and Helm render the same workload on one core, in one run, side by side.
#
#   bench/render/run.sh [COUNT]
#
# Each side renders the 10-line example COUNT times (default 2000) pinned to CPU 0; the CPU time each process
# spends (user + system, less a run that renders nothing, to leave out start-up) gives renders per CPU-second,
# which stays steady when other work shares the machine. Plinth's side prints the YAML too, as Helm's does.
set -euo pipefail
cd "$(dirname "$0")/../.."
count="${1:-2000}"
python3 -c 'import helm_python' 2>/dev/null || python3 -m pip install -q 'helm-python-sdk==0.2.2'
cargo build -q --release -p plinth-operator --bench render
bench=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/render-* | grep -v '\.d$' | head -n 1)
cpu() { /usr/bin/time -f '%U %S' taskset -c 0 "$@" 2>&1 >/dev/null | tail -n 1 | awk '{print $1 + $2}'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r); $(date -u '+%F %H:%M') UTC; load $(cut -d' ' -f1-3 /proc/loadavg)"
p0=$(cpu "$bench" 0x); p=$(cpu "$bench" "${count}x")
h0=$(cpu python3 bench/render/helm_render.py 0x); h=$(cpu python3 bench/render/helm_render.py "${count}x")
python3 - "$count" "$p0" "$p" "$h0" "$h" <<'PY'
import sys
n, p0, p, h0, h = int(sys.argv[1]), *map(float, sys.argv[2:])
pr, hr = n / max(p - p0, 1e-9), n / max(h - h0, 1e-9)
print(f"| Plinth render + print | {n} | {p - p0:.2f} | {pr:,.0f} | {1e6 / pr:.0f} |")
print(f"| Helm (helm-python-sdk 0.2.2, in process) | {n} | {h - h0:.2f} | {hr:,.0f} | {1e6 / hr:.0f} |")
print(f"ratio: Plinth renders {pr / hr:.1f}x as many Applications per CPU-second as Helm")
PY
