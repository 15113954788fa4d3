"""Leader election: the pure decision table and the elector against a fake Lease store and clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from srvthreds_operator.kube import KubeError
from srvthreds_operator.leader import (
    Decision,
    LeaderElector,
    LeaseState,
    RecordObserver,
    decide,
    format_time,
    parse_time,
)

from .fakes import FakeKube

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
LEASE = ("coordination.k8s.io/v1", "Lease", "ops", "srvthreds-operator")


@pytest.mark.parametrize(
    ("state", "unchanged_for", "decision"),
    [
        (None, 0.0, Decision.CREATE),
        (LeaseState("me", 30), 999.0, Decision.RENEW),
        (LeaseState(None, 30), 0.0, Decision.TAKE_OVER),
        (LeaseState("other", 30), 29.9, Decision.WAIT),
        (LeaseState("other", 30), 30.0, Decision.TAKE_OVER),
    ],
)
def test_the_lease_decision_table(
    state: LeaseState | None, unchanged_for: float, decision: Decision
) -> None:
    assert decide(state, identity="me", unchanged_for=unchanged_for) is decision


def test_the_observer_counts_from_the_last_change_of_the_record_on_the_local_clock() -> None:
    now = [100.0]
    observer = RecordObserver(monotonic=lambda: now[0])
    first = LeaseState("other", 30, record=(("renewTime", "a"),))
    assert observer.observe(first) == 0.0
    now[0] = 120.0
    assert observer.observe(first) == 20.0
    renewed = LeaseState("other", 30, record=(("renewTime", "b"),))
    assert observer.observe(renewed) == 0.0
    now[0] = 125.0
    assert observer.observe(renewed) == 5.0


def test_lease_times_round_trip_as_micro_time() -> None:
    assert format_time(T0) == "2026-01-01T00:00:00.000000Z"
    assert parse_time(format_time(T0)) == T0


class Clock:
    """A settable wall clock and monotonic clock; sleeping advances both, without real waiting."""

    def __init__(self) -> None:
        self.now = T0
        self.elapsed = 0.0

    def __call__(self) -> datetime.datetime:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)
        self.elapsed += seconds


def elector(kube: FakeKube, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        kube,
        namespace="ops",
        identity=identity,
        lease_seconds=30,
        renew_seconds=10,
        retry_seconds=5,
        clock=clock,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )


async def test_only_one_of_two_candidates_holds_the_lease() -> None:
    kube, clock = FakeKube(), Clock()
    first, second = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert await first.try_acquire()
    assert not await second.try_acquire()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "a"


async def test_a_standby_takes_over_only_after_the_lease_expires() -> None:
    kube, clock = FakeKube(), Clock()
    assert await elector(kube, clock, "a").try_acquire()
    await elector(kube, clock, "b").acquire()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "b"
    assert clock.now - T0 >= datetime.timedelta(seconds=30)
    assert kube.objects[LEASE]["spec"]["leaseTransitions"] == 1


async def test_a_released_lease_is_taken_at_once() -> None:
    kube, clock = FakeKube(), Clock()
    leader = elector(kube, clock, "a")
    assert await leader.try_acquire()
    await leader.release()
    assert await elector(kube, clock, "b").try_acquire()


async def test_a_leader_whose_lease_was_taken_steps_down() -> None:
    kube, clock = FakeKube(), Clock()
    leader = elector(kube, clock, "a")
    assert await leader.try_acquire()
    kube.objects[LEASE]["spec"]["holderIdentity"] = "usurper"
    await leader.hold()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "usurper"


class RacyKube(FakeKube):
    """Another candidate writes the Lease between our read and our replace."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        found = await super().get(
            api_version=api_version, kind=kind, namespace=namespace, name=name
        )
        if found is not None:
            self.put(self.objects[LEASE])
        return found


async def test_a_racing_candidate_loses_on_the_resource_version_conflict() -> None:
    kube, clock = RacyKube(), Clock()
    assert await elector(kube, clock, "a").try_acquire()
    standby = elector(kube, clock, "b")
    assert not await standby.try_acquire()
    await clock.sleep(31)
    assert not await standby.try_acquire()
    assert ("update", "Lease", "srvthreds-operator") in kube.writes
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "a"


def skewed_lease(renew_time: datetime.datetime) -> dict[str, Any]:
    """A Lease held by "skewed", whose node's wall clock is far from ours."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "srvthreds-operator", "namespace": "ops"},
        "spec": {
            "holderIdentity": "skewed",
            "leaseDurationSeconds": 30,
            "acquireTime": format_time(renew_time),
            "renewTime": format_time(renew_time),
            "leaseTransitions": 0,
        },
    }


def renew(kube: FakeKube, *, renew_time: datetime.datetime) -> None:
    """The skewed holder renews: a new renewTime by its own (wrong) clock."""
    lease = kube.objects[LEASE]
    lease["spec"]["renewTime"] = format_time(renew_time)
    kube.put(lease)


@pytest.mark.parametrize("skew", [datetime.timedelta(days=-1), datetime.timedelta(days=1)])
async def test_a_skewed_holder_that_keeps_renewing_is_never_taken_over(
    skew: datetime.timedelta,
) -> None:
    kube, clock = FakeKube(), Clock()
    kube.put(skewed_lease(T0 + skew))
    standby = elector(kube, clock, "b")
    for renewal in range(1, 20):
        assert not await standby.try_acquire()
        await clock.sleep(10)
        renew(kube, renew_time=T0 + skew + datetime.timedelta(seconds=10 * renewal))
    assert not await standby.try_acquire()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "skewed"


@pytest.mark.parametrize("skew", [datetime.timedelta(days=-1), datetime.timedelta(days=1)])
async def test_a_skewed_holder_that_stops_renewing_is_taken_over_after_the_lease_duration(
    skew: datetime.timedelta,
) -> None:
    kube, clock = FakeKube(), Clock()
    kube.put(skewed_lease(T0 + skew))
    standby = elector(kube, clock, "b")
    assert not await standby.try_acquire()
    await clock.sleep(29)
    assert not await standby.try_acquire()
    await clock.sleep(1)
    assert await standby.try_acquire()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "b"
    assert kube.objects[LEASE]["spec"]["leaseTransitions"] == 1


class UnreachableKube(FakeKube):
    """An API server that stops answering once `down` is set."""

    down = False

    async def get(
        self, *, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        if self.down:
            raise KubeError("GET lease: connection refused")
        return await super().get(api_version=api_version, kind=kind, namespace=namespace, name=name)


async def test_the_leader_steps_down_by_the_monotonic_clock_when_renewals_fail() -> None:
    kube, clock = UnreachableKube(), Clock()
    leader = elector(kube, clock, "a")
    assert await leader.try_acquire()
    kube.down = True
    clock.now -= datetime.timedelta(days=1)
    await leader.hold()
    assert clock.elapsed == 20
