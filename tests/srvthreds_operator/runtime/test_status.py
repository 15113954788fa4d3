"""Phase table, condition transitions and observedGeneration of the pure status computation."""

from __future__ import annotations

import pytest

from srvthreds_operator.status import (
    MAX_ERROR_LENGTH,
    Observation,
    Phase,
    Problem,
    WorkloadObservation,
    compute_phase,
    compute_status,
    observe_workload,
    status_differs,
)


def workload(
    *,
    component: str = "engine",
    desired: int = 2,
    ready: int = 2,
    updated: int = 2,
    replicas: int | None = None,
    generation: int = 1,
    observed: int = 1,
    broker: bool = False,
    stuck: bool = False,
) -> WorkloadObservation:
    return WorkloadObservation(
        name=f"x-{component}",
        component=component,
        kind="Deployment",
        desired=desired,
        replicas=desired if replicas is None else replicas,
        ready=ready,
        updated=updated,
        generation=generation,
        observed_generation=observed,
        deadline_exceeded=stuck,
        broker=broker,
    )


READY_SET = (workload(), workload(component="redis", desired=1, ready=1, updated=1, broker=True))


@pytest.mark.parametrize(
    ("observation", "phase"),
    [
        (Observation(generation=1), Phase.PENDING),
        (Observation(generation=1, workloads=READY_SET), Phase.READY),
        (Observation(generation=1, workloads=(workload(ready=1),)), Phase.PROGRESSING),
        (Observation(generation=1, workloads=(workload(updated=1),)), Phase.PROGRESSING),
        (Observation(generation=1, workloads=(workload(generation=2),)), Phase.PROGRESSING),
        (Observation(generation=1, workloads=(workload(replicas=3),)), Phase.PROGRESSING),
        (Observation(generation=1, workloads=(workload(stuck=True),)), Phase.DEGRADED),
        (
            Observation(generation=1, workloads=READY_SET, problem=Problem("ApplyFailed", "x")),
            Phase.DEGRADED,
        ),
        (Observation(generation=1, workloads=READY_SET, paused_by="spec.paused"), Phase.PAUSED),
        (
            Observation(
                generation=1, spec_invalid=True, problem=Problem("InvalidSpec", "spec.x: bad")
            ),
            Phase.FAILED,
        ),
        (
            Observation(
                generation=1,
                hibernate=True,
                workloads=(workload(desired=0, ready=0, updated=0),),
            ),
            Phase.HIBERNATED,
        ),
        (
            Observation(
                generation=1,
                hibernate=True,
                workloads=(workload(desired=0, ready=2, updated=0, replicas=2),),
            ),
            Phase.PROGRESSING,
        ),
    ],
)
def test_the_phase_table_picks_the_first_matching_row(
    observation: Observation, phase: Phase
) -> None:
    assert compute_phase(observation) is phase


def conditions_by_type(status: dict[str, object]) -> dict[str, dict[str, object]]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return {c["type"]: c for c in conditions}


