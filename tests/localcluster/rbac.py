"""Grants the operator's user the rights the shipped manifests give its ServiceAccount."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.localcluster.kubectl import Kubectl
from tests.localcluster.layout import REPO_ROOT

# The base install (the overlays only re-shape it); samples/ holds no RBAC.
MANIFESTS_DIR = REPO_ROOT / "manifests" / "base"
ROLE_KINDS = frozenset({"ClusterRole", "Role"})
BINDING_KINDS = frozenset({"ClusterRoleBinding", "RoleBinding"})
LOCAL_SUFFIX = "-local-user"
LOCAL_LEASE_NAMESPACE = "default"
"""Where the operator keeps its Lease when run outside a pod without --lease-namespace."""


def load_manifests(folder: Path) -> list[dict[str, Any]]:
    """Every YAML document under `folder`, except the sample custom resources."""
    documents: list[dict[str, Any]] = []
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        if "samples" in path.relative_to(folder).parts:
            continue
        documents.extend(
            doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)
        )
    return documents


def user_bindings(documents: Iterable[dict[str, Any]], *, user: str) -> list[dict[str, Any]]:
    """Copies of the bindings that name a ServiceAccount, bound to `user` instead."""
    bindings = []
    for doc in documents:
        subjects = doc.get("subjects") or []
        if doc.get("kind") not in BINDING_KINDS:
            continue
        if not any(subject.get("kind") == "ServiceAccount" for subject in subjects):
            continue
        metadata = {"name": doc["metadata"]["name"] + LOCAL_SUFFIX}
        if doc["kind"] == "RoleBinding":
            metadata["namespace"] = doc["metadata"].get("namespace", "default")
        bindings.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": doc["kind"],
            "metadata": metadata,
            "roleRef": doc["roleRef"],
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })  # fmt: skip
    return bindings


def _grants_leases(role: dict[str, Any]) -> bool:
    return any("leases" in (rule.get("resources") or []) for rule in role.get("rules") or [])


def local_lease_copies(
    roles: Iterable[dict[str, Any]], bindings: Iterable[dict[str, Any]], *, namespace: str
) -> list[dict[str, Any]]:
    """The Lease Roles (only ever granted in the operator's namespace) and their user bindings,
    copied into `namespace`, where a locally run operator keeps its Lease."""
    lease_roles = {
        role["metadata"]["name"]
        for role in roles
        if role["kind"] == "Role" and _grants_leases(role)
    }
    copies = []
    for doc in [*roles, *bindings]:
        if doc["kind"] not in {"Role", "RoleBinding"}:
            continue
        named = doc["metadata"]["name"] if doc["kind"] == "Role" else doc["roleRef"]["name"]
        if named in lease_roles:
            copies.append({**doc, "metadata": {**doc["metadata"], "namespace": namespace}})
    return copies


def _ensure_namespaces(kubectl: Kubectl, documents: Iterable[dict[str, Any]]) -> None:
    namespaces = {
        doc["metadata"]["namespace"] for doc in documents if doc["metadata"].get("namespace")
    }
    for namespace in sorted(namespaces):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def grant_operator_rbac(
    kubectl: Kubectl, *, user: str, manifests_dir: Path = MANIFESTS_DIR
) -> list[str]:
    """Applies the manifests' roles and binds them to `user`; returns the binding names.

    An empty result means the manifests hold no binding yet (the caller decides the fallback).
    """
    documents = load_manifests(manifests_dir) if manifests_dir.is_dir() else []
    roles = [doc for doc in documents if doc.get("kind") in ROLE_KINDS]
    bindings = user_bindings(documents, user=user)
    if not bindings:
        return []
    local = local_lease_copies(roles, bindings, namespace=LOCAL_LEASE_NAMESPACE)
    _ensure_namespaces(kubectl, [*roles, *bindings, *local])
    stream = {"apiVersion": "v1", "kind": "List", "items": [*roles, *bindings, *local]}
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(stream))
    return [binding["metadata"]["name"] for binding in bindings]
