#!/usr/bin/env bash
# Regenerates the chart's generated files from the code, the one source of both:
#   charts/plinth/crds/<name>.yaml           from `plinth crds`, one file per CRD, so that
#                                            `cat charts/plinth/crds/*.yaml` is exactly `plinth crds`
#   charts/plinth/files/blueprints/<name>.yaml from `plinth blueprints export`, one file per Blueprint
#
# Usage: charts/generate.sh [--check]
#   --check   change nothing; fail, naming the files, when the chart is out of date
# Environment:
#   PLINTH    a built `plinth` binary to use instead of `cargo run -q -p plinth-operator --`
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
case "${1:-}" in
    --check) check=true ;;
    "") ;;
    *) echo "usage: charts/generate.sh [--check]" >&2; exit 2 ;;
esac

if [ -n "${PLINTH:-}" ]; then plinth=("$PLINTH"); else plinth=(cargo run -q -p plinth-operator --); fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"${plinth[@]}" crds > "$out/crds.stream" || { echo "error: \`plinth crds\` failed" >&2; exit 1; }
"${plinth[@]}" blueprints export > "$out/blueprints.stream" \
    || { echo "error: \`plinth blueprints export\` failed" >&2; exit 1; }

# Splits a YAML stream at its `---` lines into one file per document, named after metadata.name, and checks
# that the files, concatenated in name order, give back the stream byte for byte.
split() {
    python3 - "$1" "$2" <<'PY'
import os, re, sys
stream, folder = sys.argv[1], sys.argv[2]
text = open(stream, encoding="utf-8").read()
docs, current = [], []
for line in text.splitlines(keepends=True):
    if line.rstrip("\r\n") == "---" and any(l.strip() and not l.startswith("#") for l in current):
        docs.append("".join(current))
        current = []
    current.append(line)
docs.append("".join(current))
os.makedirs(folder, exist_ok=True)
names = []
for doc in docs:
    # metadata.name: the first `  name:` under the top-level `metadata:`.
    m = re.search(r"^metadata:\n(?:[ ]{2}.*\n)*?[ ]{2}name: *['\"]?([a-z0-9.-]+)", doc, re.M)
    if not m:
        sys.exit(f"error: a document of {stream} has no metadata.name:\n{doc[:300]}")
    names.append(m.group(1))
if names != sorted(names) or len(set(names)) != len(names):
    sys.exit(f"error: documents of {stream} are not in name order ({names}): `cat` of the files would differ")
for name, doc in zip(names, docs):
    with open(os.path.join(folder, name + ".yaml"), "w", encoding="utf-8") as f:
        f.write(doc)
if "".join(open(os.path.join(folder, n + ".yaml"), encoding="utf-8").read() for n in names) != text:
    sys.exit(f"error: the split of {stream} does not concatenate back to it")
PY
}

split "$out/crds.stream" "$out/crds"
split "$out/blueprints.stream" "$out/blueprints"

chart=charts/plinth
if $check; then
    ok=true
    diff -ru "$chart/crds" "$out/crds" || ok=false
    diff -ru "$chart/files/blueprints" "$out/blueprints" || ok=false
    if ! $ok; then
        echo "error: $chart is out of date with \`plinth crds\` / \`plinth blueprints export\`: run charts/generate.sh" >&2
        exit 1
    fi
    echo "charts/plinth: CRDs and Blueprints are current"
else
    rm -rf "$chart/crds" "$chart/files/blueprints"
    mkdir -p "$chart/files"
    cp -r "$out/crds" "$chart/crds"
    cp -r "$out/blueprints" "$chart/files/blueprints"
    echo "wrote $chart/crds/ and $chart/files/blueprints/"
fi
