#!/usr/bin/env bash
# Runs Plinth's whole test suite, on a fresh machine or a warm one.
#
# It installs what the suites need from the package registries (Debian packages, PyPI), builds and caches
# the test control plane (kube-apiserver, kube-controller-manager, etcd), checks formatting and lints, and
# runs every test of the workspace: unit, golden, property, end-to-end against the control plane, and the
# eBPF datapath with real packets in network namespaces (which needs root).
#
# Nothing is skipped: when something cannot be provisioned, the script stops with an error saying what.
#
# Environment:
#   PLINTH_CACHE_DIR   where builds are cached (default ~/.cache/plinth)
#   CARGO_TARGET_DIR   Cargo's build folder (default $PLINTH_CACHE_DIR/target)
set -euo pipefail
cd "$(dirname "$0")/.."

export PLINTH_CACHE_DIR="${PLINTH_CACHE_DIR:-$HOME/.cache/plinth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PLINTH_CACHE_DIR/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$PLINTH_CACHE_DIR"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root: the datapath suites load BPF programs and create network namespaces"

step "system packages"
packages=(clang llvm libbpf-dev bpftool iproute2 iptables nftables util-linux prometheus)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || fail "cannot install ${missing[*]} with apt-get"
fi

step "Python packages (the real Helm library, for the chart tests and benchmarks)"
python3 -c 'import helm_python' 2>/dev/null || python3 -m pip install -q 'helm-python-sdk==0.2.2' \
    || fail "cannot install helm-python-sdk from PyPI"
python3 -c 'import pytest, yaml' 2>/dev/null || python3 -m pip install -q 'pytest==8.3.4' 'PyYAML==6.0.3' \
    || fail "cannot install pytest and PyYAML from PyPI"

step "test control plane (built once, then cached under $PLINTH_CACHE_DIR)"
bin_dir=$(tests/control-plane/provision.sh | tail -n 1) || fail "provisioning the test control plane failed (see above)"
[ -x "$bin_dir/kube-apiserver" ] || fail "provision.sh did not produce kube-apiserver in $bin_dir"
export PLINTH_KUBE_BIN_DIR="$bin_dir"

step "formatting"
cargo fmt --all -- --check || fail "code is not formatted: run cargo fmt --all"

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "generated files are in sync"
cargo run -q -p plinth-operator -- crds > "$PLINTH_CACHE_DIR/crds.yaml"
if [ -d charts/plinth/crds ]; then
    cat charts/plinth/crds/*.yaml | diff -u - "$PLINTH_CACHE_DIR/crds.yaml" \
        || fail "charts/plinth/crds differ from \`plinth crds\`: regenerate them"
fi
charts/generate.sh --check || fail "charts/plinth is out of date with the code: run charts/generate.sh"

step "Helm chart (lint, render, schema and RBAC checks with Helm's own library)"
python3 -m pytest charts/tests -q -p no:cacheprovider || fail "the chart tests failed (see above)"

step "tests"
cargo test --workspace --no-fail-fast
