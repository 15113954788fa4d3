"""Leader election on a coordination.k8s.io/v1 Lease: only the holder reconciles.

The decision is pure (`decide`); `LeaderElector` applies it through the Kube protocol with an
optimistic-concurrency replace, so two candidates racing for an expired Lease cannot both win:
the loser's replace fails with a conflict and it goes back to waiting.

Expiry is judged as client-go's leaderelection does (observedRecord + observedTime): a candidate
remembers the Lease record it last saw and the local monotonic time at which that record last
CHANGED, and takes over only when it has not changed for leaseDurationSeconds. The holder's
wall-clock `renewTime` is never compared with the local clock, so clock skew between nodes can
neither make a live leader look expired (two leaders) nor keep a dead one looking alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from srvthreds_operator.kube import ConflictError, Kube, KubeError

LEASE_NAME = "srvthreds-operator"
API_VERSION = "coordination.k8s.io/v1"

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Decision(enum.Enum):
    """What a candidate should do with the Lease it just read."""

    CREATE = "create"
    RENEW = "renew"
    TAKE_OVER = "take-over"
    WAIT = "wait"


RECORD_FIELDS = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)
"""The Lease spec fields that make up the election record; a renewal changes renewTime."""


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """The Lease fields the decision needs."""

    holder: str | None
    duration_seconds: int
    record: tuple[tuple[str, Any], ...] = ()
    """The election record (RECORD_FIELDS), compared between reads to see the holder renew."""


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
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        record=tuple((field, spec.get(field)) for field in RECORD_FIELDS),
    )


def decide(state: LeaseState | None, *, identity: str, unchanged_for: float) -> Decision:
    """Create a missing Lease, renew our own, take over a released or expired one, else wait.

    `unchanged_for` is how long, in local monotonic seconds, the record has been seen unchanged:
    the Lease has expired when the holder has not renewed it for its whole duration.
    """
    if state is None:
        return Decision.CREATE
    if state.holder == identity:
        return Decision.RENEW
    if state.holder is None:
        return Decision.TAKE_OVER
    return Decision.TAKE_OVER if unchanged_for >= state.duration_seconds else Decision.WAIT


class RecordObserver:
    """client-go's observedRecord/observedTime: when, locally, the Lease record last changed."""

    def __init__(self, *, monotonic: Monotonic = time.monotonic) -> None:
        self._monotonic = monotonic
        self._record: tuple[tuple[str, Any], ...] | None = None
        self._changed_at = 0.0

    def observe(self, state: LeaseState | None) -> float:
        """Seconds of local monotonic time for which the record has been seen unchanged.

        A record seen for the first time counts as just changed: a new candidate waits a whole
        lease duration before it may take over, however old the holder's renewTime claims to be.
        """
        now = self._monotonic()
        record = state.record if state is not None else None
        if record != self._record:
            self._record = record
            self._changed_at = now
        return now - self._changed_at


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
        monotonic: Monotonic = time.monotonic,
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
        self._monotonic = monotonic
        self._observer = RecordObserver(monotonic=monotonic)
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
        state = lease_state(lease)
        decision = decide(
            state, identity=self._identity, unchanged_for=self._observer.observe(state)
        )
        if decision is Decision.WAIT:
            return False
        now = self._clock()
        try:
            if decision is Decision.CREATE:
                written = await self._kube.create(self._manifest(now=now, acquired=True, base=None))
            else:
                acquired = decision is Decision.TAKE_OVER
                written = await self._kube.replace(
                    self._manifest(now=now, acquired=acquired, base=lease)
                )
        except ConflictError:
            return False
        # Our own write is a change of the record too (client-go sets observedTime on success).
        self._observer.observe(lease_state(written))
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
        last_renewal = self._monotonic()
        while True:
            await self._sleep(self._renew_seconds)
            try:
                if await self.try_acquire():
                    last_renewal = self._monotonic()
                    continue
                logger.error("leader lease %s was taken by another replica", self._name)
                return
            except KubeError as error:
                logger.warning("leader lease renewal failed: %s", error)
            deadline = self._lease_seconds - self._renew_seconds
            if self._monotonic() - last_renewal >= deadline:
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
