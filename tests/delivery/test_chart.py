"""The Helm chart: lint, every install mode, RBAC and CRD parity, values schema (needs helm)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.delivery.pss import restricted_violations
from tests.delivery.rbac_expectations import (
    CLUSTER_SCOPED,
    EXPECTED_CLUSTER_RULES,
    EXPECTED_LEASE_RULES,
    LEASES,
    flatten,
    wildcards,
)
from tests.delivery.support import (
    CHART_DIR,
    CRD_FILE,
    CRDS_DIR,
    MANIFESTS_BASE,
    Manifest,
    find_helm,
    helm_template,
    load_documents,
    of_kind,
    parse_operator_args,
    parse_stream,
    pod_specs,
    run_tool,
)

pytestmark = pytest.mark.integration


def _render(*sets: str) -> list[Manifest]:
    return parse_stream(helm_template(sets=list(sets)), source=f"helm template {' '.join(sets)}")


def test_chart_lints_strictly() -> None:
    output = run_tool([str(find_helm()), "lint", "--strict", str(CHART_DIR)], what="helm lint")
    assert "0 chart(s) failed" in output


def test_default_install_is_cluster_wide_with_the_manifests_rbac() -> None:
    rendered = _render()
    (role,) = of_kind(rendered, "ClusterRole")
    manifest_rbac = load_documents(MANIFESTS_BASE / "rbac.yaml")
    (manifest_role,) = of_kind(manifest_rbac, "ClusterRole")
    (manifest_lease_role,) = of_kind(manifest_rbac, "Role")
    assert wildcards(role["rules"]) == []
    assert flatten(role["rules"]) == flatten(manifest_role["rules"]) == EXPECTED_CLUSTER_RULES
    (binding,) = of_kind(rendered, "ClusterRoleBinding")
    (account,) = of_kind(rendered, "ServiceAccount")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    (lease_role,) = of_kind(rendered, "Role")
    assert lease_role["metadata"]["namespace"] == "srvthreds-system"
    assert flatten(lease_role["rules"]) == flatten(manifest_lease_role["rules"])
    assert flatten(lease_role["rules"]) == EXPECTED_LEASE_RULES
    (lease_binding,) = of_kind(rendered, "RoleBinding")
    assert lease_binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    assert lease_binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert of_kind(rendered, "PodDisruptionBudget") == []
    assert of_kind(rendered, "PodMonitor") == []


def test_chart_ships_the_generated_crd() -> None:
    source = CRDS_DIR / CRD_FILE
    assert source.is_file(), f"{source} is missing: run `make crds`"
    rendered = of_kind(_render(), "CustomResourceDefinition")
    assert rendered == [yaml.safe_load(source.read_text(encoding="utf-8"))]


def test_default_deployment_meets_restricted_pss_and_runs_the_operator() -> None:
    (deployment,) = of_kind(_render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    for where, spec in pod_specs([deployment]):
        assert restricted_violations(spec) == [], where
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    parsed = parse_operator_args(container["args"])
    assert parsed.command == "run"
    assert (parsed.liveness_port, parsed.metrics_port) == (8080, 9090)
    assert parsed.leader_election is True
    assert parsed.lease_namespace == "srvthreds-system"
    assert parsed.namespace is None
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_two_replicas_get_a_disruption_budget_and_spread() -> None:
    rendered = _render("replicaCount=2")
    (deployment,) = of_kind(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    (budget,) = of_kind(rendered, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_namespace_scoped_install_uses_roles() -> None:
    rendered = _render("watchNamespaces={team-a,team-b}")
    (cluster_role,) = of_kind(rendered, "ClusterRole")
    assert set(flatten(cluster_role["rules"])) == CLUSTER_SCOPED
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(rendered, "Role")
    }
    namespaced = {k: v for k, v in EXPECTED_CLUSTER_RULES.items() if k not in CLUSTER_SCOPED}
    for namespace in ("team-a", "team-b"):
        assert flatten(roles[namespace, "srvthreds-operator"]["rules"]) == namespaced
    lease_role = roles["srvthreds-system", "srvthreds-operator-leader-election"]
    assert flatten(lease_role["rules"]) == EXPECTED_LEASE_RULES
    assert all(LEASES not in flatten(r["rules"]) for r in of_kind(rendered, "ClusterRole"))
    bound = {
        (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in of_kind(rendered, "RoleBinding")
    }
    assert bound == {
        ("team-a", "srvthreds-operator"),
        ("team-b", "srvthreds-operator"),
        ("srvthreds-system", "srvthreds-operator-leader-election"),
    }
    (deployment,) = of_kind(rendered, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_leader_election_can_be_switched_off() -> None:
    rendered = _render("leaderElection.enabled=false")
    assert of_kind(rendered, "Role") == []
    assert of_kind(rendered, "RoleBinding") == []
    (deployment,) = of_kind(rendered, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert parse_operator_args(args).leader_election is False


def test_pod_monitor_is_opt_in_and_replaces_scrape_annotations() -> None:
    rendered = _render("metrics.podMonitor.enabled=true", "metrics.podMonitor.labels.release=kps")
    (monitor,) = of_kind(rendered, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (deployment,) = of_kind(rendered, "Deployment")
    assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "a" * 64
    (deployment,) = of_kind(_render(f"image.digest={digest}"), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/srvthreds/srvthreds-operator@{digest}"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "securityContext.allowPrivilegeEscalation=true",
            "/securityContext/allowPrivilegeEscalation",
        ),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("watchNamespaces={Not_A_Namespace}", "/watchNamespaces/0"),
        ("replicaCount=-1", "/replicaCount"),
        ("logFormat=xml", "/logFormat"),
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_refuses_unsafe_values(setting: str, message: str) -> None:
    argv = [str(find_helm()), "template", "x", str(CHART_DIR), "--set", setting]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode != 0, f"helm accepted {setting}"
    assert "schema" in result.stderr
    assert message in result.stderr, result.stderr
