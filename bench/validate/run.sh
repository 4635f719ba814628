#!/usr/bin/env bash
# Benchmark of `plinth validate`: Applications validated per second (schema, CEL, validator rules,
# Blueprint, guardrails and the full render dry-run) over a generated corpus, side by side in one run with
# the peers a user would otherwise pick:
#   - check-jsonschema with the schema `plinth schema --kind Application` prints (schema checks only);
#   - kubernetes-validate on the Deployments the same Applications render (the reference: ~77/s).
# Needs: python3, `pip install check-jsonschema kubernetes-validate` (or PEERS_VENV=/path/to/venv).
# Usage: bench/validate/run.sh [COUNT]   (default 10000; results as a Markdown table on stdout)
# plinth runs are the best of three; the peers, much slower, run once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
count=${1:-10000}
sample=${KV_SAMPLE:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin_dir=${PEERS_VENV:+$PEERS_VENV/bin/}
plinth=${PLINTH:-}
if [ -z "$plinth" ]; then
  (cd "$root" && cargo build --release -q -p plinth-operator >&2)
  plinth="${CARGO_TARGET_DIR:-$root/target}/release/plinth"
fi

python3 "$here/gen_corpus.py" "$work/multi" "$count" 100
python3 "$here/gen_corpus.py" "$work/single" "$count" 1
"$plinth" schema --kind Application >"$work/application.schema.json"

# Prints "wall_seconds cpu_seconds" of a command (stdout and stderr discarded); fails if it fails unexpectedly.
measure() {
  local expect=$1; shift
  local t0 t1 code
  t0=$(date +%s.%N)
  set +e
  /usr/bin/time -f "%U %S" -o "$work/time" "$@" >"$work/out" 2>&1
  code=$?
  set -e
  t1=$(date +%s.%N)
  if [ "$code" != "$expect" ]; then
    echo "unexpected exit code $code from: $*" >&2
    tail -5 "$work/out" >&2
    exit 1
  fi
  read -r user sys <"$work/time"
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$user + $sys" | bc -l)"
}

best() { # best of three runs: "wall cpu"
  local b="" r
  for _ in 1 2 3; do
    r=$(measure "$@")
    if [ -z "$b" ] || [ "$(echo "${r%% *} < ${b%% *}" | bc -l)" = 1 ]; then b=$r; fi
  done
  echo "$b"
}

row() { # name, items, "wall cpu", unit
  local wall=${3%% *} cpu=${3##* }
  printf '| %s | %s | %.2f | %.2f | %.0f | %.0f |\n' "$1" "$2" "$wall" "$cpu" \
    "$(echo "$2 / $wall" | bc -l)" "$(echo "$2 / $cpu" | bc -l)"
}

# The rendered Deployments of the first $sample Applications, for kubernetes-validate.
ls "$work/single" | sed -n "1,${sample}p" | sed "s|^|$work/single/|" | xargs "$plinth" render >"$work/rendered.yaml"
python3 - "$work/rendered.yaml" "$work/deployments.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "Deployment"]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
print(len(docs), file=open(sys.argv[2] + ".count", "w"))
PY
deployments=$(cat "$work/deployments.yaml.count")

plinth_multi=$(best 0 "$plinth" validate "$work/multi")
plinth_single=$(best 0 "$plinth" validate "$work/single")
plinth_one_thread=$(best 0 "$plinth" validate -j 1 "$work/multi")
cjs=$(measure 0 "${bin_dir}check-jsonschema" --schemafile "$work/application.schema.json" "$work"/single/*.yaml)
kv=$(measure 0 "${bin_dir}kubernetes-validate" -k 1.33.0 --strict --quiet "$work/deployments.yaml")

echo "Corpus: $count generated Applications; $(nproc) cores; $(uname -sr); $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo '| tool | items | wall s | CPU s | items/s (wall) | items/s (CPU) |'
echo '|---|---|---|---|---|---|'
row "plinth validate, 100 files of 100 (full check + render dry-run)" "$count" "$plinth_multi"
row "plinth validate -j 1, 100 files of 100" "$count" "$plinth_one_thread"
row "plinth validate, $count files of 1" "$count" "$plinth_single"
row "check-jsonschema with plinth schema, $count files of 1 (schema only)" "$count" "$cjs"
row "kubernetes-validate --strict, rendered Deployments" "$deployments" "$kv"
echo
pw=${plinth_multi%% *}; kw=${kv%% *}
echo "plinth validate / kubernetes-validate (wall): $(printf '%.0f' "$(echo "($count / $pw) / ($deployments / $kw)" | bc -l)")x"
