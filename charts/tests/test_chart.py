"""Tests of charts/plinth with the real Helm library (helm-python-sdk: Helm's own Go code as a shared library).

Lint (strict) and render for the default values and for every documented option, schema refusals of wrong
values, least-privilege RBAC equal to operator/rbac/, pod security, and generated files in sync with the code.
Applying the chart to a real API server is tests/tests/e2e_chart.rs.

    python3 -m pytest charts/tests -q
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from helm_python import chart as helm_chart
from helm_python.errors import HelmError

from chart import CHART, REPO, render

# Kubernetes versions the chart is linted for: the test control plane's and a current one.
KUBE_VERSIONS = ["v1.20.2", "v1.33.0"]
# Lint severities (helm lint): 1 info, 2 warning, 3 error.
WARNING = 2


def objects_of(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return render(values, **kw)[0]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """RBAC rules as (apiGroup, resource, verb, resourceName) tuples: equal grants compare equal, however grouped."""
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r["verbs"]:
                    for n in r.get("resourceNames") or ["*"]:
                        out.add((g, res, v, n))
    return out


def operator_grants(objs: list[dict[str, Any]]) -> tuple[set, set]:
    """(cluster-wide grants, grants in the operator's namespace) of the operator's roles."""
    cluster = set()
    for role in find(objs, "ClusterRole"):
        if role["metadata"]["name"].endswith("-agent"):
            continue
        cluster |= grants(role["rules"])
    namespaced = set()
    for role in find(objs, "Role"):
        namespaced |= grants(role["rules"])
    return cluster, namespaced


# ---------------------------------------------------------------------------------------------------------------
# Every documented option: the values, and what must follow from them.


def check_defaults(objs: list[dict[str, Any]]) -> None:
    deploy = one(objs, "Deployment", "plinth-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}, "one writer at a time without leader election"
    args = container(deploy)["args"]
    assert args[0] == "operator" and "--leader-election=false" in args
    assert [r["metadata"]["name"] for r in find(objs, "Role")] == ["plinth-operator-revisions"], (
        "no Lease permissions without leader election"
    )
    assert {"name": "PLINTH_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container(
        deploy
    )["env"], "Blueprint revisions in the release namespace"
    assert container(deploy)["image"] == "ghcr.io/plinth-dev/plinth:0.1.0"
    one(objs, "DaemonSet", "plinth-agent")
    assert {b["metadata"]["name"] for b in find(objs, "Blueprint")} == {"web", "worker"}
    one(objs, "PodDisruptionBudget", "plinth-operator")
    one(objs, "Service", "plinth-operator-metrics")
    assert not find(objs, "ServiceMonitor")
    assert not find(objs, "ConfigMap")


def check_replicas(objs: list[dict[str, Any]]) -> None:
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    args = container(deploy)["args"]
    assert "--leader-election=true" in args and "--lease-name=plinth-operator" in args
    role = one(objs, "Role", "plinth-operator-leader-election")
    assert role["metadata"]["namespace"] == "plinth-system"
    assert grants(role["rules"]) == {("coordination.k8s.io", "leases", v, "*") for v in ("get", "create", "update")}
    binding = one(objs, "RoleBinding", "plinth-operator-leader-election")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "plinth-operator", "namespace": "plinth-system"}]


def check_leader_election_forced(objs: list[dict[str, Any]]) -> None:
    assert "--leader-election=true" in container(one(objs, "Deployment"))["args"]
    one(objs, "Role", "plinth-operator-leader-election")


def check_watch_namespace(objs: list[dict[str, Any]]) -> None:
    assert "--namespace=shop" in container(one(objs, "Deployment"))["args"]
    binding = one(objs, "RoleBinding", "plinth-operator")
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["roleRef"]["name"] == "plinth-operator"
    assert not find(objs, "ClusterRoleBinding", "plinth-operator"), "no cluster-wide writes"
    one(objs, "ClusterRoleBinding", "plinth-operator-blueprints")
    assert "namespace: shop" in render({"operator": {"watchNamespace": "shop"}})[1]


def check_tuning(objs: list[dict[str, Any]]) -> None:
    args = container(one(objs, "Deployment"))["args"]
    for arg in ["--concurrency=4", "--api-qps=20", "--api-burst=30", "--resync=30s", "--log=plinth_operator=debug",
                "--log-format=text"]:
        assert arg in args


def check_platform(objs: list[dict[str, Any]]) -> None:
    cm = one(objs, "ConfigMap", "plinth-operator-platform")
    assert yaml.safe_load(cm["data"]["platform.yaml"]) == {"clusterDomain": "corp.local", "defaultCpuRequest": "50m"}
    deploy = one(objs, "Deployment")
    assert "--platform=/etc/plinth/platform.yaml" in container(deploy)["args"]
    assert deploy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "plinth-operator-platform"
    assert "checksum/platform" in deploy["spec"]["template"]["metadata"]["annotations"]


def check_operator_resources_and_scheduling(objs: list[dict[str, Any]]) -> None:
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert container(deploy)["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert pod["nodeSelector"] == {"role": "system"}
    assert pod["tolerations"] == [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert deploy["spec"]["template"]["metadata"]["annotations"] == {"a": "1"}
    assert deploy["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert one(objs, "ServiceAccount", "plinth-operator")["metadata"]["annotations"] == {"iam": "role"}


def check_metrics(objs: list[dict[str, Any]]) -> None:
    deploy = one(objs, "Deployment")
    c = container(deploy)
    assert "--metrics-address=0.0.0.0:9090" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    svc = one(objs, "Service", "plinth-operator-metrics")
    assert svc["spec"]["ports"][0]["port"] == 9090
    sm = one(objs, "ServiceMonitor", "plinth-operator")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def check_no_metrics_service(objs: list[dict[str, Any]]) -> None:
    assert not find(objs, "Service")


def check_no_pdb(objs: list[dict[str, Any]]) -> None:
    assert not find(objs, "PodDisruptionBudget")


def check_pdb(objs: list[dict[str, Any]]) -> None:
    assert one(objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"


def check_agent_disabled(objs: list[dict[str, Any]]) -> None:
    assert not find(objs, "DaemonSet")
    assert not [o for o in objs if o["metadata"]["name"] == "plinth-agent"]
    assert "off (NetworkPolicies are enforced by your CNI)" in render({"agent": {"enabled": False}})[1]


def check_agent_options(objs: list[dict[str, Any]]) -> None:
    ds = one(objs, "DaemonSet")
    c = container(ds)
    pod = ds["spec"]["template"]["spec"]
    assert "--metrics-addr=$(HOST_IP):9500" in c["args"]
    assert {"name": "RUST_LOG", "value": "debug"} in c["env"]
    assert c["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}}
    assert c["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": "plinth-agent.json"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "a"}
    assert pod["priorityClassName"] == "high"
    assert pod["affinity"]["nodeAffinity"]
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    assert ds["spec"]["template"]["metadata"]["annotations"] == {"b": "2"}
    assert ds["spec"]["template"]["metadata"]["labels"]["team"] == "net"
    assert one(objs, "ServiceAccount", "plinth-agent")["metadata"]["annotations"] == {"x": "y"}


def check_no_blueprints(objs: list[dict[str, Any]]) -> None:
    assert not find(objs, "Blueprint")


def check_image(objs: list[dict[str, Any]]) -> None:
    digest = "sha256:" + "a" * 64
    for workload in [one(objs, "Deployment"), one(objs, "DaemonSet")]:
        c = container(workload)
        assert c["image"] == f"registry.corp/plinth@{digest}"
        assert c["imagePullPolicy"] == "Always"
        assert workload["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def check_image_tag(objs: list[dict[str, Any]]) -> None:
    assert container(one(objs, "Deployment"))["image"] == "ghcr.io/plinth-dev/plinth:0.2.0-rc.1"


def check_names(objs: list[dict[str, Any]]) -> None:
    one(objs, "Deployment", "platform-operator")
    one(objs, "DaemonSet", "platform-agent")
    for o in objs:
        if o["kind"] != "Blueprint":
            assert o["metadata"]["name"].startswith("platform"), o["metadata"]["name"]


def check_name_override(objs: list[dict[str, Any]]) -> None:
    deploy = one(objs, "Deployment", "plinth-paved-operator")
    assert deploy["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "paved"


def check_grant_escalate(objs: list[dict[str, Any]]) -> None:
    cluster, _ = operator_grants(objs)
    assert ("rbac.authorization.k8s.io", "roles", "escalate", "*") in cluster
    assert ("rbac.authorization.k8s.io", "roles", "bind", "*") in cluster
    assert not {g for g in cluster if g[1] == "clusterroles"}, "never ClusterRoles"


def check_grant_held(objs: list[dict[str, Any]]) -> None:
    held = one(objs, "ClusterRole", "plinth-operator-held")
    assert grants(held["rules"]) == {("", "pods", v, "*") for v in ("get", "list", "watch")}
    one(objs, "ClusterRoleBinding", "plinth-operator-held")
    cluster, _ = operator_grants(objs)
    assert not {g for g in cluster if g[2] in ("escalate", "bind")}


OPTIONS: list[tuple[str, dict[str, Any], Callable[[list[dict[str, Any]]], None]]] = [
    ("defaults", {}, check_defaults),
    ("operator.replicas", {"operator": {"replicas": 3}}, check_replicas),
    ("operator.leaderElection", {"operator": {"leaderElection": True}}, check_leader_election_forced),
    ("operator.watchNamespace", {"operator": {"watchNamespace": "shop"}}, check_watch_namespace),
    (
        "operator tuning",
        {"operator": {"concurrency": 4, "apiQps": 20, "apiBurst": 30, "resync": "30s", "logLevel": "plinth_operator=debug",
                      "logFormat": "text"}},
        check_tuning,
    ),
    ("operator.platform", {"operator": {"platform": {"clusterDomain": "corp.local", "defaultCpuRequest": "50m"}}},
     check_platform),
    (
        "operator resources and scheduling",
        {
            "operator": {
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": None},
                "nodeSelector": {"role": "system"},
                "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                      "labelSelector": {"matchLabels": {"app": "x"}}}}]}},
                "priorityClassName": "system-cluster-critical",
                "terminationGracePeriodSeconds": 60,
                "podAnnotations": {"a": "1"},
                "podLabels": {"team": "platform"},
                "serviceAccount": {"annotations": {"iam": "role"}},
            }
        },
        check_operator_resources_and_scheduling,
    ),
    (
        "operator.metrics",
        {"operator": {"metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "interval": "15s",
                                                                    "labels": {"release": "prometheus"}}}}},
        check_metrics,
    ),
    ("operator.metrics.service", {"operator": {"metrics": {"service": {"enabled": False}}}}, check_no_metrics_service),
    ("operator.podDisruptionBudget.enabled", {"operator": {"podDisruptionBudget": {"enabled": False}}}, check_no_pdb),
    ("operator.podDisruptionBudget.maxUnavailable", {"operator": {"podDisruptionBudget": {"maxUnavailable": "50%"}}},
     check_pdb),
    ("agent.enabled", {"agent": {"enabled": False}}, check_agent_disabled),
    (
        "agent options",
        {
            "agent": {
                "logLevel": "debug",
                "metrics": {"port": 9500},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": None},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "plinth-agent.json"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
                "nodeSelector": {"pool": "a"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}},
                "priorityClassName": "high",
                "updateStrategy": {"maxUnavailable": "10%"},
                "serviceAccount": {"annotations": {"x": "y"}},
                "podAnnotations": {"b": "2"},
                "podLabels": {"team": "net"},
            }
        },
        check_agent_options,
    ),
    ("blueprints.install", {"blueprints": {"install": False}}, check_no_blueprints),
    (
        "image",
        {"image": {"repository": "registry.corp/plinth", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
         "imagePullSecrets": [{"name": "regcred"}]},
        check_image,
    ),
    ("image.tag", {"image": {"tag": "0.2.0-rc.1"}}, check_image_tag),
    ("fullnameOverride", {"fullnameOverride": "platform"}, check_names),
    ("nameOverride", {"nameOverride": "paved"}, check_name_override),
    ("rbac.grantMode escalate", {"rbac": {"grantMode": "escalate"}}, check_grant_escalate),
    (
        "rbac.heldPermissions",
        {"rbac": {"grantMode": "held", "heldPermissions": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}},
        check_grant_held,
    ),
]


@pytest.mark.parametrize("values", [v for _, v, _ in OPTIONS], ids=[n for n, _, _ in OPTIONS])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_is_clean(values: dict[str, Any], kube_version: str) -> None:
    report = helm_chart.lint(CHART, values, strict=True, namespace="plinth-system", kube_version=kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert not problems and not report.get("errors"), problems or report["errors"]


@pytest.mark.parametrize("name,values,check", OPTIONS, ids=[n for n, _, _ in OPTIONS])
def test_option_renders(name: str, values: dict[str, Any], check: Callable[[list[dict[str, Any]]], None]) -> None:
    objs = objects_of(values)
    check(objs)
    for o in objs:
        meta = o["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        if o["kind"] != "Blueprint":
            assert meta["labels"]["app.kubernetes.io/instance"] == "plinth"
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        cluster_scoped = o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Blueprint")
        assert ("namespace" in meta) != cluster_scoped, f"{o['kind']} {meta['name']}"


def test_every_option_is_rendered_by_a_case() -> None:
    tested = set()
    for _, values, _ in OPTIONS:
        tested |= set(leaf_paths(values))
    undocumented = [p for p in leaf_paths(helm_chart.Chart.load(CHART).values) if not any(
        t == p or t.startswith(p + ".") or p.startswith(t + ".") for t in tested)]
    assert not undocumented, f"values no test case sets: {undocumented}"


# ---------------------------------------------------------------------------------------------------------------
# Schema: wrong values fail at install time, naming the value.

WRONG: list[tuple[dict[str, Any], str]] = [
    ({"operator": {"replicas": 0}}, "replicas"),
    ({"operator": {"replicas": "two"}}, "replicas"),
    ({"operator": {"replica": 2}}, "replica"),
    ({"operator": {"leaderElection": "yes"}}, "leaderElection"),
    ({"operator": {"watchNamespace": "Not_A_Namespace"}}, "watchNamespace"),
    ({"operator": {"resync": "five minutes"}}, "resync"),
    ({"operator": {"logFormat": "xml"}}, "logFormat"),
    ({"operator": {"platform": {"clusterDomian": "x"}}}, "clusterDomian"),
    ({"operator": {"resources": {"requests": {"memory": "lots"}}}}, "memory"),
    ({"operator": {"metrics": {"port": 70000}}}, "port"),
    ({"operator": {"podDisruptionBudget": {"maxUnavailable": 0}}}, "maxUnavailable"),
    ({"agent": {"enabled": "no"}}, "enabled"),
    ({"agent": {"seccompProfile": {"type": "Off"}}}, "type"),
    ({"agent": {"tolerations": [{"operator": "Maybe"}]}}, "operator"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"blueprints": {"install": "yes"}}, "install"),
    ({"rbac": {"grantMode": "admin"}}, "grantMode"),
    ({"rbac": {"heldPermissions": [{"resources": ["pods"], "verbs": ["get"]}]}}, "apiGroups"),
    ({"unknownTopLevel": True}, "unknownTopLevel"),
]


@pytest.mark.parametrize("values,named", WRONG, ids=[n for _, n in WRONG])
def test_wrong_values_are_refused_naming_the_value(values: dict[str, Any], named: str) -> None:
    with helm_chart.Chart.load(CHART) as loaded:
        with pytest.raises(HelmError) as refused:
            loaded.validate_schema(loaded.merge_values(values))
        assert named in str(refused.value), str(refused.value)
        # An install renders with the same check: the release is refused before anything reaches the cluster.
        with pytest.raises(HelmError) as at_install:
            loaded.render(values, name="plinth", namespace="plinth-system", is_install=True)
        assert named in str(at_install.value), str(at_install.value)
    report = helm_chart.lint(CHART, values, strict=True, namespace="plinth-system")
    assert any(m["severity"] > WARNING for m in report["messages"]), report


def test_default_values_pass_the_schema() -> None:
    with helm_chart.Chart.load(CHART) as loaded:
        loaded.validate_schema(loaded.merge_values({}))


# ---------------------------------------------------------------------------------------------------------------
# RBAC: least privilege, and the same rules as operator/rbac/.


def test_operator_rules_equal_operator_rbac() -> None:
    """The chart's operator rules (default values, leader election on) are operator/rbac/clusterrole.yaml's."""
    source = REPO / "operator" / "rbac" / "clusterrole.yaml"
    assert source.exists(), f"{source} is missing: it is the one source of the operator's rules"
    docs = [d for d in yaml.safe_load_all(source.read_text(encoding="utf-8")) if d]
    want_cluster = set().union(*(grants(d["rules"]) for d in docs if d["kind"] == "ClusterRole"))
    want_namespaced = set().union(*(grants(d["rules"]) for d in docs if d["kind"] == "Role"))
    cluster, namespaced = operator_grants(objects_of({"operator": {"replicas": 2}}))
    assert cluster == want_cluster, (
        f"only in the chart: {sorted(cluster - want_cluster)}; only in {source}: {sorted(want_cluster - cluster)}"
    )
    assert namespaced == want_namespaced, (
        f"only in the chart: {sorted(namespaced - want_namespaced)}; "
        f"only in {source}: {sorted(want_namespaced - namespaced)}"
    )


def test_operator_rules_are_least_privilege() -> None:
    cluster, namespaced = operator_grants(objects_of({"operator": {"replicas": 2}}))
    rendered_kinds = {
        ("", "serviceaccounts"), ("", "configmaps"), ("", "services"),
        ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
        ("networking.k8s.io", "networkpolicies"), ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"), ("policy", "poddisruptionbudgets"),
    }
    allowed = {(g, r, v, "*") for g, r in rendered_kinds for v in ("get", "list", "watch", "create", "patch", "delete")}
    allowed |= {("plinth.dev", r, v, "*") for r in ("applications", "blueprints") for v in ("get", "list", "watch")}
    allowed |= {("plinth.dev", r, "patch", "*") for r in ("applications/status", "blueprints/status")}
    allowed |= {("events.k8s.io", "events", v, "*") for v in ("create", "patch")}
    # Early-adopter Namespaces of a rollout: listed by label, never read one by one, watched or changed.
    allowed |= {("", "namespaces", "list", "*")}
    assert cluster <= allowed, sorted(cluster - allowed)
    assert not {g for g in cluster if "*" in g[:3]}, "no wildcards"
    assert not {g for g in cluster if g[1] in ("secrets", "pods", "clusterroles", "clusterrolebindings")}
    assert namespaced == {("coordination.k8s.io", "leases", v, "*") for v in ("get", "create", "update")} | {
        ("apps", "controllerrevisions", v, "*") for v in ("get", "list", "create", "delete")
    }


def test_agent_may_only_read_pods_namespaces_and_network_policies() -> None:
    objs = objects_of({})
    role = one(objs, "ClusterRole", "plinth-agent")
    assert grants(role["rules"]) == {
        (g, r, v, "*")
        for g, r in [("", "pods"), ("", "namespaces"), ("networking.k8s.io", "networkpolicies")]
        for v in ("get", "list", "watch")
    }
    binding = one(objs, "ClusterRoleBinding", "plinth-agent")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "plinth-agent", "namespace": "plinth-system"}]
    assert binding["roleRef"]["name"] == "plinth-agent"


# ---------------------------------------------------------------------------------------------------------------
# Pod security.


def test_operator_pod_is_restricted() -> None:
    """The operator pod meets the Pod Security Standards "restricted" profile."""
    deploy = one(objects_of({}), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC", "volumes"))
    assert c["resources"]["requests"]
    probes = {p: c[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "PLINTH_NAMESPACE": "metadata.namespace",
    }


def test_agent_has_exactly_the_privileges_it_needs() -> None:
    ds = one(objects_of({}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "PERFMON"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostNetwork"] is True
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    host_paths = [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == [{"path": "/sys/fs/bpf", "type": "Directory"}], "bpffs is the only host path"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["bpffs"]["mountPropagation"] == "HostToContainer"
    assert pod["tolerations"] == [{"operator": "Exists"}], "every node"
    assert "--node=$(NODE_NAME)" in c["args"] and "--pin-dir=/sys/fs/bpf/plinth" in c["args"]


# ---------------------------------------------------------------------------------------------------------------
# Generated files, Blueprints, documentation.


def test_generated_files_match_the_code() -> None:
    """crds/ is `plinth crds` and files/blueprints/ is `plinth blueprints export` (charts/generate.sh --check)."""
    run = subprocess.run([str(REPO / "charts" / "generate.sh"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_blueprints_reach_the_cluster_untouched() -> None:
    """Helm does not template the Blueprints' Handlebars: the objects equal the exported files."""
    objs = objects_of({})
    exported = []
    for path in sorted((CHART / "files" / "blueprints").glob("*.yaml")):
        exported.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    assert exported and find(objs, "Blueprint") == exported
    assert any("{{" in str(b["spec"]) for b in exported)


def test_crds_are_installed_from_the_crds_folder() -> None:
    with helm_chart.Chart.load(CHART) as loaded:
        names = {yaml.safe_load(c["data"])["metadata"]["name"] for c in loaded.crds}
    assert names == {"applications.plinth.dev", "blueprints.plinth.dev"}


# Values documented as one: maps of free keys, and container resources.
WHOLE_VALUES = {"resources", "seccompProfile"}


def leaf_paths(values: Any, prefix: str = "", schema: dict[str, Any] | None = None) -> list[str]:
    """Paths of the values, as the README names them: objects with fixed keys are opened, maps are not."""
    if schema is None:
        schema = helm_chart.Chart.load(CHART).schema or {}
    whole = prefix.rsplit(".", 1)[-1] in WHOLE_VALUES
    if isinstance(values, dict) and values and schema.get("additionalProperties") is False and not whole:
        out = []
        for k, v in values.items():
            sub = schema.get("properties", {}).get(k, {})
            out.extend(leaf_paths(v, f"{prefix}.{k}" if prefix else k, sub))
        return out
    return [prefix]


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.M))
    values = set(leaf_paths(helm_chart.Chart.load(CHART).values))
    assert values - documented == set(), f"values missing from README.md: {sorted(values - documented)}"
    assert documented - values == set(), f"README.md documents values that do not exist: {sorted(documented - values)}"


