"""`python -m tests.localcluster measure`: times the control plane's behaviours for the docs."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.localcluster.cluster import LocalCluster
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.layout import ClusterLayout
from tests.localcluster.waiting import wait_until

_GROUP = "measure.srvthreds.test"


def _apply(kubectl: Kubectl, manifest: dict[str, Any], *, namespace: str | None = None) -> None:
    scope = ["-n", namespace] if namespace else []
    kubectl("apply", *scope, "-f", "-", input=yaml.safe_dump(manifest))


def _gone(kubectl: Kubectl, *args: str) -> Callable[[], bool]:
    return lambda: kubectl("get", *args, check=False).returncode != 0


def _uid(kubectl: Kubectl, *args: str) -> str:
    return str(json.loads(kubectl("get", *args, "-o", "json").stdout)["metadata"]["uid"])


def _timed(condition: Callable[[], bool], *, what: str, timeout: float = 180) -> float:
    return wait_until(condition, timeout=timeout, interval=0.1, what=what)


def measure_deployment(kubectl: Kubectl, namespace: str) -> float:
    labels = {"app": "web"}
    start = time.monotonic()
    _apply(kubectl, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}},
    }, namespace=namespace)  # fmt: skip

    def available() -> bool:
        result = kubectl("get", "deploy", "web", "-n", namespace, "-o", "json")
        return bool(json.loads(result.stdout).get("status", {}).get("availableReplicas") == 2)

    _timed(available, what="2 available replicas")
    return time.monotonic() - start


def _child_of(owner: dict[str, str], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [owner]}}  # fmt: skip


def measure_core_gc(kubectl: Kubectl, namespace: str) -> float:
    _apply(kubectl, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "parent"}},
           namespace=namespace)  # fmt: skip
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
             "uid": _uid(kubectl, "cm", "parent", "-n", namespace)}  # fmt: skip
    _apply(kubectl, _child_of(owner, "child"), namespace=namespace)
    kubectl("delete", "cm", "parent", "-n", namespace)
    return _timed(_gone(kubectl, "cm", "child", "-n", namespace), what="GC of cm/child")


def measure_new_crd_gc(kubectl: Kubectl, namespace: str) -> float:
    """Owner is a CR of a CRD created a moment ago: the GC learns of it on its 30 s resync."""
    plural = f"w{secrets.token_hex(3)}s"
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{_GROUP}"},
        "spec": {"group": _GROUP, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": plural[:-1], "kind": plural.title()[:-1]},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True}}}]},
    }  # fmt: skip
    _apply(kubectl, crd)
    kubectl("wait", "--for=condition=Established", f"crd/{plural}.{_GROUP}", "--timeout=60s")
    kind = crd["spec"]["names"]["kind"]
    _apply(kubectl, {"apiVersion": f"{_GROUP}/v1", "kind": kind, "metadata": {"name": "owner"}},
           namespace=namespace)  # fmt: skip
    owner = {"apiVersion": f"{_GROUP}/v1", "kind": kind, "name": "owner",
             "uid": _uid(kubectl, f"{plural}.{_GROUP}", "owner", "-n", namespace)}  # fmt: skip
    _apply(kubectl, _child_of(owner, "crd-child"), namespace=namespace)
    kubectl("delete", f"{plural}.{_GROUP}", "owner", "-n", namespace)
    seconds = _timed(_gone(kubectl, "cm", "crd-child", "-n", namespace), what="GC of a CR child")
    kubectl("delete", "crd", f"{plural}.{_GROUP}", "--wait=false")
    return seconds


def measure_cronjob(kubectl: Kubectl, namespace: str) -> float:
    _apply(kubectl, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "tick", "image": "registry.invalid/tick:1"}]}}}}},
    }, namespace=namespace)  # fmt: skip

    def succeeded() -> bool:
        jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
        return any(job.get("status", {}).get("succeeded", 0) >= 1 for job in jobs)

    return _timed(succeeded, what="a CronJob-made Job to succeed", timeout=150)


def measure_namespace_deletion(kubectl: Kubectl, namespace: str) -> float:
    kubectl("delete", "namespace", namespace, "--wait=false")
    return _timed(_gone(kubectl, "namespace", namespace), what=f"namespace {namespace} gone")


def run_measurements() -> dict[str, float]:
    """Brings a fresh control plane up (unless one runs), times each behaviour, returns seconds."""
    cluster = LocalCluster(ClusterLayout.default(), tie_to_parent=True)
    result = cluster.up()
    figures = {"up (reused)" if result.reused else "up": result.seconds}
    kubectl = cluster.kubectl
    namespace = f"measure-{secrets.token_hex(3)}"
    try:
        kubectl("create", "namespace", namespace)
        wait_until(lambda: kubectl("get", "sa", "default", "-n", namespace, check=False)
                   .returncode == 0, timeout=30, what="default SA")  # fmt: skip
        figures["deployment 2/2 available"] = measure_deployment(kubectl, namespace)
        figures["GC of a ConfigMap's child"] = measure_core_gc(kubectl, namespace)
        figures["GC of a new CRD's CR child"] = measure_new_crd_gc(kubectl, namespace)
        figures["CronJob -> Job succeeded"] = measure_cronjob(kubectl, namespace)
        figures["namespace deletion"] = measure_namespace_deletion(kubectl, namespace)
    finally:
        if not result.reused:
            start = time.monotonic()
            cluster.down()
            figures["down"] = time.monotonic() - start
    return figures
