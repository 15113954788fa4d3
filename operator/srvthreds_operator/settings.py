"""The operator process's settings, and the one place that tunes kopf's own settings."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Sequence

import kopf

MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=srvthreds-operator"

CHILD_RESOURCES: tuple[tuple[str, str], ...] = (
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("policy", "poddisruptionbudgets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("networking.k8s.io", "networkpolicies"),
    ("batch", "cronjobs"),
)
"""(group, plural) of the children whose events trigger the owning cluster's reconcile.

ConfigMaps and Secrets are watched separately and unfiltered: users' referenced objects carry
no label of ours, and a change to them must roll the pods that use them.
"""


def _default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _default_lease_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    return os.environ.get("POD_NAMESPACE", "default")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """Everything `srvthreds-operator run` can be told; defaults suit an in-cluster Deployment."""

    namespaces: Sequence[str] = ()
    """Namespaces to watch; empty means cluster-wide."""
    liveness_port: int = 8080
    """Port of /healthz; 0 disables it (two local processes in tests)."""
    metrics_port: int = 9090
    """Port of /metrics; 0 disables it."""
    leader_election: bool = True
    lease_namespace: str = dataclasses.field(default_factory=_default_lease_namespace)
    lease_name: str = "srvthreds-operator"
    lease_seconds: int = 30
    renew_seconds: float = 10.0
    identity: str = dataclasses.field(default_factory=_default_identity)
    resync_seconds: float = 90.0
    """Full resync of every cluster (level-based safety net; 60-120 s)."""
    retry_base_seconds: float = 1.0
    """Ceiling of the delay before the first retry of a failed pass (doubles per failure)."""
    retry_max_seconds: float = 300.0
    """Cap of the retry delay ceiling."""
    watch_stale_seconds: float = 300.0
    """/healthz fails when a watched kind shows no event or bookmark for this long."""
    log_format: str = "json"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.resync_seconds <= 0:
            raise ValueError(f"--resync-seconds must be positive, got {self.resync_seconds}")
        if self.retry_base_seconds <= 0 or self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                "--retry-base-seconds must be positive and at most --retry-max-seconds, got"
                f" {self.retry_base_seconds} and {self.retry_max_seconds}"
            )
        if self.log_format not in ("json", "text"):
            raise ValueError(f"--log-format must be json or text, got {self.log_format!r}")
        if self.renew_seconds >= self.lease_seconds:
            raise ValueError("the lease renewal interval must be shorter than the lease")


def tune_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings chosen against the pitfalls in operator-design.md section 2."""
    # Our own Lease decides who acts; kopf's peering would need its own CRD.
    settings.peering.standalone = True
    # Handler log lines become k8s Events only for warnings and errors (no Event noise).
    settings.posting.level = logging.WARNING
    # Stalled watches: reconnect when no event or bookmark arrives, with a hard backstop.
    settings.watching.inactivity_timeout = 70.0
    settings.watching.server_timeout = 270  # NB: the API server wants an integer
    settings.watching.client_timeout = 330.0
    settings.watching.connect_timeout = 30.0
    settings.networking.request_timeout = 60.0
    # Progress of any stateful handler goes to the declared status.kopf field, never annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    settings.execution.max_workers = 4
    for group, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group, plural] = MANAGED_BY_SELECTOR
