"""The kubernetes_asyncio adapter against a recording fake ApiClient: paths, verbs, headers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from srvthreds_operator.kube import ApiKube, ConflictError, KindNotServedError, KubeError

DISCOVERY = {
    "/apis/apps/v1": {
        "resources": [
            {"name": "deployments", "kind": "Deployment", "namespaced": True},
            {"name": "deployments/status", "kind": "Deployment", "namespaced": True},
        ]
    },
    "/api/v1": {"resources": [{"name": "namespaces", "kind": "Namespace", "namespaced": False}]},
    "/apis/srvthreds.io/v1alpha1": {
        "resources": [{"name": "srvthredsclusters", "kind": "SrvThredsCluster", "namespaced": True}]
    },
    "/apis/events.k8s.io/v1": {
        "resources": [{"name": "events", "kind": "Event", "namespaced": True}]
    },
}


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps({"message": message}).encode()
    return error


class FakeApiClient:
    """Answers discovery documents, records every other call, raises what it is told to."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors: dict[tuple[str, str], ApiException] = {}
        self.response: dict[str, Any] = {"metadata": {"name": "x"}}

    async def call_api(self, path: str, method: str, **kwargs: Any) -> Any:
        if method == "GET" and path in DISCOVERY:
            return DISCOVERY[path]
        if path.startswith("/apis/monitoring.coreos.com"):
            raise api_error(404, "not found")
        self.calls.append({"path": path, "method": method, **kwargs})
        error = self.errors.get((method, path))
        if error is not None:
            raise error
        return self.response


@pytest.fixture
def api() -> FakeApiClient:
    return FakeApiClient()


@pytest.fixture
def writes() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def kube(api: FakeApiClient, writes: list[tuple[str, str]]) -> ApiKube:
    def record(kind: str, verb: str) -> None:
        writes.append((kind, verb))

    return ApiKube(api, record_write=record)  # type: ignore[arg-type]


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "x-engine", "namespace": "ns"},
}


async def test_apply_is_a_forced_server_side_apply_under_our_field_manager(
    kube: ApiKube, api: FakeApiClient, writes: list[tuple[str, str]]
) -> None:
    await kube.apply(DEPLOYMENT)
    call = api.calls[-1]
    assert (call["method"], call["path"]) == (
        "PATCH",
        "/apis/apps/v1/namespaces/ns/deployments/x-engine",
    )
    assert call["header_params"]["Content-Type"] == "application/apply-patch+yaml"
    assert ("fieldManager", "srvthreds-operator") in call["query_params"]
    assert ("force", "true") in call["query_params"]
    assert writes == [("Deployment", "apply")]


async def test_status_is_a_merge_patch_on_the_status_subresource(
    kube: ApiKube, api: FakeApiClient
) -> None:
    await kube.patch_status(
        api_version="srvthreds.io/v1alpha1",
        kind="SrvThredsCluster",
        namespace="ns",
        name="x",
        status={"phase": "Ready"},
    )
    call = api.calls[-1]
    assert call["path"] == "/apis/srvthreds.io/v1alpha1/namespaces/ns/srvthredsclusters/x/status"
    assert call["header_params"]["Content-Type"] == "application/merge-patch+json"
    assert call["body"] == {"status": {"phase": "Ready"}}


async def test_get_of_a_missing_object_is_none_and_other_errors_name_the_call(
    kube: ApiKube, api: FakeApiClient
) -> None:
    path = "/apis/apps/v1/namespaces/ns/deployments/x-engine"
    api.errors[("GET", path)] = api_error(404, "not found")
    assert (
        await kube.get(api_version="apps/v1", kind="Deployment", namespace="ns", name="x-engine")
        is None
    )
    api.errors[("GET", path)] = api_error(403, "forbidden: user cannot get")
    with pytest.raises(KubeError, match=r"GET .*x-engine: 403 Reason: forbidden"):
        await kube.get(api_version="apps/v1", kind="Deployment", namespace="ns", name="x-engine")


async def test_a_conflict_is_its_own_error(kube: ApiKube, api: FakeApiClient) -> None:
    api.errors[("PUT", "/apis/apps/v1/namespaces/ns/deployments/x-engine")] = api_error(
        409, "moved"
    )
    with pytest.raises(ConflictError):
        await kube.replace(DEPLOYMENT)


async def test_list_restores_kind_and_skips_kinds_the_server_lacks(
    kube: ApiKube, api: FakeApiClient
) -> None:
    api.response = {"items": [{"metadata": {"name": "a"}}]}
    items = await kube.list(
        api_version="apps/v1", kind="Deployment", namespace="ns", label_selector="a=b"
    )
    assert items == [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}]
    assert ("labelSelector", "a=b") in api.calls[-1]["query_params"]
    missing = await kube.list(
        api_version="monitoring.coreos.com/v1",
        kind="ServiceMonitor",
        namespace="ns",
        label_selector="a=b",
    )
    assert missing == []


