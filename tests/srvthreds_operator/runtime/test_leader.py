"""Leader election: the pure decision table and the elector against a fake Lease store and clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from srvthreds_operator.leader import (
    Decision,
    LeaderElector,
    LeaseState,
    decide,
    format_time,
    parse_time,
)

from .fakes import FakeKube

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
LEASE = ("coordination.k8s.io/v1", "Lease", "ops", "srvthreds-operator")


@pytest.mark.parametrize(
    ("state", "now", "decision"),
    [
        (None, T0, Decision.CREATE),
        (LeaseState("me", T0, 30), T0, Decision.RENEW),
        (LeaseState(None, T0, 30), T0, Decision.TAKE_OVER),
        (LeaseState("other", T0, 30), T0 + datetime.timedelta(seconds=29), Decision.WAIT),
        (LeaseState("other", T0, 30), T0 + datetime.timedelta(seconds=30), Decision.TAKE_OVER),
        (LeaseState("other", None, 30), T0, Decision.TAKE_OVER),
    ],
)
def test_the_lease_decision_table(
    state: LeaseState | None, now: datetime.datetime, decision: Decision
) -> None:
    assert decide(state, identity="me", now=now) is decision


def test_lease_times_round_trip_as_micro_time() -> None:
    assert format_time(T0) == "2026-01-01T00:00:00.000000Z"
    assert parse_time(format_time(T0)) == T0


class Clock:
    """A settable clock; sleeping advances it, so loops run without real waiting."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def elector(kube: FakeKube, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        kube,
        namespace="ops",
        identity=identity,
        lease_seconds=30,
        renew_seconds=10,
        retry_seconds=5,
        clock=clock,
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
    clock.now += datetime.timedelta(seconds=31)
    assert not await elector(kube, clock, "b").try_acquire()
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "a"
