"""Turns watch events into reconcile passes: latest body per cluster, triggers, resync, metrics.

Kept free of kopf so the trigger logic is tested directly; `handlers.py` only forwards to it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from srvthreds_operator import metrics
from srvthreds_operator.reconcile import KIND, Blueprint, InvalidSpecError, Reconciler, Result
from srvthreds_operator.workqueue import CoalescingQueue

ClusterKey = tuple[str, str]
"""(namespace, name) of a SrvThredsCluster."""
ObjectKey = tuple[str, str, str]
"""(namespace, kind, name) of a ConfigMap or Secret."""

logger = logging.getLogger(__name__)


def owning_cluster(body: Mapping[str, Any]) -> ClusterKey | None:
    """The SrvThredsCluster that owns a child, from its owner references."""
    metadata = body.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith("srvthreds.io/"):
            return str(metadata.get("namespace", "")), str(ref.get("name", ""))
    return None


class Dispatcher:
    """Holds the latest body of every cluster and feeds the coalescing queue."""

    def __init__(self, *, reconciler: Reconciler, blueprint: Blueprint) -> None:
        self._reconciler = reconciler
        self._blueprint = blueprint
        self._bodies: dict[ClusterKey, dict[str, Any]] = {}
        self._references: dict[ClusterKey, set[ObjectKey]] = {}
        self._phases: dict[ClusterKey, str] = {}
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
        self._bodies[key] = copy.deepcopy(dict(body))
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

    def _forget(self, key: ClusterKey) -> None:
        self._bodies.pop(key, None)
        self._references.pop(key, None)
        self._phases.pop(key, None)
        self._reconciler.forget(namespace=key[0], name=key[1])
        metrics.publish_phases(self._phases)

    async def _work(self, key: ClusterKey) -> None:
        body = self._bodies.get(key)
        if body is None:
            return
        started = time.perf_counter()
        try:
            outcome = await self._reconciler.reconcile(body)
        except Exception:
            metrics.RECONCILES.labels(result="crashed").inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(result=outcome.result.value).inc()
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
            logger.info(
                "reconciled %s/%s: %s, phase %s, applied %d, pruned %d",
                key[0],
                key[1],
                outcome.result.value,
                outcome.phase,
                len(outcome.applied),
                len(outcome.pruned),
            )
