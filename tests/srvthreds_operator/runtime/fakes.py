"""In-memory fakes at the runtime's own seams: the Kube protocol and the Blueprint."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from srvthreds_operator.kube import ConflictError, KindNotServedError, KubeError
from srvthreds_operator.ledger import ChildKey, child_key
from srvthreds_operator.reconcile import InvalidSpecError

Manifest = dict[str, Any]


class FakeKube:
    """A tiny API server: objects by key, SSA recorded as an owned-fields entry, writes counted."""

    def __init__(self) -> None:
        self.objects: dict[ChildKey, Manifest] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.fail_apply: set[str] = set()
        self.unserved: set[str] = set()
        """Kinds whose CRD is not installed."""
        self.terminating = False
        """Whether the namespace is being deleted (creating anything in it is refused)."""
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)

    def put(self, obj: Manifest) -> Manifest:
        """Store an object as a user or controller would (no write counted)."""
        stored = copy.deepcopy(obj)
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[child_key(stored)] = stored
        return stored

    def edit_owned_field(self, key: ChildKey, *, path: list[str], value: Any) -> None:
        """What `kubectl edit` does: change a field and take its ownership from us."""
        obj = self.objects[key]
        target = obj
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        for entry in obj["metadata"].get("managedFields", []):
            if entry["manager"] == "srvthreds-operator":
                entry["fieldsV1"] = {"edited-away": path}
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Manifest:
        key = child_key(manifest)
        manager = field_manager or "srvthreds-operator"
        self.writes.append(("apply", key[1], key[3]))
        if key[3] in self.fail_apply:
            raise KubeError(f"PATCH {key[3]}: 422 Unprocessable: refused", status=422)
        if key[1] in self.unserved:
            raise KindNotServedError(api_version=key[0], kind=key[1])
        old = self.objects.get(key)
        if old is None and self.terminating:
            raise KubeError(
                f"PATCH {key[3]}: 403 Forbidden: unable to create new content in namespace"
                f" {key[2]} because it is being terminated",
                status=403,
                reasons=("Forbidden", "NamespaceTerminating"),
            )
        if manager != "srvthreds-operator":
            return self._co_own(key, manifest, manager=manager)
        live = copy.deepcopy(dict(manifest))
        if old is not None:
            live["metadata"]["uid"] = old["metadata"]["uid"]
            if "status" in old:
                live["status"] = old["status"]
            self._keep_replicas_owned_by_others(old, live)
        others = [
            e
            for e in (old or {}).get("metadata", {}).get("managedFields", [])
            if e["manager"] != manager
        ]
        live["metadata"]["managedFields"] = [
            *others,
            {"manager": manager, "operation": "Apply", "fieldsV1": fields_of(manifest)},
        ]
        if old is None:
            live["metadata"]["uid"] = f"uid-{next(self._uids)}"
        live["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = live
        return copy.deepcopy(live)

    @staticmethod
    def _keep_replicas_owned_by_others(old: Manifest, live: Manifest) -> None:
        """SSA semantics for one field: dropped from our apply, it survives only if co-owned."""
        if "replicas" in live.get("spec", {}) or "replicas" not in old.get("spec", {}):
            return
        co_owned = any(
            e["manager"] != "srvthreds-operator" and "f:replicas" in e["fieldsV1"].get("f:spec", {})
            for e in old["metadata"].get("managedFields", [])
        )
        live.setdefault("spec", {})["replicas"] = old["spec"]["replicas"] if co_owned else 1

    def _co_own(self, key: ChildKey, manifest: Mapping[str, Any], *, manager: str) -> Manifest:
        obj = self.objects[key]
        obj.setdefault("spec", {}).update(copy.deepcopy(manifest.get("spec", {})))
        obj["metadata"]["managedFields"].append(
            {"manager": manager, "operation": "Apply", "fieldsV1": fields_of(manifest)}
        )
        return copy.deepcopy(obj)

    async def get(
        self, *, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        found = self.objects.get((api_version, kind, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[Manifest]:
        if kind in self.unserved:
            return []
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return [
            copy.deepcopy(obj)
            for key, obj in self.objects.items()
            if key[:3] == (api_version, kind, namespace or "")
            and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]

    async def create(self, manifest: Mapping[str, Any]) -> Manifest:
        key = child_key(manifest)
        self.writes.append(("create", key[1], key[3]))
        if key in self.objects:
            raise ConflictError(f"{key} exists", status=409)
        return self.put(dict(manifest))

    async def replace(self, manifest: Mapping[str, Any]) -> Manifest:
        key = child_key(manifest)
        self.writes.append(("update", key[1], key[3]))
        current = self.objects.get(key)
        version = manifest["metadata"].get("resourceVersion")
        if current is None or current["metadata"]["resourceVersion"] != version:
            raise ConflictError(f"{key} moved on", status=409)
        return self.put(dict(manifest))

    async def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str
    ) -> None:
        self.writes.append(("delete", kind, name))
        key = (api_version, kind, namespace or "", name)
        if key in self.objects and self.objects[key]["metadata"]["uid"] == uid:
            del self.objects[key]

    async def patch_status(
        self, *, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        self.writes.append(("patch-status", kind, name))
        obj = self.objects.get((api_version, kind, namespace, name))
        if obj is None:
            raise KubeError(f"PATCH {name}/status: 404 Not Found", status=404)
        merged = dict(obj.get("status") or {})
        for field, value in status.items():
            if value is None:
                merged.pop(field, None)
            else:
                merged[field] = copy.deepcopy(value)
        obj["status"] = merged
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(obj)

    async def create_event(
        self, *, regarding: Mapping[str, Any], type_: str, reason: str, note: str, action: str
    ) -> None:
        self.events.append((type_, reason))


def fields_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A fieldsV1-like set: nested f:<key> entries for every map key of the manifest."""
    return {
        f"f:{key}": fields_of(value) if isinstance(value, Mapping) else {}
        for key, value in manifest.items()
        if key not in ("apiVersion", "kind")
    }


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "srvthreds",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "srvthreds-operator",
    }


