"""Cross-object consistency of each sample's children: selectors select, references resolve."""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_operator import render
from srvthreds_operator.specs import Manifest
from tests.srvthreds_operator.helpers import SAMPLE_NAMES, sample_cluster


def _templates(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for manifest in manifests:
        spec = manifest.get("spec", {})
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            found.append((manifest["metadata"]["name"], spec["template"]))
        elif manifest["kind"] == "CronJob":
            found.append((manifest["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]))
    return found


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.fixture(params=SAMPLE_NAMES)
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return render.render_manifests(sample_cluster(request.param))


def test_workload_selectors_match_their_pod_labels(manifests):
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            selector = manifest["spec"]["selector"]["matchLabels"]
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            assert _selects(selector, labels), manifest["metadata"]["name"]


def test_every_service_selects_some_pods(manifests):
    pod_labels = [template["metadata"]["labels"] for _, template in _templates(manifests)]
    for manifest in manifests:
        if manifest["kind"] == "Service":
            selector = manifest["spec"]["selector"]
            assert any(_selects(selector, labels) for labels in pod_labels), manifest["metadata"]


def test_every_network_policy_and_pdb_selects_some_pods(manifests):
    pod_labels = [template["metadata"]["labels"] for _, template in _templates(manifests)]
    for manifest in manifests:
        if manifest["kind"] in ("NetworkPolicy", "PodDisruptionBudget"):
            spec = manifest["spec"]
            selector = (spec.get("podSelector") or spec.get("selector"))["matchLabels"]
            assert any(_selects(selector, labels) for labels in pod_labels), manifest["metadata"]


def test_hpas_target_existing_workloads(manifests):
    workloads = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for manifest in manifests:
        if manifest["kind"] == "HorizontalPodAutoscaler":
            target = manifest["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in workloads


def test_secret_and_config_map_references_resolve_or_are_the_users(manifests):
    built = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    cluster = sample_cluster_of(manifests)
    users = {("Secret", name) for name in _user_secrets(cluster)} | {
        ("ConfigMap", name) for name in _user_config_maps(cluster)
    }
    for name, template in _templates(manifests):
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in built | users, (name, ref)
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in built, name
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in built | users, name
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in built, name
        assert ("ServiceAccount", pod["serviceAccountName"]) in built


def sample_cluster_of(manifests: list[Manifest]) -> dict[str, Any]:
    instance = manifests[0]["metadata"]["labels"]["app.kubernetes.io/instance"]
    by_instance = {sample_cluster(name)["metadata"]["name"]: name for name in SAMPLE_NAMES}
    return sample_cluster(by_instance[instance])


def _user_secrets(cluster: dict[str, Any]) -> list[str]:
    spec = cluster["spec"]
    names = [
        broker["external"]["secretRef"]["name"]
        for broker in spec.get("brokers", {}).values()
        if broker.get("mode") == "External"
    ]
    destination = spec.get("backup", {}).get("destination")
    if destination:
        names.append(destination["s3"]["credentialsSecretRef"]["name"])
    return names


def _user_config_maps(cluster: dict[str, Any]) -> list[str]:
    config = cluster["spec"].get("config", {})
    return [
        config[key]["configMapRef"]["name"] for key in ("patterns", "runConfig") if key in config
    ]
