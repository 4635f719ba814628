#!/usr/bin/env python3
"""Generates a corpus of valid Plinth Applications for the `plinth validate` benchmark.

Usage: gen_corpus.py OUT_DIR [COUNT] [PER_FILE]

Writes COUNT Applications (default 10000), PER_FILE documents per file (default 100), deterministic,
varied the way real ones are: ports, autoscaling, env from literals, Secrets and ConfigMaps, resources,
health checks, network peers, RBAC permissions, config files and Blueprint values.
"""
import os
import random
import sys


def app(i, rng):
    name = f"app-{i:05d}"
    ns = f"team-{i % 37}"
    lines = [
        "apiVersion: plinth.dev/v1alpha1",
        "kind: Application",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {ns}",
        "  labels:",
        f"    team: t{i % 37}",
        "spec:",
        f"  image: ghcr.io/acme/{name}:1.{i % 20}.{i % 7}",
    ]
    kind = i % 4
    if kind == 0:
        lines += [f"  port: {8000 + i % 1000}", f"  replicas: {1 + i % 5}"]
    elif kind == 1:
        lines += [
            "  ports:",
            "    - {name: http, port: 8080}",
            "    - {name: metrics, port: 9090}",
            "  autoscale:",
            f"    min: {1 + i % 3}",
            f"    max: {4 + i % 10}",
            "    cpuPercent: 70",
        ]
    elif kind == 2:
        lines += ["  port: 8080"]
    else:
        lines += ["  blueprint: worker", f"  replicas: {1 + i % 3}"]
    lines += [
        "  env:",
        f"    - {{name: LOG_LEVEL, value: {rng.choice(['debug', 'info', 'warn'])}}}",
        f"    - name: DB_PASSWORD\n      secret: {{name: {name}-db, key: password}}",
    ]
    if i % 3 == 0:
        lines.append(f"    - name: FEATURES\n      configMap: {{name: {name}-features, key: flags}}")
    lines += [
        "  resources:",
        f"    requests: {{cpu: {100 + i % 400}m, memory: {128 + i % 256}Mi}}",
        f"    limits: {{cpu: '{1 + i % 2}', memory: {256 + i % 512}Mi}}",
    ]
    if kind != 3:
        if i % 2 == 0:
            lines += ["  health:", "    http: {path: /healthz}", "    initialDelaySeconds: 5"]
        lines += [
            "  allowFrom:",
            f"    - app: frontend-{i % 11}",
            f"    - {{app: gateway, namespace: edge, ports: [{{port: 8080}}]}}",
        ]
    lines += [
        "  allowTo:",
        f"    - app: ledger-{i % 13}",
        f"    - cidr: 203.0.{i % 256}.0/24",
        "      ports: [{port: 443}]",
    ]
    if i % 5 == 0:
        lines += [
            "  permissions:",
            "    - apiGroups: ['']",
            "      resources: [configmaps]",
            "      verbs: [get, list, watch]",
        ]
    if i % 4 == 0:
        lines += [
            "  config:",
            "    app.yaml: |",
            f"      name: {name}",
            f"      workers: {1 + i % 8}",
        ]
    if kind in (0, 2):
        lines += ["  values:", "    annotations: {prometheus.io/scrape: 'true'}"]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    per_file = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    rng = random.Random(42)
    os.makedirs(out, exist_ok=True)
    for start in range(0, count, per_file):
        docs = [app(i, rng) for i in range(start, min(count, start + per_file))]
        with open(os.path.join(out, f"apps-{start // per_file:04d}.yaml"), "w") as f:
            f.write("---\n".join(docs))


if __name__ == "__main__":
    main()
