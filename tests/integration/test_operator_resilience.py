"""The operator under stress: restart mid-reconcile, two replicas, no writes at steady state."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_helpers import (
    CHANGE_TIMEOUT,
    CR_RESOURCE,
    INSTANCE_LABEL,
    OPERATOR_USER,
    RESOURCE_OF_KIND,
    AuditLog,
    Manifest,
    OperatorProcess,
    admin_kubectl,
    bind_operator_rbac,
    child_key,
    create_cluster,
    decoded,
    delete_clusters,
    describe,
    get_object,
    is_ready,
    list_objects,
    merge_patch,
    mint_user_kubeconfig,
    prepare_cluster_for_operator,
    prepared,
    render,
    running_operator,
    sample,
    served_resources,
    wait_for,
    wait_ready,
    workload_settled,
    writes_by,
)
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.session import KubeCluster

pytestmark = pytest.mark.integration

STANDBY_USER = "srvthreds-operator-standby"
STEADY_SECONDS = 60.0


@pytest.fixture(scope="module")
def kube(kube_cluster: KubeCluster) -> Kubectl:
    return admin_kubectl(kube_cluster)


@pytest.fixture
def lease_namespace(kube: Kubectl, namespace: str) -> Iterator[str]:
    """A Lease namespace of the test's own, so a killed leader's lease never blocks another test."""
    name = f"{namespace}-lease"[:63]
    prepare_cluster_for_operator(kube, lease_namespace=name)
    yield name
    delete_clusters(kube, namespace=namespace)
    kube("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def audit(kube_cluster: KubeCluster) -> AuditLog:
    if kube_cluster.audit_log is None:
        pytest.skip("counting API writes needs the local control plane's audit log")
    return AuditLog(kube_cluster.audit_log)


def children_by_instance(kube: Kubectl, name: str, *, namespace: str) -> list[Manifest]:
    resources = sorted(set(RESOURCE_OF_KIND.values()) - {"jobs.batch"})
    served = served_resources(kube)
    kinds = [r for k, r in RESOURCE_OF_KIND.items() if k in served and r in resources]
    return list_objects(kube, kinds, namespace=namespace, selector=f"{INSTANCE_LABEL}={name}")


def expected_children(kube: Kubectl, cr: Mapping[str, Any]) -> set[tuple[str, str]]:
    served = served_resources(kube)
    body = {
        "apiVersion": cr["apiVersion"],
        "kind": cr["kind"],
        "spec": cr["spec"],
        "metadata": {k: cr["metadata"][k] for k in ("name", "namespace", "uid")},
    }
    return {child_key(m) for m in render(body) if m["kind"] in served}


def credentials(kube: Kubectl, name: str, *, namespace: str) -> dict[str, dict[str, str]]:
    found = {}
    for broker in ("redis", "mongodb", "rabbitmq"):
        secret = get_object(kube, "secrets", f"{name}-{broker}-credentials", namespace=namespace)
        if secret is not None:
            found[broker] = decoded(secret)
    return found


# --- 10. restart mid-reconcile ---


def test_an_operator_killed_mid_reconcile_converges_after_restart_without_duplicates(
    kube_cluster: KubeCluster, kube: Kubectl, namespace: str, lease_namespace: str, tmp_path: Path
) -> None:
    cr = prepared(sample("production"), namespace=namespace)
    name = cr["metadata"]["name"]
    with running_operator(
        log_dir=tmp_path,
        lease_namespace=lease_namespace,
        name="first",
        kubeconfig=kube_cluster.operator_kubeconfig,
    ) as first:
        create_cluster(kube, cr)
        wait_for(
            lambda: get_object(kube, "deployments.apps", f"{name}-engine", namespace=namespace),
            timeout=CHANGE_TIMEOUT,
            what="the first children (the engine Deployment)",
            diagnostics=lambda: first.report("before the kill"),
        )
        early_credentials = credentials(kube, name, namespace=namespace)
        first.stop(sig=signal.SIGKILL)

    with running_operator(
        log_dir=tmp_path,
        lease_namespace=lease_namespace,
        name="second",
        kubeconfig=kube_cluster.operator_kubeconfig,
    ) as second:
        # The killed leader's Lease must expire first, so this wait includes the lease duration.
        ready = wait_ready(kube, name, namespace=namespace, operator=second, timeout=240)

        children = children_by_instance(kube, name, namespace=namespace)
        keys = [child_key(c) for c in children if c["kind"] != "PersistentVolumeClaim"]
        assert len(keys) == len(set(keys)), f"duplicate children: {sorted(keys)}"
        assert set(keys) == expected_children(kube, ready), second.report("children differ")
        for child in children:
            owners = child["metadata"].get("ownerReferences", [])
            uids = [o["uid"] for o in owners]
            assert len(uids) == len(set(uids)), f"{child_key(child)} owner refs {owners}"
        replica_sets = list_objects(
            kube, ["replicasets.apps"], namespace=namespace, selector=f"{INSTANCE_LABEL}={name}"
        )
        owners = [rs["metadata"]["ownerReferences"][0]["name"] for rs in replica_sets]
        assert len(owners) == len(set(owners)), (
            f"a Deployment was rolled by the restart (pod template not deterministic): {owners}"
        )
        later = credentials(kube, name, namespace=namespace)
        for broker, secret in early_credentials.items():
            assert later[broker] == secret, f"{broker} credentials were regenerated"


# --- 13. two operators, one leader ---


def lease_holder(kube: Kubectl, *, namespace: str) -> str | None:
    leases = json.loads(kube("get", "leases", "-n", namespace, "-o", "json").stdout)["items"]
    holders = [lease["spec"].get("holderIdentity") for lease in leases]
    return next((h for h in holders if h), None)


def test_of_two_operators_only_the_leader_acts_and_the_standby_takes_over(
    kube_cluster: KubeCluster,
    kube: Kubectl,
    namespace: str,
    lease_namespace: str,
    audit: AuditLog,
    tmp_path: Path,
) -> None:
    if not kube_cluster.is_local:
        pytest.skip("a second operator user needs the local control plane's CA")
    standby_kubeconfig = mint_user_kubeconfig(
        STANDBY_USER, folder=tmp_path, cluster_dir=kube_cluster.kubeconfig.parent
    )
    bind_operator_rbac(kube, lease_namespace=lease_namespace, user=STANDBY_USER)
    cr = prepared(sample("minimal"), namespace=namespace)
    name = cr["metadata"]["name"]
    with running_operator(
        log_dir=tmp_path,
        lease_namespace=lease_namespace,
        name="leader",
        kubeconfig=kube_cluster.operator_kubeconfig,
    ) as leader:
        first_holder = wait_for(
            lambda: lease_holder(kube, namespace=lease_namespace),
            timeout=60,
            what="the first operator to take the Lease",
            diagnostics=lambda: leader.report(""),
        )
        with running_operator(
            log_dir=tmp_path,
            lease_namespace=lease_namespace,
            name="standby",
            kubeconfig=standby_kubeconfig,
        ) as standby:
            wait_for(
                standby.metrics,
                timeout=60,
                what="the standby's /metrics to answer",
                diagnostics=lambda: standby.report(""),
            )
            mark = audit.mark()
            create_cluster(kube, cr)
            wait_ready(kube, name, namespace=namespace, operator=leader)
            merge_patch(
                kube,
                CR_RESOURCE,
                name,
                namespace=namespace,
                patch={"spec": {"engine": {"replicas": 2}}},
            )
            wait_engine_replicas(kube, name, namespace=namespace, replicas=2, operator=leader)

            events = audit.writes_since(mark)
            assert writes_by(events, user=OPERATOR_USER), "the leader made no writes"
            assert writes_by(events, user=STANDBY_USER) == [], standby.report(
                "the standby wrote:\n" + describe(writes_by(events, user=STANDBY_USER))
            )
            assert lease_holder(kube, namespace=lease_namespace) == first_holder

            leader.stop()
            mark = audit.mark()
            merge_patch(
                kube,
                CR_RESOURCE,
                name,
                namespace=namespace,
                patch={"spec": {"engine": {"replicas": 3}}},
            )
            wait_engine_replicas(kube, name, namespace=namespace, replicas=3, operator=standby)
            wait_ready(kube, name, namespace=namespace, operator=standby)
            took_over = writes_by(audit.writes_since(mark), user=STANDBY_USER)
            assert any(e.resource == "deployments" for e in took_over), describe(took_over)
            assert lease_holder(kube, namespace=lease_namespace) != first_holder


def unsettled_neighbours(kube: Kubectl, *, namespace: str) -> list[str]:
    """Clusters elsewhere that would keep the operator busy: not Ready, or in a dying namespace."""
    items = json.loads(kube("get", CR_RESOURCE, "-A", "-o", "json").stdout)["items"]
    namespaces = json.loads(kube("get", "namespaces", "-o", "json").stdout)["items"]
    dying = {n["metadata"]["name"] for n in namespaces if n["status"].get("phase") != "Active"}
    return [
        f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        for item in items
        if item["metadata"]["namespace"] != namespace
        and (item["metadata"]["namespace"] in dying or not is_ready(item))
    ]


def settled(kube: Kubectl, name: str, *, namespace: str) -> Manifest | None:
    """The cluster once nothing else moves: Ready, every workload settled, each HPA at or above
    its minimum, and the status counting what the workloads run (returned), else None."""
    cr = get_object(kube, CR_RESOURCE, name, namespace=namespace)
    if not is_ready(cr):
        return None
    selector = f"{INSTANCE_LABEL}={name}"
    workloads = list_objects(kube, ["deployments.apps", "statefulsets.apps"], namespace=namespace,
                             selector=selector)  # fmt: skip
    replicas = {w["metadata"]["name"]: w["spec"].get("replicas") for w in workloads}
    scalers = list_objects(kube, ["horizontalpodautoscalers.autoscaling"], namespace=namespace,
                           selector=selector)  # fmt: skip
    scaled = all(
        (replicas.get(h["spec"]["scaleTargetRef"]["name"]) or 0) >= h["spec"]["minReplicas"]
        for h in scalers
    )
    assert cr is not None
    counted = cr["status"].get("components", {}).get("engine", {}).get("replicas")
    in_status = counted == replicas.get(f"{name}-engine")
    return cr if scaled and in_status and all(map(workload_settled, workloads)) else None


def status_changes(kube: Kubectl, before: Mapping[str, Any]) -> str:
    """The status fields that differ between `before` and the live cluster (for diagnostics)."""
    meta = before["metadata"]
    now = get_object(kube, CR_RESOURCE, meta["name"], namespace=meta["namespace"]) or {}
    old, new = before.get("status", {}), now.get("status", {})
    changed = {k: (old.get(k), new.get(k)) for k in {*old, *new} if old.get(k) != new.get(k)}
    return json.dumps(changed, default=str)[:3000]


def wait_engine_replicas(
    kube: Kubectl, name: str, *, namespace: str, replicas: int, operator: OperatorProcess
) -> None:
    wait_for(
        lambda: (
            (
                get_object(kube, "deployments.apps", f"{name}-engine", namespace=namespace)
                or {"spec": {}}
            )["spec"].get("replicas")
            == replicas
        ),
        timeout=240,
        what=f"the engine Deployment at {replicas} replicas",
        diagnostics=lambda: operator.report(""),
    )


# --- 11. steady state ---


def test_once_ready_the_operator_makes_no_writes_for_a_minute(
    kube_cluster: KubeCluster,
    kube: Kubectl,
    namespace: str,
    lease_namespace: str,
    audit: AuditLog,
    tmp_path: Path,
) -> None:
    cr = prepared(sample("production"), namespace=namespace)
    name = cr["metadata"]["name"]
    # A short resync so the minute covers several full resyncs, which must not write either.
    with running_operator(
        log_dir=tmp_path,
        lease_namespace=lease_namespace,
        name="steady",
        kubeconfig=kube_cluster.operator_kubeconfig,
        resync_seconds=15,
    ) as operator:
        # Clusters of earlier tests in namespaces still being deleted would keep it busy.
        wait_for(
            lambda: not unsettled_neighbours(kube, namespace=namespace),
            timeout=CHANGE_TIMEOUT,
            what="clusters in other namespaces to be Ready or gone",
            diagnostics=lambda: f"still busy: {unsettled_neighbours(kube, namespace=namespace)}",
        )
        create_cluster(kube, cr)
        wait_ready(kube, name, namespace=namespace, operator=operator)
        ready = wait_for(
            lambda: settled(kube, name, namespace=namespace),
            timeout=CHANGE_TIMEOUT,
            what="the HPAs to reach their minimum and the status to report it",
            diagnostics=lambda: operator.report(""),
        )
        mark = audit.mark()
        deadline = time.monotonic() + STEADY_SECONDS
        while time.monotonic() < deadline:
            writes = writes_by(audit.writes_since(mark), user=OPERATOR_USER)
            assert writes == [], operator.report(
                f"writes at steady state:\n{describe(writes)}\n"
                f"status changes since Ready: {status_changes(kube, ready)}"
            )
            time.sleep(1)  # the observation window itself, not a synchronisation
        assert operator.running(), operator.report("the operator died during the minute")
