"""The in-memory store: units (lock, load, commit), limits, deadlines, outbox and sessions."""

from __future__ import annotations

import asyncio

import pytest

from srvthreds_engine.adapters import memory
from srvthreds_engine.adapters.memory import LockTimeoutError, MemorySessionStore, MemoryThredStore
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.core.ids import NANOID_ALPHABET, event_id, nanoid, thred_id
from srvthreds_engine.core.thred import ReactionStore, Thred, ThredContext
from srvthreds_engine.ports import CreationLimits, PatternCounters, Session, ThredChange


def a_thred(thred_id: str, *, pattern: str = "p", participants: list[str] | None = None) -> Thred:
    return Thred(
        id=thred_id,
        patternId=pattern,
        startTime=0,
        lastUpdateTime=0,
        reactionStore=ReactionStore(reactionName="r", conditionState={}, startTime=0),
        thredContext=ThredContext(thredId=thred_id, participantIds=list(participants or [])),
    )


async def save(store: MemoryThredStore, change: ThredChange, *, work: str = "w") -> bool:
    async with store.unit(change.thred.id, work_key=work) as unit:
        return await unit.commit([change], outbox=())


async def test_a_commit_writes_the_thred_its_sets_deadline_and_participant_index() -> None:
    store = MemoryThredStore(clock=VirtualClock())
    thred = a_thred("t1", participants=["ann"])
    await save(store, ThredChange(thred, unbound=True, deadline_ms=50, participants_added=["ann"]))
    assert await store.get_thred("t1") == thred
    assert await store.unbound_thred_ids() == ["t1"]
    assert await store.participant_thred_ids("ann") == ["t1"]
    assert await store.due_thred_ids(50) == ["t1"]
    assert await store.due_thred_ids(49) == []
    await save(store, ThredChange(thred, ended=True))
    assert await store.get_thred("t1") is None
    assert await store.unbound_thred_ids() == []
    assert await store.participant_thred_ids("ann") == []
    assert await store.next_deadline_ms() is None


async def test_deadlines_come_out_earliest_first_and_follow_updates() -> None:
    store = MemoryThredStore(clock=VirtualClock())
    for name, due in (("a", 30), ("b", 10), ("c", 20)):
        await save(store, ThredChange(a_thred(name), deadline_ms=due))
    await save(store, ThredChange(a_thred("b"), deadline_ms=40))
    await save(store, ThredChange(a_thred("b"), deadline_ms=10))
    await save(store, ThredChange(a_thred("c"), deadline_ms=None))
    assert await store.next_deadline_ms() == 10
    assert await store.due_thred_ids(30) == ["b", "a"]
    assert await store.due_thred_ids(30) == ["b", "a"]
    assert await store.due_thred_ids(30, limit=1) == ["b"]


async def test_creation_limits_refuse_the_whole_commit_and_count_what_passes() -> None:
    clock = VirtualClock()
    store = MemoryThredStore(clock=clock)
    limits = CreationLimits("p", max_instances=1, interval_ms=0)
    async with store.unit("t1", work_key="w1", lock=False) as unit:
        assert await unit.commit([ThredChange(a_thred("t1"), create=limits)], outbox=())
    assert await store.get_counters("p") == PatternCounters(1, clock.now_ms())
    outbox = [OutboundMessage(event={"id": "m"}, to=["x"])]
    async with store.unit("t2", work_key="w2", lock=False) as unit:
        assert not await unit.commit([ThredChange(a_thred("t2"), create=limits)], outbox=outbox)
    assert await store.get_thred("t2") is None
    assert await store.outbox("w2") == []
    assert not await store.creation_done("w2", pattern_id="p")
    assert await store.creation_done("w1", pattern_id="p")
    await save(store, ThredChange(a_thred("t1"), ended=True))
    assert (await store.get_counters("p")).instances == 0


async def test_an_instance_interval_refuses_creations_until_it_passed() -> None:
    clock = VirtualClock()
    store = MemoryThredStore(clock=clock)
    limits = CreationLimits("p", interval_ms=100)
    for name, expected in (("t1", True), ("t2", False)):
        async with store.unit(name, work_key=name, lock=False) as unit:
            assert (
                await unit.commit([ThredChange(a_thred(name), create=limits)], outbox=())
                is expected
            )
    clock.advance(100)
    async with store.unit("t3", work_key="t3", lock=False) as unit:
        assert await unit.commit([ThredChange(a_thred("t3"), create=limits)], outbox=())


async def test_done_marks_and_the_outbox_until_settled() -> None:
    store = MemoryThredStore(clock=VirtualClock())
    message = OutboundMessage(event={"id": "m1"}, to=["x"])
    async with store.unit("t1", work_key="e1") as unit:
        assert not unit.done
        assert await unit.commit([ThredChange(a_thred("t1"))], outbox=[message], release=False)
    async with store.unit("t1", work_key="e1") as unit:
        assert unit.done
        assert await store.outbox("e1") == [message]
        await unit.settle()
    assert await store.outbox("e1") == []


async def test_a_commit_without_release_keeps_the_lock_until_settled() -> None:
    store = MemoryThredStore(clock=VirtualClock())
    order: list[str] = []

    async def first() -> None:
        async with store.unit("t", work_key="a") as unit:
            await unit.commit([ThredChange(a_thred("t"))], outbox=(), release=False)
            await asyncio.sleep(0)
            order.append("a published")
            await unit.settle()

    async def second() -> None:
        await asyncio.sleep(0)
        async with store.unit("t", work_key="b"):
            order.append("b in")

    await asyncio.gather(first(), second())
    assert order == ["a published", "b in"]


async def test_units_serialise_work_on_one_thred_in_arrival_order() -> None:
    store = MemoryThredStore(clock=VirtualClock())
    order: list[str] = []

    async def worker(name: str) -> None:
        async with store.unit("t", work_key=name):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(worker("a"), worker("b"), worker("c"))
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]


async def test_a_held_thred_lock_times_out_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "LOCK_TIMEOUT_S", 0.01)
    store = MemoryThredStore(clock=VirtualClock())
    async with store.unit("t", work_key="a"):
        with pytest.raises(LockTimeoutError, match="Thred:t"):
            async with store.unit("t", work_key="b"):
                pass
    # The waiter that gave up never gets the lock: the key is free again.
    async with store.unit("t", work_key="c"):
        pass


async def test_sessions_replace_a_session_on_the_same_node() -> None:
    sessions = MemorySessionStore()
    await sessions.add_session(Session("alice", "n1", ["admin"]))
    await sessions.add_session(Session("alice", "n1", []))
    await sessions.add_session(Session("alice", "n2", ["x"]))
    assert [s.roles for s in await sessions.sessions_for("alice")] == [[], ["x"]]
    assert await sessions.participants_with_sessions() == ["alice"]


def test_ids_do_not_repeat_across_pool_refills() -> None:
    made = [nanoid() for _ in range(1000)]
    assert len(set(made)) == len(made)
    assert all(len(item) == 21 for item in made)


def test_ids_use_the_nanoid_alphabet() -> None:
    assert len(nanoid()) == 21
    assert set(nanoid(500)) <= set(NANOID_ALPHABET)
    assert event_id().startswith("evt")
    assert len(event_id()) == 24
    assert thred_id("p").startswith("p_")
