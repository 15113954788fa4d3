"""Server-side dry runs of the chart, manifests and CRD, and real PodSecurity admission."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import yaml

from tests.delivery.support import (
    CHART_DIR,
    CRD_FILE,
    CRDS_DIR,
    MANIFESTS_BASE,
    Manifest,
    find_helm,
    kustomize,
    of_kind,
    parse_stream,
    run_tool,
)
from tests.localcluster.session import KubeCluster, unique_namespace

pytestmark = pytest.mark.integration

CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
})  # fmt: skip


@pytest.fixture
def restricted_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace that enforces the restricted Pod Security Standard."""
    name = unique_namespace("delivery")
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl(
        "label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted"
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _dry_run(cluster: KubeCluster, manifests: list[Manifest]) -> str:
    """Server-side dry-run apply; returns stderr (warnings); a refusal fails the test."""
    stream = yaml.safe_dump_all(manifests)
    result = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=delivery-tests",
        "--dry-run=server", "-f", "-", input=stream, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"the API server refused the manifests:\n{result.stderr}"
    return result.stderr


def _into_namespace(manifests: list[Manifest], namespace: str) -> list[Manifest]:
    moved = [copy.deepcopy(m) for m in manifests if m["kind"] != "Namespace"]
    for manifest in moved:
        if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
            manifest["metadata"]["namespace"] = namespace
        for subject in manifest.get("subjects", []):
            subject["namespace"] = namespace
    return moved


def _pod_from(deployment: Manifest, namespace: str) -> Manifest:
    """The Deployment's pod, for the PodSecurity admission (which enforces on pods only)."""
    template = deployment["spec"]["template"]
    # A dry run creates no ServiceAccount, and admission would refuse the pod for lacking it.
    spec = {k: v for k, v in template["spec"].items() if k != "serviceAccountName"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pss-probe",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    }


def test_crd_is_accepted_by_the_api_server(kube_cluster: KubeCluster) -> None:
    source = CRDS_DIR / CRD_FILE
    assert source.is_file(), f"{source} is missing: run `make crds`"
    _dry_run(kube_cluster, [yaml.safe_load(source.read_text(encoding="utf-8"))])


def test_chart_is_accepted_and_its_pod_is_restricted(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    text = run_tool(
        [str(find_helm()), "template", "srvthreds-operator", str(CHART_DIR),
         "--namespace", restricted_namespace, "--set", "replicaCount=2"],
        what="helm template",
    )  # fmt: skip
    rendered = parse_stream(text, source="helm template")
    warnings = _dry_run(kube_cluster, rendered)
    assert "PodSecurity" not in warnings, warnings
    (deployment,) = of_kind(rendered, "Deployment")
    pod_warnings = _dry_run(kube_cluster, [_pod_from(deployment, restricted_namespace)])
    assert "PodSecurity" not in pod_warnings, pod_warnings


def test_kustomize_base_is_accepted_and_its_pod_is_restricted(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    rendered = _into_namespace(kustomize(MANIFESTS_BASE), restricted_namespace)
    warnings = _dry_run(kube_cluster, rendered)
    assert "PodSecurity" not in warnings, warnings
    (deployment,) = of_kind(rendered, "Deployment")
    _dry_run(kube_cluster, [_pod_from(deployment, restricted_namespace)])


def test_restricted_namespace_really_refuses_a_privileged_pod(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": restricted_namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr
