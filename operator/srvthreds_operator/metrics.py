"""Every Prometheus metric of the operator, defined once, named srvthreds_operator_<noun>_<unit>."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "srvthreds_operator_reconciles_total",
    "Reconcile passes by how they ended (applied, paused, invalid, error, crashed).",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "srvthreds_operator_reconcile_duration_seconds",
    "Wall time of one reconcile pass.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "srvthreds_operator_reconcile_errors_total",
    "Failed reconcile passes by the reason of their error (ApplyFailed, ReadFailed, ApiError,"
    " Crashed); the message is in the cluster's status.lastError.",
    ["reason"],
)
RECONCILE_RETRIES = Counter(
    "srvthreds_operator_reconcile_retries_total",
    "Retries scheduled with back-off after failed reconcile passes.",
)
FAILING_PASSES = Gauge(
    "srvthreds_operator_reconcile_consecutive_failures",
    "Failed passes in a row of each cluster whose last pass failed (status.retries).",
    ["namespace", "cluster"],
)
CLUSTERS = Gauge(
    "srvthreds_operator_clusters",
    "SrvThredsClusters this operator manages, by phase.",
    ["phase"],
)
WATCH_STALENESS = Gauge(
    "srvthreds_operator_watch_staleness_seconds",
    "Seconds since the last event or bookmark on each watched kind.",
    ["kind"],
)
API_WRITES = Counter(
    "srvthreds_operator_api_writes_total",
    "Write requests sent to the API server, by kind and verb.",
    ["kind", "verb"],
)
LEADER = Gauge(
    "srvthreds_operator_leader",
    "1 while this replica holds the leader Lease (or runs without election), else 0.",
)

PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Paused", "Hibernated", "Failed")


def record_write(kind: str, verb: str) -> None:
    """The Kube adapter's write hook."""
    API_WRITES.labels(kind=kind, verb=verb).inc()


def publish_phases(phases: Mapping[Any, str]) -> None:
    """Set the per-phase gauge from the current phase of every known cluster."""
    for phase in PHASES:
        CLUSTERS.labels(phase=phase).set(sum(1 for p in phases.values() if p == phase))


def publish_failures(*, namespace: str, cluster: str, failures: int) -> None:
    """Set a cluster's consecutive-failure gauge; a cluster with none has no series at all."""
    if failures:
        FAILING_PASSES.labels(namespace=namespace, cluster=cluster).set(failures)
        return
    with contextlib.suppress(KeyError):
        FAILING_PASSES.remove(namespace, cluster)


def publish_staleness(staleness: Mapping[str, float]) -> None:
    """Set the staleness gauge, called right before each scrape."""
    for kind, seconds in staleness.items():
        WATCH_STALENESS.labels(kind=kind).set(seconds)