def test_a_ready_cluster_reports_every_condition_at_the_current_generation() -> None:
    status = compute_status(
        Observation(generation=7, workloads=READY_SET), previous={}, now="2026-01-01T00:00:00Z"
    )
    conditions = conditions_by_type(status)
    assert status["observedGeneration"] == 7
    assert set(conditions) == {
        "Ready",
        "Progressing",
        "Degraded",
        "BrokersReady",
        "ReconcileSucceeded",
        "Paused",
    }
    assert all(c["observedGeneration"] == 7 for c in conditions.values())
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["BrokersReady"]["status"] == "True"
    assert status["lastError"] is None
    assert status["components"] == {
        "engine": {"desiredReplicas": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    }


def test_last_transition_time_moves_only_when_the_status_of_a_condition_flips() -> None:
    first = compute_status(
        Observation(generation=1, workloads=(workload(ready=0),)), previous={}, now="T1"
    )
    still_rolling = compute_status(
        Observation(generation=1, workloads=(workload(ready=1),)), previous=first, now="T2"
    )
    ready = compute_status(
        Observation(generation=2, workloads=(workload(),)), previous=still_rolling, now="T3"
    )
    assert conditions_by_type(still_rolling)["Ready"]["lastTransitionTime"] == "T1"
    assert conditions_by_type(still_rolling)["Ready"]["message"] == "waiting for x-engine"
    assert conditions_by_type(ready)["Ready"]["lastTransitionTime"] == "T3"
    assert conditions_by_type(ready)["Paused"]["lastTransitionTime"] == "T1"
    assert conditions_by_type(ready)["Paused"]["observedGeneration"] == 2


def test_an_invalid_spec_surfaces_the_field_in_reconcile_succeeded_and_last_error() -> None:
    problem = Problem("InvalidSpec", "spec.engine.replicas: must be >= 0")
    status = compute_status(
        Observation(generation=3, problem=problem, spec_invalid=True), previous={}, now="T"
    )
    succeeded = conditions_by_type(status)["ReconcileSucceeded"]
    assert status["phase"] == "Failed"
    assert succeeded["status"] == "False"
    assert succeeded["reason"] == "InvalidSpec"
    assert "spec.engine.replicas" in str(succeeded["message"])
    assert status["lastError"] == problem.message


def test_last_error_is_bounded() -> None:
    problem = Problem("ApplyFailed", "x" * 10_000)
    status = compute_status(Observation(generation=1, problem=problem), previous={}, now="T")
    assert len(status["lastError"]) == MAX_ERROR_LENGTH
    assert status["lastError"].endswith("(truncated)")


def test_managed_brokers_not_ready_make_brokers_ready_false() -> None:
    redis = workload(component="redis", desired=1, ready=0, updated=1, broker=True)
    status = compute_status(
        Observation(generation=1, workloads=(workload(), redis)), previous={}, now="T"
    )
    brokers = conditions_by_type(status)["BrokersReady"]
    assert brokers["status"] == "False"
    assert brokers["message"] == "waiting for x-redis"
    assert "redis" not in status["components"]


def test_observe_workload_reads_counts_and_the_progress_deadline() -> None:
    live = {
        "kind": "Deployment",
        "metadata": {"name": "x-engine", "generation": 4},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 3,
            "readyReplicas": 2,
            "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    observed = observe_workload(live, component="engine")
    assert (observed.desired, observed.ready, observed.updated) == (3, 2, 1)
    assert not observed.settled
    assert observed.deadline_exceeded


def test_status_differs_treats_none_as_absent() -> None:
    assert not status_differs({"phase": "Ready", "lastError": None}, {"phase": "Ready"})
    assert status_differs({"lastError": None}, {"lastError": "old"})
    assert status_differs({"phase": "Ready"}, {"phase": "Progressing"})


def test_an_hpa_floor_above_the_workload_replicas_keeps_it_unsettled() -> None:
    live = {
        "kind": "Deployment",
        "metadata": {"name": "x-engine", "generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
        },
    }
    observed = observe_workload(live, component="engine", floor=3)
    assert observed.desired == 3
    assert not observed.settled
    assert (
        observe_workload({**live, "spec": {"replicas": 4}}, component="engine", floor=3).desired
        == 4
    )


def test_skipped_optional_children_are_named_without_failing_the_reconcile() -> None:
    skipped = "ServiceMonitor x-engine skipped: monitoring.coreos.com/v1 is not installed"
    status = compute_status(
        Observation(generation=1, workloads=[workload()], skipped=[skipped]), previous={}, now="T"
    )
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Ready"
    assert conditions["ReconcileSucceeded"]["status"] == "True"
    assert skipped in conditions["ReconcileSucceeded"]["message"]
    assert skipped in conditions["Ready"]["message"]
    assert conditions["Degraded"]["status"] == "False"
    assert status["lastError"] is None
