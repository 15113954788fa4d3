"""build_children as a whole: names, order, labels, owners, security, hashes, hibernate."""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_operator import specs
from srvthreds_operator.model import CONFIG_HASH_ANNOTATION, parse_cluster
from srvthreds_operator.specs import ReconcileInputs, build_children
from tests.srvthreds_operator.helpers import (
    children,
    cluster,
    find,
    inputs,
    names,
    pod_specs,
    sample_cluster,
)

FULL = {
    "engine": {"autoscaling": {"enabled": True}},
    "backup": {
        "enabled": True,
        "schedule": "0 2 * * *",
        "destination": {"s3": {"bucket": "bkt", "credentialsSecretRef": {"name": "s3"}}},
    },
    "networkPolicy": {"ingressFrom": [{"namespaceSelector": {}}]},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
}


def test_the_default_cluster_has_every_contract_child_in_apply_order():
    built = children()
    assert [(m["kind"], m["metadata"]["name"]) for m in built] == [
        ("ServiceAccount", "demo-srvthreds"),
        ("ConfigMap", "demo-config"),
        ("ConfigMap", "demo-redis-config"),
        ("Secret", "demo-redis-credentials"),
        ("Secret", "demo-mongodb-credentials"),
        ("Secret", "demo-rabbitmq-credentials"),
        ("Secret", "demo-connections"),
        ("NetworkPolicy", "demo-default-deny"),
        ("NetworkPolicy", "demo-allow-dns"),
        ("NetworkPolicy", "demo-allow-apps-to-brokers"),
        ("NetworkPolicy", "demo-allow-redis"),
        ("NetworkPolicy", "demo-allow-mongodb"),
        ("NetworkPolicy", "demo-allow-rabbitmq"),
        ("NetworkPolicy", "demo-allow-prometheus"),
        ("Service", "demo-redis-headless"),
        ("Service", "demo-redis"),
        ("StatefulSet", "demo-redis"),
        ("Service", "demo-mongodb-headless"),
        ("Service", "demo-mongodb"),
        ("StatefulSet", "demo-mongodb"),
        ("Service", "demo-rabbitmq-headless"),
        ("Service", "demo-rabbitmq"),
        ("StatefulSet", "demo-rabbitmq"),
        ("Service", "demo-session-agent-headless"),
        ("Service", "demo-session-agent"),
        ("Deployment", "demo-persistence-agent"),
        ("Deployment", "demo-engine"),
        ("StatefulSet", "demo-session-agent"),
        ("PodDisruptionBudget", "demo-engine"),
        ("PodDisruptionBudget", "demo-session-agent"),
    ]


