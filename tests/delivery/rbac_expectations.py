"""The operator's RBAC as the design states it: (API group, resource) -> verbs, nothing more."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MANAGE = frozenset({"get", "list", "watch", "create", "patch", "update", "delete"})
READ = frozenset({"get", "list", "watch"})

EXPECTED_CLUSTER_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("srvthreds.io", "srvthredsclusters"): frozenset({"get", "list", "watch", "patch", "update"}),
    ("srvthreds.io", "srvthredsclusters/status"): frozenset({"get", "patch", "update"}),
    ("srvthreds.io", "srvthredsclusters/scale"): frozenset({"get"}),
    ("apps", "deployments"): MANAGE,
    ("apps", "statefulsets"): MANAGE,
    ("", "services"): MANAGE,
    ("", "configmaps"): MANAGE,
    ("", "secrets"): MANAGE,
    ("", "serviceaccounts"): MANAGE,
    ("", "persistentvolumeclaims"): READ,
    ("", "pods"): READ,
    ("", "events"): frozenset({"create", "patch"}),
    ("events.k8s.io", "events"): frozenset({"create", "patch"}),
    ("autoscaling", "horizontalpodautoscalers"): MANAGE,
    ("policy", "poddisruptionbudgets"): MANAGE,
    ("networking.k8s.io", "networkpolicies"): MANAGE,
    ("batch", "cronjobs"): MANAGE,
    ("batch", "jobs"): READ,
    ("monitoring.coreos.com", "servicemonitors"): MANAGE,
    ("monitoring.coreos.com", "prometheusrules"): MANAGE,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
    ("", "namespaces"): frozenset({"list", "watch"}),
}

CLUSTER_SCOPED = frozenset(
    {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}
)
LEASES = ("coordination.k8s.io", "leases")

EXPECTED_LEASE_RULES: dict[tuple[str, str], frozenset[str]] = {
    LEASES: frozenset({"get", "create", "update"}),
}
"""The leader-election Role, only in the operator's namespace: never in a ClusterRole, which
would let the operator rewrite every Lease (kube-node-lease's heartbeats included)."""
LEASE_ROLE = "srvthreds-operator-leader-election"


def flatten(rules: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], frozenset[str]]:
    """(group, resource) -> verbs granted by a list of PolicyRules (merging repeats)."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                granted.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return {key: frozenset(verbs) for key, verbs in granted.items()}


def wildcards(rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every '*' in a rule, and any escalation verb (bind, escalate, impersonate)."""
    found = []
    for index, rule in enumerate(rules):
        found += [
            f"rule {index}: '*' in {field}"
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs")
            if any("*" in value for value in rule.get(field, []))
        ]
        if escalating := set(rule.get("verbs", [])) & {"bind", "escalate", "impersonate"}:
            found.append(f"rule {index}: escalating verbs {sorted(escalating)}")
    return found
