"""Renders charts/plinth with the real Helm library (helm-python-sdk) into Kubernetes objects.

Used by the chart tests (test_chart.py) and, as a command, by the end-to-end test that applies the chart to the
test control plane (tests/tests/e2e_chart.rs):

    python3 charts/tests/chart.py --release plinth --namespace plinth-system [--values JSON] [--kubeconfig FILE]

prints {"objects": [...], "crds": [...], "notes": "..."} as JSON. With --kubeconfig the chart is rendered as an
install on that cluster would render it: `.Capabilities` come from the cluster's discovery (policy/v1beta1
PodDisruptionBudgets on Kubernetes 1.20, for example); nothing is written to the cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from helm_python import chart as helm_chart

CHART = Path(__file__).resolve().parent.parent / "plinth"
REPO = CHART.parent.parent


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a manifest."""
    return [d for d in yaml.safe_load_all(text) if d]


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = "plinth",
    namespace: str = "plinth-system",
    kubeconfig: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Renders the chart; returns its objects (in template order) and NOTES.txt."""
    with helm_chart.Chart.load(CHART) as loaded:
        if kubeconfig:
            from helm_python.config import HelmConfig

            with HelmConfig(kubeconfig_path=kubeconfig, namespace=namespace) as config:
                manifests = config.render(
                    loaded, values or {}, name=release, namespace=namespace, is_install=True
                )
        else:
            manifests = loaded.render(values or {}, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            notes = manifests[path]
            continue
        objects.extend(documents(manifests[path]))
    return objects, notes


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the chart's crds/ folder."""
    found: list[dict[str, Any]] = []
    for path in sorted((CHART / "crds").glob("*.yaml")):
        found.extend(documents(path.read_text(encoding="utf-8")))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", default="plinth")
    parser.add_argument("--namespace", default="plinth-system")
    parser.add_argument("--values", default="{}", help="values as a JSON object")
    parser.add_argument("--kubeconfig", help="render against this cluster's capabilities")
    args = parser.parse_args()
    objects, notes = render(
        json.loads(args.values), release=args.release, namespace=args.namespace, kubeconfig=args.kubeconfig
    )
    json.dump({"objects": objects, "crds": crds(), "notes": notes}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
