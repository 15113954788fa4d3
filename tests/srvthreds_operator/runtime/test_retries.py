"""A failed pass is retried on the back-off schedule without any event; status shows it."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from prometheus_client import REGISTRY

from srvthreds_operator.backoff import RetryPolicy
from srvthreds_operator.dispatcher import Dispatcher, only_status_changed
from srvthreds_operator.reconcile import Reconciler

from .fakes import FakeBlueprint, FakeKube

CR_KEY = ("srvthreds.io/v1alpha1", "SrvThredsCluster", "ns", "x")
POLICY = RetryPolicy(base_seconds=1.0, factor=2.0, cap_seconds=3.0)
DRAW = 0.5
FAILURES = "srvthreds_operator_reconcile_consecutive_failures"


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class ManualSleep:
    """Records each requested delay and sleeps until the test lets that sleeper go."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._gates: list[asyncio.Event] = []

    async def __call__(self, seconds: float) -> None:
        gate = asyncio.Event()
        self.delays.append(seconds)
        self._gates.append(gate)
        await gate.wait()

    def elapse(self) -> None:
        """The oldest pending sleep ends."""
        self._gates.pop(0).set()


def cluster_body() -> dict[str, Any]:
    return {
        "apiVersion": "srvthreds.io/v1alpha1",
        "kind": "SrvThredsCluster",
        "metadata": {"name": "x", "namespace": "ns", "generation": 1, "uid": "cr-uid"},
        "spec": {"engine": {"replicas": 1}},
    }


def failing_cluster() -> tuple[FakeKube, Dispatcher, ManualSleep]:
    kube = FakeKube()
    kube.put(cluster_body())
    kube.fail_apply.add("x-engine")
    sleep = ManualSleep()
    blueprint = FakeBlueprint()
    dispatcher = Dispatcher(
        reconciler=Reconciler(kube=kube, blueprint=blueprint, clock=lambda: "T"),
        blueprint=blueprint,
        retry_policy=POLICY,
        rand=lambda: DRAW,
        sleep=sleep,
    )
    return kube, dispatcher, sleep


async def settle(dispatcher: Dispatcher) -> None:
    """Let woken retry timers enqueue their passes, then wait for every pass."""
    for _ in range(5):
        await asyncio.sleep(0)
    await dispatcher.queue.join()
    for _ in range(5):
        await asyncio.sleep(0)


def status(kube: FakeKube) -> dict[str, Any]:
    found: dict[str, Any] = kube.objects[CR_KEY]["status"]
    return found


def apply_count(kube: FakeKube) -> int:
    return sum(1 for write in kube.writes if write == ("apply", "Deployment", "x-engine"))


async def test_a_failed_pass_is_retried_with_growing_capped_delays_and_no_event() -> None:
    kube, dispatcher, sleep = failing_cluster()
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    for _ in range(3):
        sleep.elapse()
        await settle(dispatcher)
    assert sleep.delays == [0.5, 1.0, 1.5, 1.5]
    assert apply_count(kube) == 4
    await dispatcher.stop()


async def test_the_status_shows_the_retry_count_and_the_last_error() -> None:
    kube, dispatcher, sleep = failing_cluster()
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    assert status(kube)["retries"] == 1
    sleep.elapse()
    await settle(dispatcher)
    assert status(kube)["retries"] == 2
    assert "apply Deployment x-engine" in status(kube)["lastError"]
    assert status(kube)["phase"] == "Degraded"
    await dispatcher.stop()


async def test_a_successful_retry_resets_the_count_and_schedules_nothing() -> None:
    kube, dispatcher, sleep = failing_cluster()
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    kube.fail_apply.clear()
    sleep.elapse()
    await settle(dispatcher)
    assert "retries" not in status(kube)
    assert "lastError" not in status(kube)
    assert dispatcher.pending_retries == []
    assert sleep.delays == [0.5]


async def test_a_success_triggered_by_an_event_cancels_the_pending_retry() -> None:
    kube, dispatcher, _sleep = failing_cluster()
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    assert dispatcher.pending_retries == [("ns", "x")]
    kube.fail_apply.clear()
    dispatcher.resync()
    await settle(dispatcher)
    assert dispatcher.pending_retries == []
    assert "retries" not in status(kube)


async def test_the_metrics_show_consecutive_failures_and_scheduled_retries() -> None:
    kube, dispatcher, sleep = failing_cluster()
    retries_before = sample("srvthreds_operator_reconcile_retries_total")
    errors_before = sample("srvthreds_operator_reconcile_errors_total", reason="ApplyFailed")
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    sleep.elapse()
    await settle(dispatcher)
    assert sample(FAILURES, namespace="ns", cluster="x") == 2
    assert sample("srvthreds_operator_reconcile_retries_total") - retries_before == 2
    errors = sample("srvthreds_operator_reconcile_errors_total", reason="ApplyFailed")
    assert errors - errors_before == 2
    kube.fail_apply.clear()
    sleep.elapse()
    await settle(dispatcher)
    assert REGISTRY.get_sample_value(FAILURES, {"namespace": "ns", "cluster": "x"}) is None


async def test_a_crashing_pass_is_retried_too() -> None:
    kube, dispatcher, sleep = failing_cluster()
    kube.fail_apply.clear()
    crashes = [RuntimeError("bug")]
    original = dispatcher._reconciler.reconcile

    async def reconcile(body: Any) -> Any:
        if crashes:
            raise crashes.pop()
        return await original(body)

    dispatcher._reconciler.reconcile = reconcile  # type: ignore[method-assign]
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    assert sleep.delays == [0.5]
    sleep.elapse()
    await settle(dispatcher)
    assert ("apps/v1", "Deployment", "ns", "x-engine") in kube.objects
    assert dispatcher.pending_retries == []


async def test_an_invalid_spec_is_not_retried() -> None:
    kube, dispatcher, sleep = failing_cluster()
    body = cluster_body()
    body["spec"]["engine"]["replicas"] = -1
    kube.put(body)
    dispatcher.cluster_event(event_type=None, body=body)
    await settle(dispatcher)
    assert sleep.delays == []
    assert status(kube)["phase"] == "Failed"
    assert "retries" not in status(kube)


async def test_the_operators_own_status_write_does_not_trigger_another_pass() -> None:
    kube, dispatcher, _sleep = failing_cluster()
    dispatcher.cluster_event(event_type=None, body=cluster_body())
    await settle(dispatcher)
    before = apply_count(kube)
    dispatcher.cluster_event(event_type="MODIFIED", body=copy.deepcopy(kube.objects[CR_KEY]))
    await settle(dispatcher)
    assert apply_count(kube) == before
    await dispatcher.stop()


def test_only_a_spec_or_triggering_metadata_change_is_worth_a_pass() -> None:
    old = {**cluster_body(), "status": {"phase": "Ready"}}
    assert only_status_changed(old, {**cluster_body(), "status": {"phase": "Degraded"}})
    paused = cluster_body()
    paused["metadata"]["annotations"] = {"srvthreds.io/reconcile": "paused"}
    assert not only_status_changed(old, paused)
    edited = cluster_body()
    edited["spec"]["engine"]["replicas"] = 3
    assert not only_status_changed(old, edited)
    assert not only_status_changed(None, old)
