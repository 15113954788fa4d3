"""The reconcile pass against an in-memory Kube: apply, quiet steady state, drift, prune, pause."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from typing import Any

import pytest

from srvthreds_operator.kube import KubeError
from srvthreds_operator.ledger import ChildKey, owns_field
from srvthreds_operator.reconcile import Reconciler, Result

from .fakes import FakeBlueprint, FakeKube

CR_KEY: ChildKey = ("srvthreds.io/v1alpha1", "SrvThredsCluster", "ns", "x")
ENGINE: ChildKey = ("apps/v1", "Deployment", "ns", "x-engine")
REDIS: ChildKey = ("apps/v1", "StatefulSet", "ns", "x-redis")


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put(
        {
            "apiVersion": "srvthreds.io/v1alpha1",
            "kind": "SrvThredsCluster",
            "metadata": {"name": "x", "namespace": "ns", "generation": 1, "uid": "cr-uid"},
            "spec": {"engine": {"replicas": 2}},
        }
    )
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "patterns", "namespace": "ns"},
            "data": {"p": "1"},
        }
    )
    return fake


@pytest.fixture
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=lambda: "T")


def cr(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.objects[CR_KEY])


def edit_spec(kube: FakeKube, **spec: Any) -> None:
    obj = kube.objects[CR_KEY]
    obj["spec"].update(spec)
    obj["metadata"]["generation"] += 1


def make_ready(kube: FakeKube) -> None:
    """What the controllers do: report every workload rolled out and ready."""
    for key in (ENGINE, REDIS):
        obj = kube.objects[key]
        replicas = obj["spec"]["replicas"]
        obj["metadata"]["generation"] = 1
        obj["status"] = {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
        }


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.objects[CR_KEY]["status"]["conditions"]}


async def test_the_first_pass_applies_every_child_with_owner_references(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.result is Result.APPLIED
    assert [key[1] for key in outcome.applied] == ["Secret", "StatefulSet", "Service", "Deployment"]
    engine = kube.objects[ENGINE]
    assert engine["metadata"]["namespace"] == "ns"
    assert engine["metadata"]["ownerReferences"][0]["uid"] == "cr-uid"
    assert kube.objects[CR_KEY]["status"]["phase"] == "Progressing"
    assert kube.objects[CR_KEY]["status"]["engineSelector"] == (
        "app.kubernetes.io/component=engine,app.kubernetes.io/instance=x"
    )
    assert kube.objects[CR_KEY]["status"]["endpoints"] == {"redis": "redis://x-redis.ns.svc:6379"}


async def test_a_steady_state_makes_no_write_requests(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    ready = await reconciler.reconcile(cr(kube))
    assert ready.phase == "Ready"
    kube.writes.clear()
    for _ in range(3):
        outcome = await reconciler.reconcile(cr(kube))
        assert outcome.applied == ()
        assert not outcome.status_written
    assert kube.writes == []


async def test_a_restarted_operator_applies_once_then_is_quiet(kube: FakeKube) -> None:
    await Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=lambda: "T").reconcile(cr(kube))
    make_ready(kube)
    restarted = Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=lambda: "T")
    await restarted.reconcile(cr(kube))
    kube.writes.clear()
    await restarted.reconcile(cr(kube))
    assert kube.writes == []


async def test_an_edit_to_a_field_we_own_is_undone(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(kube))
    kube.edit_owned_field(ENGINE, path=["spec", "replicas"], value=9)
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.applied == (ENGINE,)
    assert kube.objects[ENGINE]["spec"]["replicas"] == 2


async def test_a_deleted_child_is_recreated(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(kube))
    del kube.objects[ENGINE]
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.applied == (ENGINE,)
    assert ENGINE in kube.objects


async def test_a_controller_status_update_is_not_drift(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    kube.objects[ENGINE]["metadata"]["resourceVersion"] = "999"
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.applied == ()


async def test_a_spec_change_reapplies_only_the_changed_child(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    edit_spec(kube, engine={"replicas": 5})
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.applied == (ENGINE,)
    assert kube.objects[ENGINE]["spec"]["replicas"] == 5
    assert kube.objects[CR_KEY]["status"]["observedGeneration"] == 2


async def test_a_changed_config_map_rolls_the_pods(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(kube))
    before = kube.objects[ENGINE]["spec"]["template"]["metadata"]["annotations"]
    kube.objects[("v1", "ConfigMap", "ns", "patterns")]["data"] = {"p": "2"}
    outcome = await reconciler.reconcile(cr(kube))
    after = kube.objects[ENGINE]["spec"]["template"]["metadata"]["annotations"]
    assert outcome.applied == (ENGINE,)
    assert before != after


async def test_a_child_no_longer_desired_is_pruned(kube: FakeKube, reconciler: Reconciler) -> None:
    edit_spec(kube, engine={"replicas": 2, "autoscaling": True})
    await reconciler.reconcile(cr(kube))
    hpa: ChildKey = ("autoscaling/v2", "HorizontalPodAutoscaler", "ns", "x-engine")
    assert hpa in kube.objects
    edit_spec(kube, engine={"replicas": 2})
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.pruned == (hpa,)
    assert hpa not in kube.objects


async def test_an_object_not_owned_by_the_cluster_is_never_pruned(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    stranger = kube.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "x-copied",
                "namespace": "ns",
                "labels": {
                    "app.kubernetes.io/instance": "x",
                    "app.kubernetes.io/managed-by": "srvthreds-operator",
                },
            },
        }
    )
    await reconciler.reconcile(cr(kube))
    assert ("v1", "Secret", "ns", stranger["metadata"]["name"]) in kube.objects


async def test_existing_credentials_are_reused_not_regenerated(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    kube.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "x-redis-credentials", "namespace": "ns"},
            "data": {"password": "czNjcjN0"},
        }
    )
    await reconciler.reconcile(cr(kube))
    secret = kube.objects[("v1", "Secret", "ns", "x-redis-credentials")]
    assert secret["stringData"] == {"password": "s3cr3t"}


async def test_paused_applies_nothing_and_says_so_once(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    edit_spec(kube, paused=True, engine={"replicas": 7})
    kube.writes.clear()
    first = await reconciler.reconcile(cr(kube))
    second = await reconciler.reconcile(cr(kube))
    assert (first.result, second.result) == (Result.PAUSED, Result.PAUSED)
    assert kube.objects[ENGINE]["spec"]["replicas"] == 2
    assert [w for w in kube.writes if w[0] == "apply"] == []
    assert conditions(kube)["Paused"]["status"] == "True"
    assert kube.objects[CR_KEY]["status"]["phase"] == "Paused"
    assert kube.events.count(("Normal", "ReconciliationPaused")) == 1


async def test_unpausing_applies_the_pending_changes(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    kube.objects[CR_KEY]["metadata"]["annotations"] = {"srvthreds.io/reconcile": "paused"}
    edit_spec(kube, engine={"replicas": 4})
    assert (await reconciler.reconcile(cr(kube))).result is Result.PAUSED
    kube.objects[CR_KEY]["metadata"]["annotations"] = {}
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.applied == (ENGINE,)
    assert conditions(kube)["Paused"]["status"] == "False"
    assert ("Normal", "ReconciliationResumed") in kube.events


async def test_an_invalid_spec_touches_no_child_and_names_the_field(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    edit_spec(kube, engine={"replicas": -1})
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.result is Result.INVALID
    assert [w for w in kube.writes if w[0] != "patch-status"] == []
    status = kube.objects[CR_KEY]["status"]
    assert status["phase"] == "Failed"
    assert conditions(kube)["ReconcileSucceeded"]["reason"] == "InvalidSpec"
    assert "spec.engine.replicas" in status["lastError"]
    assert ("Warning", "InvalidSpec") in kube.events


async def test_a_failed_apply_surfaces_in_conditions_and_skips_pruning(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    kube.fail_apply.add("x-engine")
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.result is Result.ERROR
    assert conditions(kube)["ReconcileSucceeded"]["reason"] == "ApplyFailed"
    assert conditions(kube)["Degraded"]["status"] == "True"
    assert "x-engine" in kube.objects[CR_KEY]["status"]["lastError"]
    assert ("Warning", "ReconcileFailed") in kube.events
    kube.fail_apply.clear()
    recovered = await reconciler.reconcile(cr(kube))
    assert recovered.result is Result.APPLIED
    assert "lastError" not in kube.objects[CR_KEY]["status"]


async def test_hibernate_scales_apps_to_zero_and_reports_hibernated(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(kube))
    edit_spec(kube, hibernate=True)
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    outcome = await reconciler.reconcile(cr(kube))
    assert kube.objects[ENGINE]["spec"]["replicas"] == 0
    assert outcome.phase == "Hibernated"


async def test_phase_changes_are_recorded_as_events(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    await reconciler.reconcile(cr(kube))
    assert ("Normal", "PhaseChanged") in kube.events


async def test_a_stale_body_from_before_our_own_status_write_causes_no_second_write(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    stale = cr(kube)
    await reconciler.reconcile(stale)
    kube.writes.clear()
    await reconciler.reconcile(stale)
    assert [w for w in kube.writes if w[0] == "patch-status"] == []


async def test_handing_replicas_to_an_hpa_keeps_the_current_count(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    edit_spec(kube, engine={"replicas": 3})
    await reconciler.reconcile(cr(kube))
    edit_spec(kube, engine={"autoscaling": True})
    await reconciler.reconcile(cr(kube))
    assert kube.objects[ENGINE]["spec"]["replicas"] == 3


async def test_the_replica_hand_off_happens_once(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(kube))
    edit_spec(kube, engine={"autoscaling": True})
    await reconciler.reconcile(cr(kube))
    kube.writes.clear()
    edit_spec(kube, engine={"autoscaling": True}, version="2")
    await reconciler.reconcile(cr(kube))
    assert kube.writes.count(("apply", "Deployment", "x-engine")) <= 1


async def test_a_restarted_operator_does_not_repeat_pause_and_error_events(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    edit_spec(kube, paused=True)
    await reconciler.reconcile(cr(kube))
    restarted = Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=lambda: "T")
    kube.events.clear()
    await restarted.reconcile(cr(kube))
    assert kube.events == []


async def test_a_failing_list_is_reported_not_raised(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    async def refuse(**_: Any) -> list[dict[str, Any]]:
        raise KubeError("GET deployments: 403 Forbidden: no list", status=403)

    kube.list = refuse  # type: ignore[method-assign]
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.result is Result.ERROR
    assert "403" in kube.objects[CR_KEY]["status"]["lastError"]


async def test_a_cluster_deleted_mid_pass_does_not_crash_the_pass(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    body = cr(kube)
    del kube.objects[CR_KEY]
    outcome = await reconciler.reconcile(body)
    assert not outcome.status_written


def ticking_clock() -> Callable[[], str]:
    ticks = itertools.count()
    return lambda: f"2026-01-01T00:00:{next(ticks):02d}Z"


async def test_a_late_watch_event_of_our_own_earlier_write_neither_writes_nor_moves_times(
    kube: FakeKube,
) -> None:
    reconciler = Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=ticking_clock())
    before_any_write = cr(kube)
    await reconciler.reconcile(before_any_write)
    progressing = cr(kube)
    make_ready(kube)
    # The watch has not delivered our first write yet: the pass runs on the older body.
    await reconciler.reconcile(before_any_write)
    ready = copy.deepcopy(conditions(kube)["Ready"])
    assert ready["status"] == "True"
    kube.writes.clear()
    # Now the watch delivers our first write (Ready=False) late.
    outcome = await reconciler.reconcile(progressing)
    assert not outcome.status_written
    assert kube.writes == []
    assert conditions(kube)["Ready"] == ready


async def test_a_condition_keeps_its_transition_time_while_its_status_holds(
    kube: FakeKube,
) -> None:
    reconciler = Reconciler(kube=kube, blueprint=FakeBlueprint(), clock=ticking_clock())
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    await reconciler.reconcile(cr(kube))
    ready_since = conditions(kube)["Ready"]["lastTransitionTime"]
    edit_spec(kube, version="2")
    await reconciler.reconcile(cr(kube))
    assert conditions(kube)["Ready"]["status"] == "True"
    assert conditions(kube)["Ready"]["lastTransitionTime"] == ready_since


async def test_a_terminating_namespace_stops_the_cluster_without_retries_and_logs_once(
    kube: FakeKube, reconciler: Reconciler, caplog: pytest.LogCaptureFixture
) -> None:
    await reconciler.reconcile(cr(kube))
    kube.terminating = True
    del kube.objects[ENGINE]
    kube.writes.clear()
    kube.events.clear()
    caplog.set_level(logging.INFO, logger="srvthreds_operator.reconcile")
    first = await reconciler.reconcile(cr(kube))
    second = await reconciler.reconcile(cr(kube))
    assert (first.result, second.result) == (Result.TERMINATING, Result.TERMINATING)
    assert kube.writes == [("apply", "Deployment", "x-engine")]
    assert kube.events == []
    stops = [r for r in caplog.records if "terminating" in r.getMessage()]
    assert [r.levelno for r in stops] == [logging.INFO]


async def test_a_cluster_being_deleted_is_not_reconciled(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    body = cr(kube)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = await reconciler.reconcile(body)
    assert outcome.result is Result.TERMINATING
    assert kube.writes == []


async def test_a_kind_whose_crd_is_missing_is_skipped_once_warned_and_created_later(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    monitor: ChildKey = ("monitoring.coreos.com/v1", "ServiceMonitor", "ns", "x-engine")
    kube.unserved.add("ServiceMonitor")
    edit_spec(kube, monitoring=True)
    await reconciler.reconcile(cr(kube))
    make_ready(kube)
    outcome = await reconciler.reconcile(cr(kube))
    assert (outcome.result, outcome.phase) == (Result.APPLIED, "Ready")
    succeeded = conditions(kube)["ReconcileSucceeded"]
    assert succeeded["status"] == "True"
    assert (
        "ServiceMonitor x-engine skipped: monitoring.coreos.com/v1 is not installed"
        in (succeeded["message"])
    )
    assert conditions(kube)["Degraded"]["status"] == "False"
    assert kube.events.count(("Warning", "OptionalKindMissing")) == 1
    kube.unserved.clear()
    created = await reconciler.reconcile(cr(kube))
    assert created.applied == (monitor,)
    assert conditions(kube)["ReconcileSucceeded"]["reason"] == "Applied"


async def test_a_new_autoscaled_workload_starts_at_the_hpa_floor_and_leaves_replicas_to_it(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    edit_spec(kube, engine={"autoscaling": {"minReplicas": 3}})
    await reconciler.reconcile(cr(kube))
    engine = kube.objects[ENGINE]
    assert engine["spec"]["replicas"] == 3
    assert not owns_field(engine, field_manager="srvthreds-operator", path=("spec", "replicas"))
    kube.writes.clear()
    await reconciler.reconcile(cr(kube))
    assert ("apply", "Deployment", "x-engine") not in kube.writes


async def test_an_autoscaled_workload_below_the_hpa_floor_is_not_ready(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    edit_spec(kube, engine={"autoscaling": {"minReplicas": 3}})
    await reconciler.reconcile(cr(kube))
    kube.objects[ENGINE]["spec"]["replicas"] = 1
    make_ready(kube)
    outcome = await reconciler.reconcile(cr(kube))
    assert outcome.phase == "Progressing"
    assert kube.objects[CR_KEY]["status"]["components"]["engine"]["desiredReplicas"] == 3
