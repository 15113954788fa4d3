"""Hardening on a real API server: retries with back-off, the name limit, the Lease's Role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator_helpers import (
    CHANGE_TIMEOUT,
    OPERATOR_USER,
    Manifest,
    OperatorEnv,
    apply,
    condition,
    create_cluster,
    delete_clusters,
    get_cluster,
    get_object,
    operator_environment,
    prepared,
    sample,
    wait_for,
    wait_ready,
)
from tests.localcluster.session import KubeCluster

pytestmark = pytest.mark.integration

RETRY_MAX_SECONDS = 2
# Long enough that only the retries (and child events) can drive passes during a test.
RESYNC_SECONDS = 900
FAILURES_METRIC = "srvthreds_operator_reconcile_consecutive_failures"


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    with operator_environment(
        kube_cluster,
        log_dir=tmp_path_factory.mktemp("operator-hardening"),
        name="hardening",
        resync_seconds=RESYNC_SECONDS,
        extra_args=("--retry-base-seconds", "0.5", "--retry-max-seconds", str(RETRY_MAX_SECONDS)),
    ) as shared:
        yield shared


@pytest.fixture
def ns(env: OperatorEnv, namespace: str) -> Iterator[str]:
    yield namespace
    delete_clusters(env.kube, namespace=namespace)


def no_services_quota(namespace: str) -> Manifest:
    """A quota that lets nobody create a Service: every pass's apply of one is refused."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services", "namespace": namespace},
        "spec": {"hard": {"services": "0"}},
    }


def status_of(env: OperatorEnv, name: str, *, namespace: str) -> dict[str, Any]:
    cr = get_cluster(env.kube, name, namespace=namespace)
    return dict((cr or {}).get("status") or {})


def failure_series(env: OperatorEnv, name: str, *, namespace: str) -> float | None:
    """The operator's consecutive-failures gauge of one cluster, None when it has no series."""
    labels = {f'cluster="{name}"', f'namespace="{namespace}"'}
    for line in env.operator.metrics().splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(FAILURES_METRIC + "{") and labels <= set(
            series[len(FAILURES_METRIC) + 1 : -1].split(",")
        ):
            return float(value)
    return None


def test_a_pass_refused_by_a_quota_is_retried_and_recovers_when_the_quota_goes(
    env: OperatorEnv, ns: str
) -> None:
    apply(env.kube, [no_services_quota(ns)])
    cr = prepared(sample("minimal"), namespace=ns)
    name = cr["metadata"]["name"]
    create_cluster(env.kube, cr)

    def retried_several_times() -> dict[str, Any] | None:
        status = status_of(env, name, namespace=ns)
        return status if (status.get("retries") or 0) >= 4 else None

    status = wait_for(
        retried_several_times,
        timeout=CHANGE_TIMEOUT,
        what="status.retries to reach 4 while a quota refuses every Service",
        diagnostics=lambda: env.operator.report(str(status_of(env, name, namespace=ns))),
        abort=env.operator.death,
    )
    assert "quota" in status["lastError"], status["lastError"]
    assert status["phase"] == "Degraded"
    reconciled = condition({"status": status}, "ReconcileSucceeded")
    assert reconciled is not None
    assert (reconciled["status"], reconciled["reason"]) == ("False", "ApplyFailed")
    series = failure_series(env, name, namespace=ns)
    assert series is not None, env.operator.metrics()
    assert series >= 4

    env.kube("delete", "resourcequota", "no-services", "-n", ns)
    ready = wait_ready(env.kube, name, namespace=ns, operator=env.operator)
    assert "retries" not in ready["status"]
    assert "lastError" not in ready["status"]
    assert failure_series(env, name, namespace=ns) is None


def can_i(env: OperatorEnv, verb: str, *, namespace: str) -> bool:
    """Whether the operator's user may `verb` Leases in `namespace` (the API server decides)."""
    result = env.kube(
        "auth", "can-i", verb, "leases.coordination.k8s.io", "-n", namespace,
        "--as", OPERATOR_USER, check=False,
    )  # fmt: skip
    return result.stdout.strip() == "yes"


def test_the_operator_holds_its_lease_and_may_write_leases_nowhere_else(env: OperatorEnv) -> None:
    def holder() -> str | None:
        lease = get_object(
            env.kube, "leases.coordination.k8s.io", "srvthreds-operator",
            namespace=env.lease_namespace,
        )  # fmt: skip
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    assert wait_for(
        holder, timeout=60, what="the operator to hold its Lease", abort=env.operator.death
    )
    assert can_i(env, "update", namespace=env.lease_namespace)
    for namespace in ("kube-node-lease", "kube-system"):
        for verb in ("create", "update", "patch", "delete"):
            assert not can_i(env, verb, namespace=namespace), f"{verb} leases in {namespace}"
