"""The coalescing queue and the dispatcher's triggers (CR, child, referenced ConfigMap, resync)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from srvthreds_operator.dispatcher import Dispatcher, owning_cluster
from srvthreds_operator.reconcile import Reconciler
from srvthreds_operator.workqueue import CoalescingQueue

from .fakes import FakeBlueprint, FakeKube


async def test_a_burst_of_triggers_during_a_pass_runs_exactly_one_more_pass() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def work(key: str) -> None:
        started.append(key)
        await release.wait()

    queue: CoalescingQueue[str] = CoalescingQueue(work)
    queue.enqueue("a")
    await asyncio.sleep(0)
    for _ in range(10):
        queue.enqueue("a")
    release.set()
    await queue.join()
    assert started == ["a", "a"]


async def test_passes_for_one_key_never_overlap_but_keys_run_concurrently() -> None:
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    both_started = asyncio.Event()

    async def work(key: str) -> None:
        running[key] += 1
        peak[key] = max(peak[key], running[key])
        if all(running.values()):
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=5)
        running[key] -= 1

    queue: CoalescingQueue[str] = CoalescingQueue(work)
    for key in ("a", "b", "a", "b"):
        queue.enqueue(key)
    await queue.join()
    assert peak == {"a": 1, "b": 1}


async def test_a_failing_pass_does_not_wedge_the_key() -> None:
    calls: list[int] = []

    async def work(key: str) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    queue: CoalescingQueue[str] = CoalescingQueue(work)
    queue.enqueue("a")
    await queue.join()
    queue.enqueue("a")
    await queue.join()
    assert len(calls) == 2


def cluster_body() -> dict[str, Any]:
    return {
        "apiVersion": "srvthreds.io/v1alpha1",
        "kind": "SrvThredsCluster",
        "metadata": {"name": "x", "namespace": "ns", "generation": 1, "uid": "cr-uid"},
        "spec": {"engine": {"replicas": 1}},
    }


def dispatcher_with(kube: FakeKube) -> Dispatcher:
    blueprint = FakeBlueprint()
    reconciler = Reconciler(kube=kube, blueprint=blueprint, clock=lambda: "T")
    return Dispatcher(reconciler=reconciler, blueprint=blueprint)


async def test_a_cluster_event_reconciles_and_a_deletion_forgets() -> None:
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type="ADDED", body=cluster_body())
    await dispatcher.queue.join()
    assert ("apps/v1", "Deployment", "ns", "x-engine") in kube.objects
    dispatcher.cluster_event(event_type="DELETED", body=cluster_body())
    assert dispatcher.clusters == []


async def test_a_child_event_reconciles_its_owner_and_undoes_a_deletion() -> None:
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await dispatcher.queue.join()
    engine = kube.objects.pop(("apps/v1", "Deployment", "ns", "x-engine"))
    dispatcher.child_event(body=engine)
    await dispatcher.queue.join()
    assert ("apps/v1", "Deployment", "ns", "x-engine") in kube.objects


async def test_a_referenced_config_map_change_reconciles_the_cluster_using_it() -> None:
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await dispatcher.queue.join()
    kube.writes.clear()
    patterns = {"metadata": {"name": "patterns", "namespace": "ns"}, "data": {"p": "2"}}
    kube.put({"apiVersion": "v1", "kind": "ConfigMap", **patterns})
    dispatcher.referenced_event(kind="ConfigMap", body=patterns)
    await dispatcher.queue.join()
    assert ("apply", "Deployment", "x-engine") in kube.writes


async def test_an_unrelated_config_map_triggers_nothing() -> None:
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await dispatcher.queue.join()
    dispatcher.referenced_event(kind="ConfigMap", body={"metadata": {"name": "other"}})
    assert not dispatcher.queue.busy


async def test_resync_enqueues_every_known_cluster() -> None:
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await dispatcher.queue.join()
    del kube.objects[("apps/v1", "Deployment", "ns", "x-engine")]
    sleeps = 0

    async def sleep(_: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps > 1:
            raise asyncio.CancelledError

    with contextlib.suppress(asyncio.CancelledError):
        await dispatcher.resync_forever(interval=90, sleep=sleep)
    await dispatcher.queue.join()
    assert ("apps/v1", "Deployment", "ns", "x-engine") in kube.objects


def test_owning_cluster_reads_the_owner_reference() -> None:
    child = {
        "metadata": {
            "namespace": "ns",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"},
                {"apiVersion": "srvthreds.io/v1alpha1", "kind": "SrvThredsCluster", "name": "x"},
            ],
        }
    }
    assert owning_cluster(child) == ("ns", "x")
    assert owning_cluster({"metadata": {}}) is None


async def test_a_cluster_in_a_terminating_namespace_is_dropped_so_child_events_retry_nothing() -> (
    None
):
    kube = FakeKube()
    kube.put(cluster_body())
    dispatcher = dispatcher_with(kube)
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await dispatcher.queue.join()
    kube.terminating = True
    engine = kube.objects.pop(("apps/v1", "Deployment", "ns", "x-engine"))
    dispatcher.child_event(body=engine)
    await dispatcher.queue.join()
    assert dispatcher.clusters == []
    kube.writes.clear()
    dispatcher.child_event(body=engine)
    assert not dispatcher.queue.busy
    assert kube.writes == []
