"""Shared pieces of the child manifests: labels, metadata, security contexts, hashing, merging."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from srvthreds_operator import model
from srvthreds_operator.model import SrvThredsCluster

Manifest = dict[str, Any]

APP_PORT = 3001
SESSION_PORT = 3000
APP_UID = 10001  # the uid the Dockerfile creates

DEFAULT_APP_RESOURCES: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "engine": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "session-agent": {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    },
    "persistence-agent": {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    },
    "redis": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "mongodb": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "rabbitmq": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "backup": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
}


def selector_labels(cluster: SrvThredsCluster, component: str) -> dict[str, str]:
    """The immutable labels a workload selects its pods by."""
    return {
        "app.kubernetes.io/name": "srvthreds",
        "app.kubernetes.io/instance": cluster.name,
        "app.kubernetes.io/component": component,
    }


def instance_selector(cluster: SrvThredsCluster) -> dict[str, str]:
    """Labels every pod of the instance carries (network policy scope)."""
    return {"app.kubernetes.io/name": "srvthreds", "app.kubernetes.io/instance": cluster.name}


def labels(cluster: SrvThredsCluster, component: str) -> dict[str, str]:
    """The standard labels of every child."""
    return selector_labels(cluster, component) | {
        "app.kubernetes.io/part-of": "srvthreds",
        "app.kubernetes.io/managed-by": "srvthreds-operator",
        "app.kubernetes.io/version": cluster.spec.version,
    }


def owner_reference(cluster: SrvThredsCluster, *, owner_uid: str | None) -> dict[str, Any] | None:
    """The controller reference to the cluster; None when the uid is unknown (render)."""
    uid = owner_uid or cluster.metadata.uid
    if not uid:
        return None
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "name": cluster.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    cluster: SrvThredsCluster,
    *,
    name: str,
    component: str,
    owner_uid: str | None,
    extra_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Object metadata with name, namespace, labels and the owner reference."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cluster.namespace,
        "labels": labels(cluster, component) | dict(extra_labels or {}),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    owner = owner_reference(cluster, owner_uid=owner_uid)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def pod_security_context(*, uid: int = APP_UID, gid: int | None = None) -> dict[str, Any]:
    """The restricted Pod Security Standard at pod level."""
    group = uid if gid is None else gid
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": group,
        "fsGroup": group,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard at container level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(
    spec: model.ResourceRequirements | None, *, component: str
) -> dict[str, dict[str, Any]]:
    """The user's resources, or the component's defaults when none are given."""
    if spec is None:
        return copy.deepcopy(
            {key: dict(value) for key, value in DEFAULT_APP_RESOURCES[component].items()}
        )
    result: dict[str, dict[str, Any]] = {}
    if spec.requests:
        result["requests"] = dict(spec.requests)
    if spec.limits:
        result["limits"] = dict(spec.limits)
    return result


def app_image(cluster: SrvThredsCluster) -> str:
    """The app image reference: a digest pins it, else the tag (default: spec.version)."""
    image = cluster.spec.image
    if image.digest:
        return f"{image.repository}@{image.digest}"
    return f"{image.repository}:{image.tag or cluster.spec.version}"


def default_topology_spread(cluster: SrvThredsCluster, component: str) -> list[dict[str, Any]]:
    """Spread across hosts and zones, best effort (ScheduleAnyway) so small clusters still run."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(cluster, component)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def scheduling(
    cluster: SrvThredsCluster, spec: model.SchedulingSpec, *, component: str
) -> dict[str, Any]:
    """Pod-spec fields for placement."""
    placement: dict[str, Any] = {}
    if spec.node_selector:
        placement["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        placement["tolerations"] = copy.deepcopy(spec.tolerations)
    if spec.affinity:
        placement["affinity"] = copy.deepcopy(spec.affinity)
    if spec.topology_spread_constraints is None:
        placement["topologySpreadConstraints"] = default_topology_spread(cluster, component)
    elif spec.topology_spread_constraints:
        placement["topologySpreadConstraints"] = copy.deepcopy(spec.topology_spread_constraints)
    if spec.priority_class_name:
        placement["priorityClassName"] = spec.priority_class_name
    return placement


def content_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable content (pod template annotation)."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:32]


def _merge_named_lists(base: Sequence[Any], patch: Sequence[Any]) -> list[Any]:
    merged = [copy.deepcopy(item) for item in base]
    index = {item.get("name"): position for position, item in enumerate(merged)}
    for item in patch:
        position = index.get(item.get("name"))
        if position is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[position] = strategic_merge(merged[position], item)
    return merged


def _is_named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, Mapping) and "name" in item for item in value)
    )


def strategic_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Merge patch over base: maps recursively, lists of named items by name, the rest replaced.

    This is the subset of strategic merge patch that pod templates need (containers, volumes,
    env, volumeMounts and ports merge by name); a null in the patch deletes the key.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in patch.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = strategic_merge(current, value)
        elif isinstance(current, list) and _is_named_list(value) and _is_named_list(current):
            merged[key] = _merge_named_lists(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