def test_every_child_has_the_standard_labels_namespace_and_owner():
    for manifest in children(FULL):
        meta = manifest["metadata"]
        assert meta["namespace"] == "ns"
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "srvthreds"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/part-of"] == "srvthreds"
        assert labels["app.kubernetes.io/managed-by"] == "srvthreds-operator"
        assert labels["app.kubernetes.io/version"] == "1.0.0"
        assert labels["app.kubernetes.io/component"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "srvthreds.io/v1alpha1",
                "kind": "SrvThredsCluster",
                "name": "demo",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_without_a_uid_children_carry_no_owner_reference():
    built = build_children(cluster(), inputs=inputs(owner_uid=None))
    assert all("ownerReferences" not in m["metadata"] for m in built)


def test_every_kind_built_can_be_pruned():
    prunable = {kind for _, kind in specs.prune_kinds()}
    assert {m["kind"] for m in children(FULL)} <= prunable
    for api_version, kind in specs.prune_kinds():
        assert api_version
        assert kind


@pytest.mark.parametrize("spec", [{}, FULL])
def test_every_pod_meets_the_restricted_pod_security_standard(spec):
    checked = 0
    for name, pod in pod_specs(children(spec)):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["runAsNonRoot"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "resources" in container, where
        volumes = pod.get("volumes", [])
        assert all("hostPath" not in volume for volume in volumes), name
        checked += 1
    assert checked >= 6


def test_every_pod_carries_a_config_hash():
    for manifest in children(FULL):
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            annotations = manifest["spec"]["template"]["metadata"]["annotations"]
            assert len(annotations[CONFIG_HASH_ANNOTATION]) == 32


def _engine_hash(spec: dict[str, Any] | None = None, **overrides: Any) -> str:
    built = children(spec, **overrides)
    template = find(built, "Deployment", "demo-engine")["spec"]["template"]
    return str(template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])


def test_a_config_change_changes_the_app_config_hash():
    base = _engine_hash()
    assert _engine_hash({"config": {"logLevel": "debug"}}) != base
    assert _engine_hash() == base


def test_a_referenced_config_map_change_rolls_the_apps():
    spec = {"config": {"patterns": {"configMapRef": {"name": "pats"}}}}
    before = _engine_hash(spec, content_hashes={"ConfigMap/pats": "aaa"})
    after = _engine_hash(spec, content_hashes={"ConfigMap/pats": "bbb"})
    assert before != after


def test_new_credentials_roll_the_apps_and_the_broker():
    credentials = dict(inputs().credentials)
    credentials["redis"] = {"password": "another"}
    assert _engine_hash(credentials=credentials) != _engine_hash()


def test_the_build_is_deterministic():
    assert children(FULL) == children(FULL)


def test_missing_credentials_of_a_managed_broker_are_an_error():
    with pytest.raises(specs.MissingCredentialsError, match="redis"):
        build_children(cluster(), inputs=ReconcileInputs(owner_uid="u"))


def test_hibernate_scales_apps_to_zero_keeps_brokers_and_drops_hpa_and_pdb():
    built = children(FULL | {"hibernate": True})
    for kind, name in (
        ("Deployment", "demo-engine"),
        ("Deployment", "demo-persistence-agent"),
        ("StatefulSet", "demo-session-agent"),
    ):
        assert find(built, kind, name)["spec"]["replicas"] == 0
    assert names(built, "HorizontalPodAutoscaler") == []
    assert names(built, "PodDisruptionBudget") == []
    assert find(built, "StatefulSet", "demo-mongodb")["spec"]["replicas"] == 1
    assert "demo-redis" in names(built, "StatefulSet")


def test_the_production_sample_builds_every_kind():
    parsed = parse_cluster(sample_cluster("production"))
    built = build_children(parsed, inputs=inputs())
    kinds = {m["kind"] for m in built}
    assert kinds == {kind for _, kind in specs.prune_kinds()}


def test_credentials_helpers():
    parsed = cluster(
        {"brokers": {"redis": {"mode": "External", "external": {"secretRef": {"name": "r"}}}}}
    )
    assert specs.credential_secret_names(parsed) == {
        "mongodb": "demo-mongodb-credentials",
        "rabbitmq": "demo-rabbitmq-credentials",
    }
    kept = {"username": "root", "password": "keep-me", "keyfile": "k"}
    complete = specs.complete_credentials(parsed, existing={"mongodb": kept, "rabbitmq": None})
    assert complete["mongodb"] == kept
    assert set(complete["rabbitmq"]) == {"username", "password"}
    assert "redis" not in complete
    first, second = specs.generate_credentials("redis"), specs.generate_credentials("redis")
    assert first["password"] != second["password"]
    assert len(first["password"]) >= 24


def test_referenced_objects_lists_what_the_pods_read():
    parsed = cluster(
        FULL
        | {
            "config": {
                "patterns": {"configMapRef": {"name": "pats"}},
                "runConfig": {"configMapRef": {"name": "run"}},
            },
            "brokers": {"redis": {"mode": "External", "external": {"secretRef": {"name": "r"}}}},
        }
    )
    assert specs.referenced_objects(parsed) == [
        ("ConfigMap", "pats"),
        ("ConfigMap", "run"),
        ("Secret", "r"),
        ("Secret", "s3"),
    ]
