"""Leader election on a coordination.k8s.io/v1 Lease: only the holder reconciles.

The decision is pure (`decide`); `LeaderElector` applies it through the Kube protocol with an
optimistic-concurrency replace, so two candidates racing for an expired Lease cannot both win:
the loser's replace fails with a conflict and it goes back to waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from srvthreds_operator.kube import ConflictError, Kube, KubeError

LEASE_NAME = "srvthreds-operator"
API_VERSION = "coordination.k8s.io/v1"

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
Sleep = Callable[[float], Awaitable[None]]


class Decision(enum.Enum):
    """What a candidate should do with the Lease it just read."""

    CREATE = "create"
    RENEW = "renew"
    TAKE_OVER = "take-over"
    WAIT = "wait"


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """The Lease fields the decision needs."""

    holder: str | None
    renew_time: datetime.datetime | None
    duration_seconds: int


def parse_time(value: str | None) -> datetime.datetime | None:
    """metav1.MicroTime/Time to an aware datetime."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime.datetime) -> str:
    """An aware datetime as metav1.MicroTime."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_state(lease: Mapping[str, Any] | None) -> LeaseState | None:
    """The decision's view of a Lease object."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseState(
        holder=spec.get("holderIdentity") or None,
        renew_time=parse_time(spec.get("renewTime")),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
    )


def decide(state: LeaseState | None, *, identity: str, now: datetime.datetime) -> Decision:
    """Create a missing Lease, renew our own, take over a released or expired one, else wait."""
    if state is None:
        return Decision.CREATE
    if state.holder == identity:
        return Decision.RENEW
    if state.holder is None or state.renew_time is None:
        return Decision.TAKE_OVER
    expiry = state.renew_time + datetime.timedelta(seconds=state.duration_seconds)
    return Decision.TAKE_OVER if now >= expiry else Decision.WAIT


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Acquires, renews and releases the Lease for one identity."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        lease_seconds: int = 30,
        renew_seconds: float = 10.0,
        retry_seconds: float = 5.0,
        clock: Clock = _utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._identity = identity
        self._name = name
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._sleep = sleep

    @property
    def identity(self) -> str:
        """Who this candidate is (holderIdentity)."""
        return self._identity

    async def try_acquire(self) -> bool:
        """One attempt: True when we hold the Lease afterwards."""
        lease = await self._kube.get(
            api_version=API_VERSION, kind="Lease", namespace=self._namespace, name=self._name
        )
        now = self._clock()
        decision = decide(lease_state(lease), identity=self._identity, now=now)
        if decision is Decision.WAIT:
            return False
        try:
            if decision is Decision.CREATE:
                await self._kube.create(self._manifest(now=now, acquired=True, base=None))
            else:
                acquired = decision is Decision.TAKE_OVER
                await self._kube.replace(self._manifest(now=now, acquired=acquired, base=lease))
        except ConflictError:
            return False
        if decision is not Decision.RENEW:
            logger.info("acquired the leader lease %s/%s", self._namespace, self._name)
        return True

    async def acquire(self) -> None:
        """Wait (doing nothing else) until we hold the Lease."""
        while True:
            try:
                if await self.try_acquire():
                    return
            except KubeError as error:
                logger.warning("leader election: %s", error)
            await self._sleep(self._retry_seconds)

    async def hold(self) -> None:
        """Renew until a renewal fails for longer than the lease lasts; then return (lost)."""
        last_renewal = self._clock()
        while True:
            await self._sleep(self._renew_seconds)
            try:
                if await self.try_acquire():
                    last_renewal = self._clock()
                    continue
                logger.error("leader lease %s was taken by another replica", self._name)
                return
            except KubeError as error:
                logger.warning("leader lease renewal failed: %s", error)
            deadline = self._lease_seconds - self._renew_seconds
            if (self._clock() - last_renewal).total_seconds() >= deadline:
                logger.error("could not renew the leader lease in time; stepping down")
                return

    async def release(self) -> None:
        """Give the Lease up on graceful shutdown so a standby takes over at once."""
        try:
            lease = await self._kube.get(
                api_version=API_VERSION, kind="Lease", namespace=self._namespace, name=self._name
            )
            state = lease_state(lease)
            if lease is None or state is None or state.holder != self._identity:
                return
            released = self._manifest(now=self._clock(), acquired=False, base=lease)
            released["spec"]["holderIdentity"] = None
            await self._kube.replace(released)
        except KubeError as error:
            logger.warning("could not release the leader lease: %s", error)

    def _manifest(
        self, *, now: datetime.datetime, acquired: bool, base: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        spec: dict[str, Any] = {}
        if base is not None:
            metadata["resourceVersion"] = (base.get("metadata") or {}).get("resourceVersion")
            spec = dict(base.get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        spec.update(
            holderIdentity=self._identity,
            leaseDurationSeconds=self._lease_seconds,
            renewTime=format_time(now),
        )
        if acquired:
            spec["acquireTime"] = format_time(now)
            spec["leaseTransitions"] = transitions + (1 if base is not None else 0)
        return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}
