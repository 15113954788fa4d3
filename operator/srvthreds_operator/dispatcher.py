"""Turns watch events into reconcile passes: latest body per cluster, triggers, retries, resync.

Kept free of kopf so the trigger logic is tested directly; `handlers.py` only forwards to it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from srvthreds_operator import metrics
from srvthreds_operator.backoff import RandomSource, RetryPolicy
from srvthreds_operator.reconcile import (
    KIND,
    Blueprint,
    InvalidSpecError,
    Outcome,
    Reconciler,
    Result,
)
from srvthreds_operator.workqueue import CoalescingQueue

ClusterKey = tuple[str, str]
"""(namespace, name) of a SrvThredsCluster."""
ObjectKey = tuple[str, str, str]
"""(namespace, kind, name) of a ConfigMap or Secret."""
Sleep = Callable[[float], Awaitable[None]]

TRIGGERING_METADATA = ("uid", "generation", "labels", "annotations", "deletionTimestamp")
"""The metadata whose change is a reason to reconcile (the pause annotation, for one)."""

logger = logging.getLogger(__name__)


def owning_cluster(body: Mapping[str, Any]) -> ClusterKey | None:
    """The SrvThredsCluster that owns a child, from its owner references."""
    metadata = body.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith("srvthreds.io/"):
            return str(metadata.get("namespace", "")), str(ref.get("name", ""))
    return None


def only_status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when a CR event carries nothing to act on: the same spec and triggering metadata.

    Why: the operator's own status writes come back as MODIFIED events. Reconciling on each would
    turn a failing pass (whose status write changes `retries`) into a hot loop that makes the
    back-off pointless; spec and metadata changes, and the resync, still trigger passes.
    """
    if old is None:
        return False
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return old.get("spec") == new.get("spec") and all(
        old_meta.get(field) == new_meta.get(field) for field in TRIGGERING_METADATA
    )