def test_schema_declares_every_value() -> None:
    with helm_chart.Chart.load(CHART) as loaded:
        schema = loaded.schema
        values = loaded.values

    def declared(path: list[str], node: dict[str, Any]) -> bool:
        if not path:
            return True
        props = node.get("properties", {})
        return path[0] in props and declared(path[1:], props[path[0]])

    missing = [p for p in leaf_paths(values) if not declared(p.split("."), schema)]
    assert not missing, f"values.schema.json does not declare: {missing}"


def test_values_file_is_the_default() -> None:
    """values.yaml parses to what Helm uses by default (no templating surprises)."""
    on_disk = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert helm_chart.Chart.load(CHART).values == copy.deepcopy(on_disk)


def test_the_image_holds_the_binaries_the_chart_runs() -> None:
    """The Dockerfile builds and copies every command the chart's containers run, and keeps templates/ in."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    objs = objects_of({})
    commands = {container(w)["command"][0] for w in find(objs, "Deployment") + find(objs, "DaemonSet")}
    assert commands == {"plinth", "plinth-agent"}
    for command in commands:
        assert f"--bin {command}" in dockerfile, f"the Dockerfile does not build {command}"
        assert f"/out/{command}" in dockerfile, f"the Dockerfile does not copy {command}"
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert "templates" not in ignored, "the bundled Blueprints are compiled in from templates/"
    assert re.search(r"^USER 65532", dockerfile, re.M), "non-root by default"


def test_the_notes_example_application_is_valid(tmp_path: Path) -> None:
    """The first Application NOTES.txt shows passes `plinth validate` and renders with the bundled Blueprints."""
    notes = render({})[1]
    lines = notes.split("Write your first Application, app.yaml:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    example = tmp_path / "app.yaml"
    example.write_text("\n".join(line.removeprefix("  ") for line in lines) + "\n", encoding="utf-8")
    assert yaml.safe_load(example.read_text(encoding="utf-8"))["kind"] == "Application"
    cargo_run = ["cargo", "run", "-q", "-p", "plinth-operator", "--"]
    plinth = [os.environ["PLINTH"]] if os.environ.get("PLINTH") else cargo_run
    for command in (["validate", str(example)], ["render", str(example)]):
        run = subprocess.run(plinth + command, capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, f"plinth {command[0]}: {run.stdout}{run.stderr}"
