"""The operator benchmark on the local control plane: time to Ready, fleet, RSS, steady writes."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.operator_helpers import (
    OPERATOR_USER,
    AuditLog,
    Manifest,
    OperatorProcess,
    admin_kubectl,
    apply,
    delete_clusters,
    ensure_namespace,
    get_cluster,
    is_ready,
    list_objects,
    prepare_cluster_for_operator,
    prepared,
    prerequisites,
    render,
    running_operator,
    sample,
    served_resources,
    wait_for,
    workload_settled,
)
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.session import KubeCluster, session_cluster

FLEET_SIZE = 50
STEADY_SECONDS = 60.0
FLEET_TIMEOUT = 1200.0


@dataclass
class Figures:
    """What one benchmark run measured."""

    floor_seconds: float = 0.0
    operator_seconds: float = 0.0
    fleet_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    steady_writes_per_minute: float = 0.0
    steady_lease_writes_per_minute: float = 0.0
    child_count: int = 0


def timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def workloads_ready(kube: Kubectl, *, namespace: str) -> bool:
    items = list_objects(kube, ["deployments.apps", "statefulsets.apps"], namespace=namespace)
    return bool(items) and all(workload_settled(item) for item in items)


def without_owners(manifest: Mapping[str, Any]) -> Manifest:
    # Rendered children point at a cluster that does not exist here; the GC would delete them.
    body = dict(manifest)
    body["metadata"] = {k: v for k, v in manifest["metadata"].items() if k != "ownerReferences"}
    return body


def apply_prerequisites(kube: Kubectl, cr: Manifest, *, namespace: str) -> None:
    documents = prerequisites(cr, namespace=namespace)
    if documents:
        apply(kube, documents)


def measure_floor(kube: Kubectl, cr: Manifest, *, namespace: str) -> tuple[float, int]:
    """`kubectl apply --server-side` of the rendered children, until every workload is ready."""
    served = served_resources(kube)
    children = [without_owners(m) for m in render(cr) if m["kind"] in served]
    for child in children:
        child["metadata"]["namespace"] = namespace
    apply_prerequisites(kube, cr, namespace=namespace)

    def run() -> None:
        apply(kube, children, field_manager="bench-floor")
        wait_for(lambda: workloads_ready(kube, namespace=namespace), timeout=600,
                 what="the rendered workloads to be ready", interval=0.2)  # fmt: skip

    return timed(run), len(children)


def measure_operator(kube: Kubectl, cr: Manifest, *, operator: OperatorProcess) -> float:
    """`kubectl apply` of the cluster, until its status says Ready."""
    namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    apply_prerequisites(kube, cr, namespace=namespace)

    def run() -> None:
        apply(kube, [cr], field_manager="bench")
        wait_for(lambda: is_ready(get_cluster(kube, name, namespace=namespace)), timeout=600,
                 what=f"{name} to be Ready", interval=0.2,
                 diagnostics=lambda: operator.report(""))  # fmt: skip

    return timed(run)


def measure_fleet(kube: Kubectl, *, namespace: str, operator: OperatorProcess) -> float:
    """FLEET_SIZE minimal clusters applied in one request, until all are Ready."""
    base = sample("minimal")
    fleet = [prepared(base, namespace=namespace, name=f"bench-{i:02d}") for i in range(FLEET_SIZE)]
    apply_prerequisites(kube, fleet[0], namespace=namespace)

    def all_ready() -> bool:
        items = list_objects(kube, ["srvthredsclusters.srvthreds.io"], namespace=namespace)
        return len(items) == FLEET_SIZE and all(is_ready(item) for item in items)

    def run() -> None:
        apply(kube, fleet, field_manager="bench")
        wait_for(all_ready, timeout=FLEET_TIMEOUT, what=f"{FLEET_SIZE} clusters to be Ready",
                 interval=2.0, diagnostics=lambda: operator.report(""))  # fmt: skip

    return timed(run)


def measure_steady_writes(audit: AuditLog) -> tuple[float, float]:
    """Operator writes per minute over STEADY_SECONDS: (reconcile writes, Lease renewals)."""
    mark = audit.mark()
    time.sleep(STEADY_SECONDS)  # the observation window
    events = [e for e in audit.writes_since(mark) if e.user == OPERATOR_USER]
    leases = sum(1 for e in events if e.resource == "leases")
    scale = 60.0 / STEADY_SECONDS
    return (len(events) - leases) * scale, leases * scale


def run_all(cluster: KubeCluster, *, log_dir: Path) -> Figures:
    kube = admin_kubectl(cluster)
    figures = Figures()
    stamp = f"{os.getpid()}"
    lease_ns, floor_ns, single_ns, fleet_ns = (
        f"bench-{part}-{stamp}" for part in ("lease", "floor", "single", "fleet")
    )
    prepare_cluster_for_operator(kube, lease_namespace=lease_ns)
    for namespace in (floor_ns, single_ns, fleet_ns):
        ensure_namespace(kube, namespace)
    production = sample("production")
    try:
        figures.floor_seconds, figures.child_count = measure_floor(
            kube, prepared(production, namespace=floor_ns), namespace=floor_ns
        )
        with running_operator(
            log_dir=log_dir, lease_namespace=lease_ns, name="bench",
            kubeconfig=cluster.operator_kubeconfig,
        ) as operator:  # fmt: skip
            figures.operator_seconds = measure_operator(
                kube, prepared(production, namespace=single_ns), operator=operator
            )
            figures.fleet_seconds = measure_fleet(kube, namespace=fleet_ns, operator=operator)
            if cluster.audit_log is not None:
                steady = measure_steady_writes(AuditLog(cluster.audit_log))
                figures.steady_writes_per_minute = steady[0]
                figures.steady_lease_writes_per_minute = steady[1]
            figures.peak_rss_mib = operator.peak_rss_kib() / 1024
    finally:
        # Clusters first (and waited for), so no operator later meets them in a dying namespace.
        for namespace in (single_ns, fleet_ns):
            delete_clusters(kube, namespace=namespace)
        for namespace in (floor_ns, single_ns, fleet_ns, lease_ns):
            kube("delete", "namespace", namespace, "--wait=false", "--ignore-not-found",
                 check=False)  # fmt: skip
    return figures


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown(figures: Figures) -> str:
    return "\n".join([
        "## Operator",
        "",
        "On the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok).",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}. "
        "Command: `make bench` (this section alone: `python -m tests.bench operator`).",
        "",
        "| measurement | value |",
        "|---|---|",
        "| production sample: `kubectl apply` to Ready (operator) | "
        f"{figures.operator_seconds:.1f} s |",
        f"| same {figures.child_count} children: `kubectl apply --server-side` of `render` to "
        f"workloads ready (the floor) | {figures.floor_seconds:.1f} s |",
        f"| {FLEET_SIZE} minimal clusters applied at once, until all Ready | "
        f"{figures.fleet_seconds:.1f} s |",
        f"| operator peak RSS (VmHWM) after the {FLEET_SIZE} clusters | "
        f"{figures.peak_rss_mib:.0f} MiB |",
        f"| API writes per minute at steady state, {FLEET_SIZE + 1} clusters Ready (target 0) | "
        f"{figures.steady_writes_per_minute:.1f} |",
        f"| leader-election Lease renewals per minute (not counted above) | "
        f"{figures.steady_lease_writes_per_minute:.1f} |",
        "",
        f"Writes are counted in the API server's audit log by user `{OPERATOR_USER}` over "
        f"{STEADY_SECONDS:.0f} s; pods are made Ready by kwok, so times measure the control "
        "plane and the operator, not image pulls.",
        "",
    ])  # fmt: skip


def run_operator_benchmarks() -> str:
    """Runs every operator measurement on the local control plane; returns a Markdown section."""
    with session_cluster() as cluster, tempfile.TemporaryDirectory(prefix="opbench-") as logs:
        figures = run_all(cluster, log_dir=Path(logs))
    return markdown(figures)
