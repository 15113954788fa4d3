"""The SrvThredsCluster CRD on a real API server: it installs, refuses bad specs, takes samples."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.integration.operator_helpers import (
    CR_RESOURCE,
    Manifest,
    admin_kubectl,
    apply,
    get_cluster,
    install_crds,
    load_samples,
    prepared,
    prerequisites,
    sample,
    sample_stems,
)
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.session import KubeCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kube(kube_cluster: KubeCluster) -> Kubectl:
    kubectl = admin_kubectl(kube_cluster)
    install_crds(kubectl)
    return kubectl


@pytest.fixture
def created(kube: Kubectl) -> Iterator[list[Manifest]]:
    """Clusters a test created; deleted afterwards so no later operator sees them."""
    made: list[Manifest] = []
    yield made
    for cr in made:
        meta = cr["metadata"]
        kube("delete", CR_RESOURCE, meta["name"], "-n", meta["namespace"], "--ignore-not-found",
             check=False)  # fmt: skip


def with_value(cr: Mapping[str, Any], path: str, value: Any) -> Manifest:
    """A copy of `cr` with the dotted spec path set to `value` (intermediate maps created)."""
    body = copy.deepcopy(dict(cr))
    node = body["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


# (dotted spec path, value, what the error must name)
INVALID = [
    pytest.param("engine.replicas", "two", "spec.engine.replicas", id="wrong-type"),
    pytest.param("engine.replicas", -1, "spec.engine.replicas", id="negative-replicas"),
    pytest.param("image.pullPolicy", "Sometimes", "spec.image.pullPolicy", id="enum"),
    pytest.param("sessionAgent.service.port", 70000, "spec.sessionAgent.service.port", id="max"),
    pytest.param("config.logLevel", "loud", "spec.config.logLevel", id="log-level-enum"),
    pytest.param("version", "latest", "spec.version", id="version-pattern"),
    pytest.param(
        "engine.autoscaling",
        {"enabled": True, "minReplicas": 5, "maxReplicas": 2, "targetCPUUtilizationPercentage": 70},
        "spec.engine.autoscaling.minReplicas",
        id="autoscaling-min-above-max",
    ),
    pytest.param(
        "brokers.redis",
        {"mode": "External"},
        "spec.brokers.redis.external",
        id="external-mode-without-external",
    ),
    pytest.param(
        "backup",
        {"enabled": True, "schedule": "0 2 * * *"},
        "spec.backup",
        id="backup-without-destination",
    ),
    pytest.param("backup.schedule", "every night", "spec.backup.schedule", id="bad-schedule"),
    pytest.param("enigne", {"replicas": 1}, "spec.enigne", id="unknown-field"),
]


def test_the_crd_is_established_with_its_names_and_scale_subresource(kube: Kubectl) -> None:
    crd = install_crds(kube)
    names = crd["spec"]["names"]
    assert names["kind"] == "SrvThredsCluster"
    assert "stc" in names["shortNames"]
    assert "srvthreds" in names["categories"]
    assert crd["spec"]["scope"] == "Namespaced"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
    scale = served["v1alpha1"]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.engine.replicas",
        "statusReplicasPath": ".status.components.engine.replicas",
        "labelSelectorPath": ".status.engineSelector",
    }
    assert "status" in served["v1alpha1"]["subresources"]


@pytest.mark.parametrize(("path", "value", "field"), INVALID)
def test_an_invalid_cluster_is_refused_with_a_message_naming_the_field(
    kube: Kubectl, namespace: str, path: str, value: Any, field: str
) -> None:
    cr = with_value(prepared(sample("minimal"), namespace=namespace, name="invalid"), path, value)

    result = apply(kube, [cr], check=False)

    assert result.returncode != 0, f"the API server accepted spec.{path}={value!r}"
    assert field in result.stderr, f"the error does not name {field}: {result.stderr}"
    assert get_cluster(kube, "invalid", namespace=namespace) is None


def test_a_managed_broker_storage_size_cannot_change(
    kube: Kubectl, namespace: str, created: list[Manifest]
) -> None:
    cr = prepared(sample("minimal"), namespace=namespace, name="immutable")
    cr = with_value(
        cr, "brokers.redis", {"mode": "Managed", "managed": {"storage": {"size": "1Gi"}}}
    )
    apply(kube, [cr])
    created.append(cr)

    grown = with_value(cr, "brokers.redis.managed.storage.size", "2Gi")
    result = apply(kube, [grown], check=False)

    assert result.returncode != 0, "the API server accepted a storage size change"
    assert "spec.brokers.redis.managed.storage.size" in result.stderr, result.stderr
    assert "immutable" in result.stderr, result.stderr
    live = get_cluster(kube, "immutable", namespace=namespace)
    assert live is not None
    assert live["spec"]["brokers"]["redis"]["managed"]["storage"]["size"] == "1Gi"


@pytest.mark.parametrize("stem", sample_stems())
def test_every_sample_is_accepted(
    kube: Kubectl, namespace: str, created: list[Manifest], stem: str
) -> None:
    cr = prepared(load_samples()[stem], namespace=namespace)

    apply(kube, [*prerequisites(cr, namespace=namespace), cr])
    created.append(cr)

    live = get_cluster(kube, cr["metadata"]["name"], namespace=namespace)
    assert live is not None, f"sample {stem} was not stored"
    assert live["metadata"]["generation"] == 1


NAME_LIMIT = 37
"""The longest cluster name whose children all fit their limits (the backup CronJob binds)."""


def test_a_name_one_over_the_limit_is_refused_with_the_limit_and_why(
    kube: Kubectl, namespace: str, created: list[Manifest]
) -> None:
    longest = prepared(sample("minimal"), namespace=namespace, name="n" * NAME_LIMIT)
    apply(kube, [longest])
    created.append(longest)
    too_long = prepared(sample("minimal"), namespace=namespace, name="n" * (NAME_LIMIT + 1))

    result = apply(kube, [too_long], check=False)

    assert result.returncode != 0, "the API server accepted a 38-character cluster name"
    assert f"metadata.name must be at most {NAME_LIMIT} characters" in result.stderr, result.stderr
    assert "'<name>-backup-mongodb' must fit 52 characters" in result.stderr, result.stderr
    assert get_cluster(kube, too_long["metadata"]["name"], namespace=namespace) is None
