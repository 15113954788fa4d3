"""Pure status computation: observed children in, phase, conditions and component counts out."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_ERROR_LENGTH = 1024
"""lastError is bounded so a huge API error body can never bloat the CR."""

Manifest = dict[str, Any]

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})
APP_COMPONENTS = ("engine", "sessionAgent", "persistenceAgent")


class Phase(enum.StrEnum):
    """The one-word summary shown by `kubectl get stc`."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    PAUSED = "Paused"
    HIBERNATED = "Hibernated"
    FAILED = "Failed"


class ConditionType(enum.StrEnum):
    """Every condition the operator maintains on the CR."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    BROKERS_READY = "BrokersReady"
    RECONCILE_SUCCEEDED = "ReconcileSucceeded"
    PAUSED = "Paused"


@dataclasses.dataclass(frozen=True)
class WorkloadObservation:
    """What one Deployment or StatefulSet reports, reduced to what the phase needs."""

    name: str
    component: str
    kind: str
    desired: int
    replicas: int
    ready: int
    updated: int
    generation: int
    observed_generation: int
    deadline_exceeded: bool = False
    broker: bool = False

    @property
    def settled(self) -> bool:
        """True when the controller has seen the latest template and every pod matches it."""
        return (
            self.observed_generation >= self.generation
            and self.updated >= self.desired
            and self.ready >= self.desired
            and self.replicas <= self.desired
        )


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a reconcile pass stopped: a refused spec or a failed API call."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything the status is computed from; built by the reconciler, no I/O here."""

    generation: int
    workloads: Sequence[WorkloadObservation] = ()
    paused_by: str | None = None
    hibernate: bool = False
    problem: Problem | None = None
    spec_invalid: bool = False
    engine_selector: str | None = None
    endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    skipped: Sequence[str] = ()
    """Why optional children were not applied (e.g. "ServiceMonitor skipped: ... not installed")."""
    retries: int = 0
    """Failed passes in a row, this one included; each failure schedules a retry with back-off."""


def observe_workload(
    live: Mapping[str, Any], *, component: str, broker: bool = False, floor: int = 0
) -> WorkloadObservation:
    """Reduce a live Deployment/StatefulSet to the counts the phase depends on.

    `floor` is the minReplicas of an HPA that scales this workload: until the HPA has raised the
    workload to it, the workload is not ready (the HPA acts only every 15 s or so).
    """
    metadata = live.get("metadata") or {}
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    desired = max(floor, int(spec.get("replicas", 1)))
    return WorkloadObservation(
        name=str(metadata.get("name", "")),
        component=component,
        kind=str(live.get("kind", "")),
        desired=desired,
        replicas=int(status.get("replicas", 0)),
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        generation=int(metadata.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        deadline_exceeded=_progress_deadline_exceeded(status.get("conditions") or []),
        broker=broker,
    )


def _progress_deadline_exceeded(conditions: Iterable[Mapping[str, Any]]) -> bool:
    return any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
    )


def compute_phase(observation: Observation) -> Phase:
    """The phase table: the first matching row wins."""
    table: list[tuple[bool, Phase]] = [
        (observation.spec_invalid, Phase.FAILED),
        (observation.paused_by is not None, Phase.PAUSED),
        (observation.problem is not None or _any_deadline_exceeded(observation), Phase.DEGRADED),
        (not observation.workloads, Phase.PENDING),
        (not all(w.settled for w in observation.workloads), Phase.PROGRESSING),
        (observation.hibernate, Phase.HIBERNATED),
    ]
    return next((phase for matches, phase in table if matches), Phase.READY)


def _any_deadline_exceeded(observation: Observation) -> bool:
    return any(w.deadline_exceeded for w in observation.workloads)


def _brokers(observation: Observation) -> list[WorkloadObservation]:
    return [w for w in observation.workloads if w.broker]


def _apps(observation: Observation) -> list[WorkloadObservation]:
    return [w for w in observation.workloads if not w.broker]


def _names(workloads: Iterable[WorkloadObservation]) -> str:
    return ", ".join(sorted(w.name for w in workloads))


@dataclasses.dataclass(frozen=True)
class _Verdict:
    status: bool
    reason: str
    message: str


def _ready_verdict(observation: Observation, phase: Phase) -> _Verdict:
    if phase is Phase.READY:
        message = _with_skipped("all workloads ready", observation)
        return _Verdict(status=True, reason="AllComponentsReady", message=message)
    if phase is Phase.HIBERNATED:
        return _Verdict(False, "Hibernated", "apps are scaled to zero; data is kept")
    waiting = [w for w in observation.workloads if not w.settled]
    if waiting:
        return _Verdict(False, "ComponentsNotReady", f"waiting for {_names(waiting)}")
    if observation.problem is not None:
        return _Verdict(False, observation.problem.reason, observation.problem.message)
    return _Verdict(False, "NoWorkloads", "no workloads observed yet")


