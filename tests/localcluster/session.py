"""The cluster handle tests get: local control plane or `USE_EXISTING_CLUSTER`, same interface."""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.localcluster.audit import AuditEvent, read_audit_events, write_requests
from tests.localcluster.cluster import OPERATOR_USER, LocalCluster
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.layout import existing_kubeconfig, use_existing_cluster
from tests.localcluster.rbac import MANIFESTS_DIR, grant_operator_rbac


@dataclass(frozen=True)
class KubeCluster:
    """What a test needs to talk to the cluster under test."""

    kubeconfig: Path
    operator_kubeconfig: Path
    audit_log: Path | None
    is_local: bool

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,  # noqa: A002
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as the cluster admin; `check` raises KubectlError on a non-zero exit."""
        return Kubectl.for_kubeconfig(self.kubeconfig)(
            *args, check=check, input=input, timeout=timeout
        )

    def operator_kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,  # noqa: A002
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as the least-privilege user `srvthreds-operator`."""
        return Kubectl.for_kubeconfig(self.operator_kubeconfig)(*args, check=check, input=input)

    def grant_operator_rbac(self, *, manifests_dir: Path = MANIFESTS_DIR) -> list[str]:
        """Binds the roles of `manifests/` to the operator's user (local clusters only)."""
        return grant_operator_rbac(
            Kubectl.for_kubeconfig(self.kubeconfig), user=OPERATOR_USER, manifests_dir=manifests_dir
        )

    def write_requests(
        self, *, user: str = OPERATOR_USER, since: dt.datetime | None = None
    ) -> list[AuditEvent]:
        """The write requests `user` made since `since`, from the audit log."""
        if self.audit_log is None:
            raise RuntimeError("no audit log: the cluster is not the local control plane")
        if not self.audit_log.exists():
            return []
        return write_requests(read_audit_events(self.audit_log), user=user, since=since)


@contextmanager
def session_cluster() -> Iterator[KubeCluster]:
    """The local control plane for a test session (or the current kubeconfig's cluster).

    A control plane that was already up (`make cluster-up`) is reused and left running.
    """
    if use_existing_cluster():
        kubeconfig = existing_kubeconfig()
        yield KubeCluster(kubeconfig, kubeconfig, audit_log=None, is_local=False)
        return
    cluster = LocalCluster(tie_to_parent=True)
    result = cluster.up()
    try:
        yield KubeCluster(
            kubeconfig=cluster.layout.kubeconfig,
            operator_kubeconfig=cluster.layout.operator_kubeconfig,
            audit_log=cluster.layout.audit_log,
            is_local=True,
        )
    finally:
        if not result.reused:
            cluster.down()


def unique_namespace(hint: str) -> str:
    """A DNS-1123 namespace name from a test name, with a random suffix."""
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in hint.lower()).strip("-")
    return f"t-{cleaned[:40].strip('-')}-{secrets.token_hex(3)}"
