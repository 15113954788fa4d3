"""The in-memory ports: deadlines, locks, counters and sessions."""

from __future__ import annotations

import asyncio

import pytest

from srvthreds_engine import memory
from srvthreds_engine.ids import NANOID_ALPHABET, event_id, nanoid, thred_id
from srvthreds_engine.memory import LockTimeoutError, MemoryStorage
from srvthreds_engine.ports import PatternCounters, Session


async def test_deadlines_come_out_earliest_first_and_follow_updates() -> None:
    storage = MemoryStorage()
    await storage.set_deadline("a", due_ms=30)
    await storage.set_deadline("b", due_ms=10)
    await storage.set_deadline("c", due_ms=20)
    await storage.set_deadline("b", due_ms=40)
    await storage.set_deadline("b", due_ms=10)
    await storage.set_deadline("c", due_ms=None)
    assert await storage.next_deadline_ms() == 10
    assert await storage.due_thred_ids(30) == ["b", "a"]
    assert await storage.due_thred_ids(30) == ["b", "a"]
    await storage.set_deadline("b", due_ms=None)
    assert await storage.next_deadline_ms() == 30
    await storage.delete_thred("a")
    assert await storage.next_deadline_ms() is None


async def test_a_held_lock_times_out_with_the_key_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "LOCK_TIMEOUT_S", 0.01)
    storage = MemoryStorage()
    async with storage.lock("Pattern:p"):
        with pytest.raises(LockTimeoutError, match="Pattern:p"):
            async with storage.lock("Pattern:p"):
                pass


async def test_locks_serialise_work_on_one_key() -> None:
    storage = MemoryStorage()
    order: list[str] = []

    async def worker(name: str) -> None:
        async with storage.lock("Thred:t"):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(worker("a"), worker("b"))
    assert order == ["a in", "a out", "b in", "b out"]


async def test_a_released_lock_goes_to_the_first_waiter_not_a_newcomer() -> None:
    storage = MemoryStorage()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def holder() -> None:
        async with storage.lock("Thred:t"):
            first_in.set()
            await release_first.wait()
            order.append("first out")

    async def worker(name: str) -> None:
        async with storage.lock("Thred:t"):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    first = asyncio.create_task(holder())
    await first_in.wait()
    waiting = asyncio.create_task(worker("waiter"))
    await asyncio.sleep(0)
    release_first.set()
    await first
    # The key was handed to the waiter on release: a newcomer now queues behind it.
    await asyncio.gather(waiting, worker("newcomer"))
    assert order == ["first out", "waiter in", "waiter out", "newcomer in", "newcomer out"]


async def test_a_waiter_that_timed_out_never_gets_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "LOCK_TIMEOUT_S", 0.01)
    storage = MemoryStorage()
    async with storage.lock("Pattern:p"):
        with pytest.raises(LockTimeoutError):
            async with storage.lock("Pattern:p"):
                pass
    async with storage.lock("Pattern:p"), storage.lock("Other:key"):
        pass
    # Released by everyone: the key is free again and no stale waiter holds it.
    async with storage.lock("Pattern:p"):
        pass


async def test_counters_and_sessions() -> None:
    storage = MemoryStorage()
    assert await storage.get_counters("p") == PatternCounters(0, None)
    await storage.set_counters("p", counters=PatternCounters(2, 5))
    assert await storage.get_counters("p") == PatternCounters(2, 5)
    await storage.add_session(Session("alice", "n1", ["admin"]))
    await storage.add_session(Session("alice", "n1", []))
    assert [s.roles for s in await storage.sessions_for("alice")] == [[]]
    assert await storage.participants_with_sessions() == ["alice"]


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