def _progressing_verdict(observation: Observation) -> _Verdict:
    lagging = [w for w in observation.workloads if not w.settled]
    if lagging:
        return _Verdict(True, "RollingOut", f"rolling out {_names(lagging)}")
    return _Verdict(False, "UpToDate", "every workload runs the current template")


def _degraded_verdict(observation: Observation) -> _Verdict:
    if observation.problem is not None:
        return _Verdict(True, observation.problem.reason, observation.problem.message)
    stuck = [w for w in observation.workloads if w.deadline_exceeded]
    if stuck:
        return _Verdict(True, "ProgressDeadlineExceeded", f"stuck: {_names(stuck)}")
    return _Verdict(False, "AsExpected", "no problem observed")


def _brokers_verdict(observation: Observation) -> _Verdict:
    brokers = _brokers(observation)
    if not brokers:
        return _Verdict(True, "NoManagedBrokers", "all brokers are external")
    waiting = [w for w in brokers if not w.settled]
    if waiting:
        return _Verdict(False, "BrokersNotReady", f"waiting for {_names(waiting)}")
    return _Verdict(True, "AllBrokersReady", f"ready: {_names(brokers)}")


def _reconcile_verdict(observation: Observation) -> _Verdict:
    if observation.problem is not None:
        return _Verdict(False, observation.problem.reason, observation.problem.message)
    if observation.skipped:
        message = _with_skipped("every other desired child is applied", observation)
        return _Verdict(True, "AppliedWithSkips", message)
    return _Verdict(True, "Applied", "every desired child is applied")


def _with_skipped(message: str, observation: Observation) -> str:
    if not observation.skipped:
        return message
    return f"{message}; {'; '.join(observation.skipped)}"


def _paused_verdict(observation: Observation) -> _Verdict:
    if observation.paused_by is not None:
        return _Verdict(True, "ReconciliationPaused", f"paused by {observation.paused_by}")
    return _Verdict(False, "Reconciling", "changes are applied")


def _verdicts(observation: Observation, phase: Phase) -> dict[ConditionType, _Verdict]:
    return {
        ConditionType.READY: _ready_verdict(observation, phase),
        ConditionType.PROGRESSING: _progressing_verdict(observation),
        ConditionType.DEGRADED: _degraded_verdict(observation),
        ConditionType.BROKERS_READY: _brokers_verdict(observation),
        ConditionType.RECONCILE_SUCCEEDED: _reconcile_verdict(observation),
        ConditionType.PAUSED: _paused_verdict(observation),
    }


def compute_conditions(
    observation: Observation,
    *,
    phase: Phase,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    """Conditions in a fixed order; lastTransitionTime moves only when a status flips."""
    before = {str(c.get("type")): c for c in previous}
    conditions = []
    for kind, verdict in _verdicts(observation, phase).items():
        status = "True" if verdict.status else "False"
        old = before.get(kind.value)
        transitioned = old is None or old.get("status") != status
        conditions.append(
            {
                "type": kind.value,
                "status": status,
                "reason": verdict.reason,
                "message": bound(verdict.message),
                "observedGeneration": observation.generation,
                "lastTransitionTime": now
                if transitioned or old is None
                else old.get("lastTransitionTime", now),
            }
        )
    return conditions


def compute_components(observation: Observation) -> dict[str, dict[str, int]]:
    """Per-app replica counts; engine.replicas backs the scale subresource."""
    components: dict[str, dict[str, int]] = {}
    for workload in _apps(observation):
        if workload.component not in APP_COMPONENTS:
            continue
        components[workload.component] = {
            "desiredReplicas": workload.desired,
            "replicas": workload.replicas,
            "readyReplicas": workload.ready,
            "updatedReplicas": workload.updated,
        }
    return components


def bound(text: str, *, limit: int = MAX_ERROR_LENGTH) -> str:
    """Cut text to the limit, saying so, so the reader knows it was cut."""
    if len(text) <= limit:
        return text
    marker = "... (truncated)"
    return text[: limit - len(marker)] + marker


def compute_status(
    observation: Observation,
    *,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The whole status (without lastReconcileTime): what the reconciler compares and writes.

    lastError and retries are None when there is no error so that a merge patch removes stale ones.
    """
    phase = compute_phase(observation)
    status: dict[str, Any] = {
        "observedGeneration": observation.generation,
        "phase": phase.value,
        "conditions": compute_conditions(
            observation, phase=phase, previous=previous.get("conditions") or [], now=now
        ),
        "components": compute_components(observation),
        "endpoints": dict(observation.endpoints),
        "lastError": bound(observation.problem.message) if observation.problem else None,
        "retries": observation.retries or None,
    }
    if observation.engine_selector is not None:
        status["engineSelector"] = observation.engine_selector
    return status


def status_differs(computed: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether writing `computed` would change `stored` (None means absent, as in a merge patch)."""
    for key, value in computed.items():
        if value is None:
            if stored.get(key) is not None:
                return True
        elif stored.get(key) != value:
            return True
    return False