class Dispatcher:
    """Holds the latest body of every cluster, feeds the coalescing queue and schedules retries.

    A failed pass (an API error, or a crash) is retried after `retry_policy.delay(failures)`,
    even when no event arrives; any pass that runs before then (an event, the resync) and
    succeeds cancels the retry, and one that fails again replaces it with a longer one.
    """

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        blueprint: Blueprint,
        retry_policy: RetryPolicy | None = None,
        rand: RandomSource = random.random,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._reconciler = reconciler
        self._blueprint = blueprint
        self._retry_policy = retry_policy or RetryPolicy()
        self._rand = rand
        self._sleep = sleep
        self._bodies: dict[ClusterKey, dict[str, Any]] = {}
        self._references: dict[ClusterKey, set[ObjectKey]] = {}
        self._phases: dict[ClusterKey, str] = {}
        self._crashes: dict[ClusterKey, int] = {}
        self._retries: dict[ClusterKey, asyncio.Task[None]] = {}
        self.queue: CoalescingQueue[ClusterKey] = CoalescingQueue(self._work)

    @property
    def clusters(self) -> list[ClusterKey]:
        """Every cluster seen and not deleted."""
        return sorted(self._bodies)

    def cluster_event(self, *, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A SrvThredsCluster was listed, added, modified or deleted."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            # Children go by owner-reference garbage collection; nothing to do but forget.
            self._forget(key)
            return
        quiet = only_status_changed(self._bodies.get(key), body) and event_type is not None
        self._bodies[key] = copy.deepcopy(dict(body))
        if quiet:
            return
        self._references[key] = self._referenced_by(body, namespace=key[0])
        self.queue.enqueue(key)

    def child_event(self, *, body: Mapping[str, Any]) -> None:
        """A child changed (status, drift, deletion): reconcile its owner."""
        key = owning_cluster(body)
        if key is not None and key in self._bodies:
            self.queue.enqueue(key)

    def referenced_event(self, *, kind: str, body: Mapping[str, Any]) -> None:
        """A ConfigMap or Secret changed: reconcile its owner and each cluster whose pods use it."""
        self.child_event(body=body)
        metadata = body.get("metadata") or {}
        target = (str(metadata.get("namespace", "")), kind, str(metadata.get("name", "")))
        for key, references in list(self._references.items()):
            if target in references:
                self.queue.enqueue(key)

    def resync(self) -> None:
        """Enqueue every known cluster (the periodic level-based safety net)."""
        for key in self.clusters:
            self.queue.enqueue(key)

    async def resync_forever(
        self, *, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Resync every interval seconds until cancelled.

        NB: deliberately not a kopf timer: kopf puts a finalizer on every object with a timer
        (kopf #833, #1001), and a finalizer blocks deletion whenever the operator is down.
        """
        while True:
            await sleep(interval)
            self.resync()

    def _referenced_by(self, body: Mapping[str, Any], *, namespace: str) -> set[ObjectKey]:
        try:
            cluster = self._blueprint.parse(body)
        except InvalidSpecError:
            return set()
        return {
            (namespace, kind, name) for kind, name in self._blueprint.referenced_objects(cluster)
        }

    @property
    def pending_retries(self) -> list[ClusterKey]:
        """Clusters with a retry scheduled."""
        return sorted(self._retries)

    async def stop(self) -> None:
        """Cancel scheduled retries and running passes (shutdown)."""
        for key in list(self._retries):
            self._cancel_retry(key)
        await self.queue.cancel()

    def _schedule_retry(self, key: ClusterKey, *, failures: int) -> None:
        delay = self._retry_policy.delay(failures, rand=self._rand)
        self._cancel_retry(key)
        self._retries[key] = asyncio.create_task(
            self._retry_after(key, delay=delay), name=f"retry {key}"
        )
        metrics.RECONCILE_RETRIES.inc()
        logger.info(
            "retrying %s/%s in %.1f s (failure %d in a row)", key[0], key[1], delay, failures
        )

    async def _retry_after(self, key: ClusterKey, *, delay: float) -> None:
        await self._sleep(delay)
        self._retries.pop(key, None)
        if key in self._bodies:
            self.queue.enqueue(key)

    def _cancel_retry(self, key: ClusterKey) -> None:
        task = self._retries.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _forget(self, key: ClusterKey) -> None:
        self._bodies.pop(key, None)
        self._references.pop(key, None)
        self._phases.pop(key, None)
        self._crashes.pop(key, None)
        self._cancel_retry(key)
        self._reconciler.forget(namespace=key[0], name=key[1])
        metrics.publish_phases(self._phases)
        metrics.publish_failures(namespace=key[0], cluster=key[1], failures=0)

    async def _work(self, key: ClusterKey) -> None:
        body = self._bodies.get(key)
        if body is None:
            return
        started = time.perf_counter()
        try:
            outcome = await self._reconciler.reconcile(body)
        except Exception:
            metrics.RECONCILES.labels(result="crashed").inc()
            self._crashed(key)
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(result=outcome.result.value).inc()
        self._crashes.pop(key, None)
        self._account(key, outcome=outcome)
        if outcome.result is Result.TERMINATING:
            # Going away with its namespace: child events must not trigger passes any more; the
            # reconciler keeps its memory so a late CR event costs one no-op pass, not a retry.
            self._bodies.pop(key, None)
            self._references.pop(key, None)
            self._phases.pop(key, None)
            metrics.publish_phases(self._phases)
            return
        if key in self._bodies:
            self._phases[key] = outcome.phase
        metrics.publish_phases(self._phases)
        if outcome.applied or outcome.pruned or outcome.result is not Result.APPLIED:
            self._log(key, outcome=outcome)

    def _crashed(self, key: ClusterKey) -> None:
        """A pass raised (a bug, or an error outside the Kube seam): retry it like a failure."""
        failures = self._crashes.get(key, 0) + 1
        self._crashes[key] = failures
        metrics.RECONCILE_ERRORS.labels(reason="Crashed").inc()
        metrics.publish_failures(namespace=key[0], cluster=key[1], failures=failures)
        if key in self._bodies:
            self._schedule_retry(key, failures=failures)

    def _account(self, key: ClusterKey, *, outcome: Outcome) -> None:
        """Schedule a retry after a failed pass; any other ending cancels a pending one."""
        metrics.publish_failures(namespace=key[0], cluster=key[1], failures=outcome.failures)
        if outcome.result is not Result.ERROR or not outcome.failures:
            self._cancel_retry(key)
            return
        metrics.RECONCILE_ERRORS.labels(reason=outcome.error_reason or "Unknown").inc()
        if key in self._bodies:
            self._schedule_retry(key, failures=outcome.failures)

    def _log(self, key: ClusterKey, *, outcome: Outcome) -> None:
        logger.info(
            "reconciled %s/%s: %s, phase %s, applied %d, pruned %d",
            key[0],
            key[1],
            outcome.result.value,
            outcome.phase,
            len(outcome.applied),
            len(outcome.pruned),
        )