class FakeBlueprint:
    """Builds a small but representative child set from a raw spec."""

    def parse(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        spec = body.get("spec") or {}
        replicas = (spec.get("engine") or {}).get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            raise InvalidSpecError("spec.engine.replicas", "must be a non-negative integer")
        return body

    def credential_secret_names(self, cluster: Any) -> list[str]:
        return [f"{cluster['metadata']['name']}-redis-credentials"]

    def referenced_objects(self, cluster: Any) -> list[tuple[str, str]]:
        return [("ConfigMap", "patterns")]

    def build(
        self,
        cluster: Any,
        *,
        credentials: Mapping[str, Mapping[str, str] | None],
        content_hashes: Mapping[str, str],
        owner_uid: str,
    ) -> list[Manifest]:
        name = cluster["metadata"]["name"]
        spec = cluster.get("spec") or {}
        owner = [
            {
                "apiVersion": "srvthreds.io/v1alpha1",
                "kind": "SrvThredsCluster",
                "name": name,
                "uid": owner_uid,
                "controller": True,
            }
        ]
        hibernate = spec.get("hibernate") is True
        autoscaling = (spec.get("engine") or {}).get("autoscaling")
        monitoring = spec.get("monitoring") is True
        replicas = 0 if hibernate else (spec.get("engine") or {}).get("replicas", 1)
        secret_name = f"{name}-redis-credentials"
        password = (credentials.get(secret_name) or {}).get("password", "generated")

        def meta(child: str, component: str) -> dict[str, Any]:
            return {"name": child, "labels": labels(name, component), "ownerReferences": owner}

        children: list[Manifest] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(secret_name, "redis"),
                "stringData": {"password": password},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta(f"{name}-redis", "redis"),
                "spec": {"replicas": 1},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta(f"{name}-redis", "redis"),
                "spec": {"ports": [{"port": 6379}]},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta(f"{name}-engine", "engine"),
                "spec": {
                    "replicas": replicas,
                    "selector": {
                        "matchLabels": {
                            "app.kubernetes.io/instance": name,
                            "app.kubernetes.io/component": "engine",
                        }
                    },
                    "template": {
                        "metadata": {
                            "annotations": {
                                "srvthreds.io/config-hash": content_hashes["ConfigMap/patterns"]
                            }
                        }
                    },
                },
            },
        ]
        if autoscaling:
            del children[-1]["spec"]["replicas"]
            children.append(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": meta(f"{name}-engine", "engine"),
                    "spec": {
                        "scaleTargetRef": {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": f"{name}-engine",
                        },
                        "minReplicas": 2 if autoscaling is True else autoscaling["minReplicas"],
                    },
                }
            )
        if monitoring:
            children.append(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "ServiceMonitor",
                    "metadata": meta(f"{name}-engine", "engine"),
                    "spec": {"endpoints": [{"port": "metrics"}]},
                }
            )
        return children

    def prune_kinds(self) -> list[tuple[str, str]]:
        return [
            ("v1", "Secret"),
            ("v1", "Service"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "StatefulSet"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ]
