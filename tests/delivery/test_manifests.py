"""kustomize manifests: render, CRD copies, restricted PSS, exact least-privilege RBAC."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.delivery.pss import restricted_violations
from tests.delivery.rbac_expectations import (
    CLUSTER_SCOPED,
    EXPECTED_CLUSTER_RULES,
    EXPECTED_LEASE_RULES,
    LEASE_ROLE,
    LEASES,
    flatten,
    wildcards,
)
from tests.delivery.support import (
    CHART_DIR,
    CRD_FILE,
    CRDS_DIR,
    MANIFESTS_BASE,
    MANIFESTS_NAMESPACED,
    REPO_ROOT,
    Manifest,
    kustomize,
    load_documents,
    of_kind,
    parse_operator_args,
    pod_specs,
)

CRD_COPIES = [CHART_DIR / "crds" / CRD_FILE, MANIFESTS_BASE / "crds" / CRD_FILE]


def _source_crd() -> str:
    source = CRDS_DIR / CRD_FILE
    assert source.is_file(), f"{source} is missing: run `make crds` (then hack/sync-crds.sh)"
    return source.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    _source_crd()
    return kustomize(MANIFESTS_BASE)


@pytest.mark.parametrize("copy", CRD_COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_crd_copy_equals_crds_folder(copy: Path) -> None:
    source = _source_crd()
    assert copy.is_file(), f"{copy} is missing: run hack/sync-crds.sh"
    assert copy.read_text(encoding="utf-8") == source, (
        f"{copy} drifted from crds/: run hack/sync-crds.sh"
    )


def test_base_renders_the_operator_install(base: list[Manifest]) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in base}
    assert kinds == {
        ("Namespace", "srvthreds-system"),
        ("CustomResourceDefinition", "srvthredsclusters.srvthreds.io"),
        ("ServiceAccount", "srvthreds-operator"),
        ("ClusterRole", "srvthreds-operator"),
        ("ClusterRoleBinding", "srvthreds-operator"),
        ("Role", LEASE_ROLE),
        ("RoleBinding", LEASE_ROLE),
        ("Deployment", "srvthreds-operator"),
        ("Service", "srvthreds-operator-metrics"),
    }
    for manifest in base:
        if manifest["kind"] not in {
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        }:
            assert manifest["metadata"]["namespace"] == "srvthreds-system", manifest["kind"]


def test_base_deployment_probes_and_ports(base: list[Manifest]) -> None:
    (deployment,) = of_kind(base, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    parsed = parse_operator_args(container["args"])
    assert parsed.command == "run"
    assert (parsed.liveness_port, parsed.metrics_port) == (8080, 9090)
    assert parsed.leader_election is True
    assert parsed.lease_namespace == "srvthreds-system"
    assert parsed.namespace is None, "the base watches every namespace"
    (service,) = of_kind(base, "Service")
    assert service["spec"]["ports"][0]["port"] == 9090


def test_base_meets_the_restricted_pod_security_standard(base: list[Manifest]) -> None:
    specs = list(pod_specs(base))
    assert specs, "no workload rendered"
    for where, spec in specs:
        assert restricted_violations(spec) == [], where


def test_restricted_check_catches_violations() -> None:
    spec = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "c", "securityContext": {"privileged": True}, "ports": [{"hostPort": 80}]}
        ],
    }
    problems = restricted_violations(spec)
    assert "hostNetwork is true" in problems
    assert any("hostPath" in p for p in problems)
    for fragment in (
        "privileged",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile",
        "drop lacks ALL",
        "readOnlyRootFilesystem",
        "hostPort",
    ):
        assert any(fragment in p for p in problems), fragment


def test_rbac_yaml_holds_the_cluster_role_and_the_lease_role() -> None:
    documents = load_documents(MANIFESTS_BASE / "rbac.yaml")
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("ClusterRole", "srvthreds-operator"),
        ("Role", LEASE_ROLE),
    ]


def test_cluster_role_grants_exactly_what_the_operator_manages() -> None:
    (role,) = of_kind(load_documents(MANIFESTS_BASE / "rbac.yaml"), "ClusterRole")
    assert wildcards(role["rules"]) == []
    granted = flatten(role["rules"])
    missing = {k: v - granted.get(k, frozenset()) for k, v in EXPECTED_CLUSTER_RULES.items()}
    extra = {k: v - EXPECTED_CLUSTER_RULES.get(k, frozenset()) for k, v in granted.items()}
    assert {k: sorted(v) for k, v in missing.items() if v} == {}
    assert {k: sorted(v) for k, v in extra.items() if v} == {}


def test_leases_are_granted_only_by_a_role_in_the_operators_namespace(
    base: list[Manifest],
) -> None:
    assert all(LEASES not in flatten(r["rules"]) for r in of_kind(base, "ClusterRole"))
    (role,) = of_kind(base, "Role")
    assert role["metadata"] == {
        **role["metadata"],
        "name": LEASE_ROLE,
        "namespace": "srvthreds-system",
    }
    assert wildcards(role["rules"]) == []
    assert flatten(role["rules"]) == EXPECTED_LEASE_RULES
    (binding,) = of_kind(base, "RoleBinding")
    assert binding["metadata"]["namespace"] == "srvthreds-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEASE_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "srvthreds-operator", "namespace": "srvthreds-system"}
    ]
    (deployment,) = of_kind(base, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert parse_operator_args(args).lease_namespace == "srvthreds-system"


def test_cluster_role_binding_binds_the_operator_service_account(base: list[Manifest]) -> None:
    (binding,) = of_kind(base, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "srvthreds-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "srvthreds-operator", "namespace": "srvthreds-system"}
    ]
    (deployment,) = of_kind(base, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "srvthreds-operator"


def test_namespaced_overlay_binds_rules_only_in_the_watched_namespace() -> None:
    _source_crd()
    rendered = kustomize(MANIFESTS_NAMESPACED)
    assert of_kind(rendered, "ClusterRoleBinding") != []
    assert all(
        b["roleRef"]["name"] != "srvthreds-operator"
        for b in of_kind(rendered, "ClusterRoleBinding")
    )
    watched = [
        b
        for b in of_kind(rendered, "RoleBinding")
        if b["metadata"]["namespace"] == "srvthreds-apps"
    ]
    assert [b["roleRef"]["name"] for b in watched] == ["srvthreds-operator"]
    (deployment,) = of_kind(rendered, "Deployment")
    assert (
        "--namespace=srvthreds-apps"
        in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    cluster_read = next(
        r
        for r in of_kind(rendered, "ClusterRole")
        if r["metadata"]["name"].endswith("cluster-read")
    )
    assert set(flatten(cluster_read["rules"])) == CLUSTER_SCOPED
    assert all(LEASES not in flatten(r["rules"]) for r in of_kind(rendered, "ClusterRole"))
    lease_bindings = [
        b for b in of_kind(rendered, "RoleBinding") if b["metadata"]["name"] == LEASE_ROLE
    ]
    assert [(b["metadata"]["namespace"], b["roleRef"]["kind"]) for b in lease_bindings] == [
        ("srvthreds-system", "Role")
    ]
