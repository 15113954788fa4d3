"""Integration tests of the local control plane harness itself (real etcd, API server, kwok)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.localcluster.cluster import NODE_COUNT, OPERATOR_USER, LocalCluster
from tests.localcluster.layout import REPO_ROOT, ClusterLayout
from tests.localcluster.processes import is_running
from tests.localcluster.session import KubeCluster
from tests.localcluster.waiting import wait_until

pytestmark = pytest.mark.integration


def get_json(cluster: KubeCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def exists(cluster: KubeCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def apply(cluster: KubeCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def pod_is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def test_nodes_are_ready_with_distinct_hostnames_and_zones(kube_cluster: KubeCluster) -> None:
    if not kube_cluster.is_local:
        pytest.skip("the fake nodes exist only on the local control plane")
    nodes = get_json(kube_cluster, "nodes")["items"]
    by_name = {node["metadata"]["name"]: node for node in nodes}
    assert sorted(by_name) == [f"kwok-node-{i}" for i in range(NODE_COUNT)]
    for name, node in by_name.items():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert not node["spec"].get("taints")
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", f"{name} not Ready: {ready}"
    zones = {node["metadata"]["labels"]["topology.kubernetes.io/zone"] for node in nodes}
    assert zones == {"zone-a", "zone-b", "zone-c"}


def deployment(name: str, *, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def test_deployment_pods_become_running_and_ready(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    apply(kube_cluster, namespace, deployment("web", replicas=2))

    def available() -> bool:
        status = get_json(kube_cluster, "deployment", "web", "-n", namespace).get("status", {})
        return bool(status.get("availableReplicas") == 2)

    wait_until(available, timeout=60, what="deployment web availableReplicas == 2")
    pods = get_json(kube_cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    assert all(pod_is_ready(pod) for pod in pods), [pod["status"] for pod in pods]
    assert all(pod["spec"].get("nodeName", "").startswith("kwok-node-") for pod in pods)


def test_garbage_collector_deletes_owner_referenced_children(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    apply(kube_cluster, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "parent"}, "data": {},
    })  # fmt: skip
    parent_uid = get_json(kube_cluster, "configmap", "parent", "-n", namespace)["metadata"]["uid"]
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent_uid}
    apply(kube_cluster, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [owner]}, "data": {},
    })  # fmt: skip
    kube_cluster.kubectl("delete", "configmap", "parent", "-n", namespace)
    wait_until(
        lambda: not exists(kube_cluster, "configmap", "child", "-n", namespace),
        timeout=60,
        what="the garbage collector to delete configmap child after its owner",
    )


def test_statefulset_claims_are_provisioned_and_its_pod_runs(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    labels = {"app": "db"}
    apply(kube_cluster, namespace, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "db", "image": "registry.invalid/db:1",
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]},
    })  # fmt: skip

    def ready_pod() -> bool:
        return exists(kube_cluster, "pod", "db-0", "-n", namespace) and pod_is_ready(
            get_json(kube_cluster, "pod", "db-0", "-n", namespace)
        )

    wait_until(ready_pod, timeout=60, what="pod db-0 of StatefulSet db Running and Ready")
    claim = get_json(kube_cluster, "pvc", "data-db-0", "-n", namespace)
    assert claim["status"]["phase"] == "Bound"


def test_cronjob_makes_a_job_whose_pod_succeeds(kube_cluster: KubeCluster, namespace: str) -> None:
    apply(kube_cluster, namespace, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "tick", "image": "registry.invalid/tick:1"}],
        }}}}},
    })  # fmt: skip

    def succeeded_jobs() -> list[dict[str, Any]]:
        jobs = get_json(kube_cluster, "jobs", "-n", namespace)["items"]
        return [job for job in jobs if job.get("status", {}).get("succeeded", 0) >= 1]

    # Schedules have one-minute granularity: the first run comes within 60 s.
    wait_until(lambda: bool(succeeded_jobs()), timeout=150, interval=1.0,
               what="a Job made by CronJob tick to succeed")  # fmt: skip
    job = succeeded_jobs()[0]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    selector = f"job-name={job['metadata']['name']}"
    pods = get_json(kube_cluster, "pods", "-n", namespace, "-l", selector)["items"]
    assert [pod["status"]["phase"] for pod in pods] == ["Succeeded"]


def test_audit_log_records_writes_per_user(kube_cluster: KubeCluster, namespace: str) -> None:
    if kube_cluster.audit_log is None:
        pytest.skip("an existing cluster has no audit log the tests can read")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    denied = kube_cluster.operator_kubectl(
        "create", "configmap", "before-grant", "-n", namespace, check=False
    )
    assert "forbidden" in denied.stderr.lower(), "the operator user must start without rights"
    kube_cluster.kubectl(
        "create", "rolebinding", "operator-edit", "--clusterrole=edit",
        f"--user={OPERATOR_USER}", "-n", namespace,
    )  # fmt: skip
    kube_cluster.operator_kubectl("create", "configmap", "by-operator", "-n", namespace)

    def operator_writes() -> list[tuple[str, str, str, int]]:
        return [
            (event.verb, event.resource, event.name, event.code)
            for event in kube_cluster.write_requests(user=OPERATOR_USER, since=since)
            if event.namespace == namespace
        ]

    wait_until(
        lambda: ("create", "configmaps", "by-operator", 201) in operator_writes(),
        timeout=30,
        what="the audit log to record the operator user's configmap create",
    )
    assert ("create", "configmaps", "", 403) in operator_writes()
    admin_writes = kube_cluster.write_requests(user="admin", since=since)
    assert any(e.resource == "rolebindings" and e.namespace == namespace for e in admin_writes)
    assert not any(e.verb in {"get", "list", "watch"} for e in admin_writes)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_down_leaves_no_process_behind(kube_cluster: KubeCluster, tmp_path: Path) -> None:
    # A second, private control plane: bringing it down must not touch the session's.
    started = LocalCluster(ClusterLayout(tmp_path / "cluster"))
    result = started.up()
    records = started.records()
    assert [r.name for r in records] == [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
    ]  # fmt: skip
    assert all(is_running(record) for record in records)
    assert started.up().reused, "up must be idempotent on a healthy cluster"

    # A new handle on the same folder stands for `down` after the starting process crashed.
    stopped = LocalCluster(ClusterLayout(tmp_path / "cluster")).down()

    assert sorted(stopped) == sorted(r.name for r in records)
    assert not any(is_running(record) for record in records)
    assert not port_is_open(result.endpoints.apiserver)
    assert not port_is_open(result.endpoints.etcd_client)
    assert not started.layout.pids.exists()
    if kube_cluster.is_local:
        assert exists(kube_cluster, "namespace", "default"), "the session cluster must survive"


SESSION_SCRIPT = """
import sys, time
from pathlib import Path
from tests.localcluster.cluster import LocalCluster
from tests.localcluster.layout import REPO_ROOT, ClusterLayout
LocalCluster(ClusterLayout(Path(sys.argv[1])), tie_to_parent=True).up()
print("up", flush=True)
time.sleep(600)
"""


def test_servers_die_with_the_session_that_started_them(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    session = subprocess.Popen(
        [sys.executable, "-c", SESSION_SCRIPT, str(folder)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert session.stdout is not None
        assert session.stdout.readline().strip() == "up"
        records = LocalCluster(ClusterLayout(folder)).records()
        assert len(records) == 5
        assert all(is_running(record) for record in records)
    finally:
        session.kill()  # no cleanup code runs: as if the pytest process were killed
        session.wait()
        if session.stdout is not None:
            session.stdout.close()

    wait_until(
        lambda: not any(is_running(record) for record in records),
        timeout=90,
        what="every server to exit after its session was killed",
    )
    assert LocalCluster(ClusterLayout(folder)).down() == []
