"""Renders charts/plinth with the real Helm library (helm-python-sdk) into Kubernetes objects.

Used by the chart tests (test_chart.py) and, as a command, by the end-to-end test that installs the chart on the
test control plane (tests/tests/e2e_chart.rs):

    python3 charts/tests/chart.py --release plinth --namespace plinth-system [--values JSON]
        [--install KUBECONFIG | --upgrade KUBECONFIG | --uninstall KUBECONFIG]

prints {"objects": [...], "crds": [...], "notes": "..."} as JSON. With --install it is `helm install
--skip-crds --server-side` on the cluster of KUBECONFIG, run by Helm's own code: `.Capabilities` come from the
cluster's discovery (policy/v1beta1 PodDisruptionBudgets on Kubernetes 1.20, for example), every object is
server-side applied, and "objects" are the release's manifest. The CRDs are left to
the caller, because Helm applies crds/ server-side and API servers before 1.25 refuse their CEL rules that way.
--upgrade and --uninstall are `helm upgrade --server-side` and `helm uninstall` of that release.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from helm_python import _native
from helm_python import chart as helm_chart
from helm_python.config import Config

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
) -> tuple[list[dict[str, Any]], str]:
    """Renders the chart offline; returns its objects (in template order) and NOTES.txt."""
    with helm_chart.Chart.load(CHART) as loaded:
        manifests = loaded.render(values or {}, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            notes = manifests[path]
            continue
        objects.extend(documents(manifests[path]))
    return objects, notes


def install(
    kubeconfig: str, values: dict[str, Any] | None = None, *, release: str, namespace: str
) -> tuple[list[dict[str, Any]], str]:
    """`helm install --skip-crds --server-side`; returns the release's objects and its notes."""
    # Config.install does not expose skip_crds and server_side_apply; the library's install action takes them.
    options = {
        "namespace": namespace,
        "skip_crds": True,
        "server_side_apply": True,
        "wait": "hookOnly",
        "timeout_seconds": 120,
    }
    return _release_action("helm_install", kubeconfig, values, release, namespace, options)


def upgrade(
    kubeconfig: str, values: dict[str, Any] | None = None, *, release: str, namespace: str
) -> tuple[list[dict[str, Any]], str]:
    """`helm upgrade --server-side` of an installed release; returns the new revision's objects and notes."""
    # For upgrades Helm takes "true", "false" or "auto" (keep what the release used).
    options = {"namespace": namespace, "server_side_apply": "true", "wait": "hookOnly", "timeout_seconds": 120}
    return _release_action("helm_upgrade", kubeconfig, values, release, namespace, options)


def _release_action(
    action: str, kubeconfig: str, values: dict[str, Any] | None, release: str, namespace: str, options: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """Runs a release action of the Helm library on the chart; returns the release's objects and notes."""
    with helm_chart.Chart.load(CHART) as loaded, Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        payload = _native.call_string(
            action,
            config._raw(),
            Config._context_arg(None),
            loaded._raw(),
            None,
            release,
            json.dumps(values or {}),
            json.dumps(options),
        )
    result = json.loads(payload)
    return documents(result["manifest"]), result.get("info", {}).get("notes", "")


def uninstall(kubeconfig: str, *, release: str, namespace: str) -> None:
    """`helm uninstall` (the CRDs stay, as with any chart)."""
    with Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        config.uninstall(release, timeout=120)


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
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--install", metavar="KUBECONFIG", help="install the release on this cluster")
    action.add_argument("--upgrade", metavar="KUBECONFIG", help="upgrade the release on this cluster")
    action.add_argument("--uninstall", metavar="KUBECONFIG", help="uninstall the release from this cluster")
    args = parser.parse_args()
    values = json.loads(args.values)
    if args.install:
        objects, notes = install(args.install, values, release=args.release, namespace=args.namespace)
    elif args.upgrade:
        objects, notes = upgrade(args.upgrade, values, release=args.release, namespace=args.namespace)
    elif args.uninstall:
        uninstall(args.uninstall, release=args.release, namespace=args.namespace)
        objects, notes = [], ""
    else:
        objects, notes = render(values, release=args.release, namespace=args.namespace)
    json.dump({"objects": objects, "crds": crds(), "notes": notes}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
