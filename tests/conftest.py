"""Shared fixtures: the Kubernetes cluster of the integration tests and per-test namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.localcluster.session import KubeCluster, session_cluster, unique_namespace
from tests.localcluster.waiting import wait_until

pytest_plugins = ["tests.brokers.fixtures"]  # redis_server, rabbitmq_server, ferretdb_server, ...


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The local control plane (or, with USE_EXISTING_CLUSTER=true, the current kubeconfig's)."""
    with session_cluster() as cluster:
        yield cluster


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    name = unique_namespace(request.node.name)
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are refused until the controller-manager has made the namespace's `default` SA.
    wait_until(
        lambda: (
            kube_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0
        ),
        timeout=30,
        what=f"ServiceAccount default in namespace {name}",
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