async def test_applying_a_kind_without_its_crd_says_so(kube: ApiKube) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
    }
    with pytest.raises(KubeError, match="CRD installed"):
        await kube.apply(monitor)


async def test_cluster_scoped_paths_have_no_namespace(kube: ApiKube, api: FakeApiClient) -> None:
    await kube.get(api_version="v1", kind="Namespace", namespace="ignored", name="ns")
    assert api.calls[-1]["path"] == "/api/v1/namespaces/ns"


async def test_delete_is_guarded_by_uid_and_ignores_a_missing_object(
    kube: ApiKube, api: FakeApiClient
) -> None:
    path = "/apis/apps/v1/namespaces/ns/deployments/x-engine"
    api.errors[("DELETE", path)] = api_error(404, "gone")
    await kube.delete(
        api_version="apps/v1", kind="Deployment", namespace="ns", name="x-engine", uid="u1"
    )
    assert api.calls[-1]["body"]["preconditions"] == {"uid": "u1"}


async def test_an_event_names_the_cluster_and_a_failure_to_record_it_is_not_fatal(
    kube: ApiKube, api: FakeApiClient
) -> None:
    regarding = {
        "apiVersion": "srvthreds.io/v1alpha1",
        "kind": "SrvThredsCluster",
        "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
    }
    await kube.create_event(
        regarding=regarding, type_="Normal", reason="PhaseChanged", note="n", action="Reconcile"
    )
    event = api.calls[-1]["body"]
    assert api.calls[-1]["path"] == "/apis/events.k8s.io/v1/namespaces/ns/events"
    assert event["metadata"]["name"].startswith("x.")
    assert event["regarding"]["uid"] == "u"
    api.errors[("POST", "/apis/events.k8s.io/v1/namespaces/ns/events")] = api_error(
        403, "forbidden"
    )
    await kube.create_event(regarding=regarding, type_="Normal", reason="R", note="n", action="A")


async def test_a_kind_missing_from_cached_discovery_is_looked_up_again(
    kube: ApiKube, api: FakeApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = DISCOVERY["/apis/apps/v1"]
    monkeypatch.setitem(DISCOVERY, "/apis/apps/v1", {"resources": []})
    assert (
        await kube.list(
            api_version="apps/v1", kind="Deployment", namespace="ns", label_selector="a=b"
        )
        == []
    )
    monkeypatch.setitem(DISCOVERY, "/apis/apps/v1", apps)
    monkeypatch.setattr("srvthreds_operator.kube.DISCOVERY_RETRY_SECONDS", 0.0)
    api.response = {"items": []}
    await kube.list(api_version="apps/v1", kind="Deployment", namespace="ns", label_selector="a=b")
    assert api.calls[-1]["path"] == "/apis/apps/v1/namespaces/ns/deployments"


def terminating_error(status: int) -> ApiException:
    error = ApiException(status=status, reason="Forbidden")
    error.body = json.dumps(
        {
            "kind": "Status",
            "reason": "Forbidden",
            "message": 'deployments "x-engine" is forbidden: unable to create new content in'
            " namespace ns because it is being terminated",
            "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata"}]},
        }
    ).encode()
    return error


@pytest.mark.parametrize("status", [403, 409])
async def test_a_terminating_namespace_is_recognised_from_the_status_causes(
    kube: ApiKube, api: FakeApiClient, status: int
) -> None:
    path = "/apis/apps/v1/namespaces/ns/deployments/x-engine"
    api.errors[("PATCH", path)] = terminating_error(status)
    with pytest.raises(KubeError) as raised:
        await kube.apply(DEPLOYMENT)
    assert raised.value.namespace_terminating
    assert not isinstance(raised.value, ConflictError)
    assert "NamespaceTerminating" in raised.value.reasons


async def test_an_ordinary_forbidden_error_is_not_mistaken_for_a_terminating_namespace(
    kube: ApiKube, api: FakeApiClient
) -> None:
    path = "/apis/apps/v1/namespaces/ns/deployments/x-engine"
    api.errors[("PATCH", path)] = api_error(403, "cannot patch deployments")
    with pytest.raises(KubeError) as raised:
        await kube.apply(DEPLOYMENT)
    assert not raised.value.namespace_terminating


async def test_applying_a_kind_without_its_crd_is_a_kind_not_served_error(kube: ApiKube) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": "ns"},
    }
    with pytest.raises(KindNotServedError) as raised:
        await kube.apply(monitor)
    assert (raised.value.api_version, raised.value.kind) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
