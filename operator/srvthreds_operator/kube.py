"""The Kube protocol and its kubernetes_asyncio implementation: the only code that calls the API.

Every call goes through `ApiClient.call_api` with raw JSON bodies so that any kind (built in or
custom, e.g. ServiceMonitor) is handled the same way; the group/version discovery document maps a
kind to its plural and scope once per API version.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

FIELD_MANAGER = "srvthreds-operator"
REPORTING_CONTROLLER = "srvthreds.io/operator"
DISCOVERY_RETRY_SECONDS = 10.0

Manifest = dict[str, Any]
WriteRecorder = Callable[[str, str], None]
"""Called with (kind, verb) for every write request; feeds the API-writes metric."""

logger = logging.getLogger(__name__)


TERMINATING_REASON = "NamespaceTerminating"
TERMINATING_TEXT = "because it is being terminated"


class KubeError(Exception):
    """An API call failed; the message names the verb, the object and the server's reason."""

    def __init__(
        self, message: str, *, status: int | None = None, reasons: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reasons = reasons
        """The Status object's reason and its causes' reasons (e.g. NamespaceTerminating)."""

    @property
    def namespace_terminating(self) -> bool:
        """True when the namespace is being deleted, so nothing new can be created in it."""
        return self.status in (403, 409) and (
            TERMINATING_REASON in self.reasons or TERMINATING_TEXT in str(self)
        )


class KindNotServedError(KubeError):
    """The API server does not serve this kind (e.g. an optional CRD is not installed)."""

    def __init__(self, *, api_version: str, kind: str) -> None:
        super().__init__(
            f"the API server does not serve {kind} in {api_version} (is its CRD installed?)",
            status=404,
        )
        self.api_version = api_version
        self.kind = kind


class ConflictError(KubeError):
    """The object changed since it was read (HTTP 409); the caller re-reads and retries."""


class Kube(Protocol):
    """What the reconciler and the leader election need from the Kubernetes API."""

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Manifest:
        """Server-side apply (force) under the fixed field manager, unless another is named;
        returns the live object."""
        ...

    async def get(
        self, *, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        """The live object, or None when it does not exist."""
        ...

    async def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[Manifest]:
        """Objects matching the selector; an unknown kind (CRD not installed) lists as empty."""
        ...

    async def create(self, manifest: Mapping[str, Any]) -> Manifest:
        """Create an object; ConflictError when it already exists."""
        ...

    async def replace(self, manifest: Mapping[str, Any]) -> Manifest:
        """Replace an object guarded by its resourceVersion; ConflictError when it moved on."""
        ...

    async def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str
    ) -> None:
        """Delete exactly that object (uid precondition); a missing object is not an error."""
        ...

    async def patch_status(
        self, *, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        """JSON merge patch on the status subresource; returns the stored object."""
        ...

    async def create_event(
        self, *, regarding: Mapping[str, Any], type_: str, reason: str, note: str, action: str
    ) -> None:
        """Record a Kubernetes Event about `regarding` (best effort)."""
        ...


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class ApiKube:
    """Kube over a kubernetes_asyncio ApiClient (which owns auth, TLS and token refresh)."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        reporting_instance: str = "srvthreds-operator",
        record_write: WriteRecorder | None = None,
    ) -> None:
        self._api = api_client
        self._field_manager = field_manager
        self._reporting_instance = reporting_instance
        self._record_write = record_write or (lambda _kind, _verb: None)
        self._resources: dict[str, tuple[float, dict[str, tuple[str, bool]]]] = {}

    async def _discover(
        self, api_version: str, *, kind: str | None = None
    ) -> dict[str, tuple[str, bool]]:
        """kind -> (plural, namespaced) for an API version, cached.

        NB: a CRD installed after the operator started (or one whose discovery entry lags its
        Established condition) is missing from a cached document, so a miss re-reads it, at
        most every DISCOVERY_RETRY_SECONDS."""
        cached = self._resources.get(api_version)
        if cached is not None:
            fetched_at, kinds = cached
            fresh_enough = time.monotonic() - fetched_at < DISCOVERY_RETRY_SECONDS
            if kind is None or kind in kinds or fresh_enough:
                return kinds
        group, _ = _split_api_version(api_version)
        path = f"/api/{api_version}" if not group else f"/apis/{api_version}"
        try:
            document = await self._call("GET", path)
        except KubeError as error:
            if error.status == 404:
                return {}
            raise
        kinds = {
            str(r["kind"]): (str(r["name"]), bool(r["namespaced"]))
            for r in document.get("resources", [])
            if "/" not in str(r["name"])
        }
        self._resources[api_version] = (time.monotonic(), kinds)
        return kinds

    async def _path(
        self, *, api_version: str, kind: str, namespace: str | None, name: str | None = None
    ) -> str:
        kinds = await self._discover(api_version, kind=kind)
        if kind not in kinds:
            raise KindNotServedError(api_version=api_version, kind=kind)
        plural, namespaced = kinds[kind]
        group, _ = _split_api_version(api_version)
        path = f"/api/{api_version}" if not group else f"/apis/{api_version}"
        if namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name is not None:
            path += f"/{name}"
        return path

    async def _manifest_path(self, manifest: Mapping[str, Any]) -> str:
        metadata = manifest.get("metadata") or {}
        return await self._path(
            api_version=str(manifest["apiVersion"]),
            kind=str(manifest["kind"]),
            namespace=metadata.get("namespace"),
            name=str(metadata["name"]),
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Manifest:
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
            )
        except ApiException as error:
            decoded = _server_status(error)
            message = f"{method} {path}: {error.status} {error.reason}: {decoded.message}"
            if error.status == 409 and TERMINATING_REASON not in decoded.reasons:
                raise ConflictError(message, status=409, reasons=decoded.reasons) from error
            raise KubeError(message, status=error.status, reasons=decoded.reasons) from error
        return result if isinstance(result, dict) else {}

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Manifest:
        path = await self._manifest_path(manifest)
        self._record_write(str(manifest["kind"]), "apply")
        return await self._call(
            "PATCH",
            path,
            query=[("fieldManager", field_manager or self._field_manager), ("force", "true")],
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
        )

    async def get(
        self, *, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        path = await self._path(api_version=api_version, kind=kind, namespace=namespace, name=name)
        try:
            return await self._call("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[Manifest]:
        kinds = await self._discover(api_version, kind=kind)
        if kind not in kinds:
            return []
        path = await self._path(api_version=api_version, kind=kind, namespace=namespace)
        document = await self._call("GET", path, query=[("labelSelector", label_selector)])
        items = document.get("items") or []
        # NB: list items carry no apiVersion/kind; restore them so callers can act on them.
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items]

    async def create(self, manifest: Mapping[str, Any]) -> Manifest:
        metadata = manifest.get("metadata") or {}
        path = await self._path(
            api_version=str(manifest["apiVersion"]),
            kind=str(manifest["kind"]),
            namespace=metadata.get("namespace"),
        )
        self._record_write(str(manifest["kind"]), "create")
        return await self._call(
            "POST", path, query=[("fieldManager", self._field_manager)], body=dict(manifest)
        )

    async def replace(self, manifest: Mapping[str, Any]) -> Manifest:
        path = await self._manifest_path(manifest)
        self._record_write(str(manifest["kind"]), "update")
        return await self._call(
            "PUT", path, query=[("fieldManager", self._field_manager)], body=dict(manifest)
        )

    async def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str
    ) -> None:
        path = await self._path(api_version=api_version, kind=kind, namespace=namespace, name=name)
        self._record_write(kind, "delete")
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        try:
            await self._call("DELETE", path, body=body)
        except KubeError as error:
            if error.status != 404:
                raise

    async def patch_status(
        self, *, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        path = await self._path(api_version=api_version, kind=kind, namespace=namespace, name=name)
        self._record_write(kind, "patch-status")
        return await self._call(
            "PATCH",
            f"{path}/status",
            query=[("fieldManager", self._field_manager)],
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def create_event(
        self, *, regarding: Mapping[str, Any], type_: str, reason: str, note: str, action: str
    ) -> None:
        metadata = regarding.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # kubectl's convention <object>.<hex nanoseconds>; a generateName may not end in '.'.
            "metadata": {
                "name": f"{metadata.get('name')}.{time.time_ns():x}",
                "namespace": namespace,
            },
            "eventTime": _now_micro(),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._reporting_instance,
            "action": action,
            "reason": reason,
            "note": note[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": metadata.get("name"),
                "namespace": namespace,
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
        }
        try:
            await self.create(event)
        except KubeError as error:
            # Events are informational: losing one must never fail a reconcile.
            logger.warning("could not record event %s: %s", reason, error)


@dataclasses.dataclass(frozen=True)
class _ServerStatus:
    message: str
    reasons: tuple[str, ...]


def _server_status(error: ApiException) -> _ServerStatus:
    """The message and reasons of the metav1.Status body the API server sends with an error."""
    raw: Any = error.body
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    try:
        decoded = json.loads(text)
    except ValueError:
        return _ServerStatus(message=text[:500], reasons=())
    if not isinstance(decoded, dict):
        return _ServerStatus(message=text[:500], reasons=())
    causes = (decoded.get("details") or {}).get("causes") or []
    reasons = [str(decoded.get("reason") or "")]
    reasons += [str(c.get("reason") or "") for c in causes if isinstance(c, dict)]
    return _ServerStatus(
        message=str(decoded.get("message", ""))[:2000],
        reasons=tuple(reason for reason in reasons if reason),
    )
