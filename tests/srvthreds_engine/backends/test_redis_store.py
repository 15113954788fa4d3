"""The Redis thred store, session store and pattern-changed pub/sub against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from srvthreds_engine.adapters.redis import (
    LockLostError,
    LockTimeoutError,
    RedisPatternChanges,
    RedisSessionStore,
    RedisThredStore,
    RoundTrips,
)
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.core.thred import ReactionStore, Thred, ThredContext
from srvthreds_engine.ports import (
    CreationLimits,
    PatternCounters,
    Session,
    SessionStore,
    ThredChange,
    ThredStore,
)
from tests.brokers.fixtures import RedisDb
from tests.brokers.procfs import free_port

pytestmark = pytest.mark.backends

START_MS = 1_767_225_600_000


@pytest.fixture
async def client(redis_db: RedisDb) -> AsyncIterator[Redis]:
    connection = Redis.from_url(redis_db.url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def other_client(redis_db: RedisDb) -> AsyncIterator[Redis]:
    """A second connection pool: what another engine process sees."""
    connection = Redis.from_url(redis_db.url)
    yield connection
    await connection.aclose()


@pytest.fixture
def prefix(redis_db: RedisDb) -> str:
    """Keys (and the pub/sub channel) under a prefix: the adapters' isolation is tested too."""
    return redis_db.key_prefix


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START_MS)


@pytest.fixture
def store(client: Redis, prefix: str, clock: VirtualClock) -> RedisThredStore:
    return RedisThredStore(client, clock=clock, prefix=prefix)


def as_ports(
    store: RedisThredStore, sessions: RedisSessionStore
) -> tuple[ThredStore, SessionStore]:
    """mypy checks here that the adapters satisfy the engine's protocols."""
    return store, sessions


def make_thred(
    thred_id: str,
    *,
    pattern_id: str = "p1",
    participants: list[str] | None = None,
    reaction: str = "r1",
) -> Thred:
    return Thred(
        id=thred_id,
        patternId=pattern_id,
        startTime=START_MS,
        lastUpdateTime=START_MS,
        reactionStore=ReactionStore(reactionName=reaction, conditionState={}, startTime=START_MS),
        thredContext=ThredContext(
            thredId=thred_id, scope={"n": 1}, participantIds=list(participants or [])
        ),
    )


def message(event_id: str, *, to: list[str]) -> OutboundMessage:
    return OutboundMessage(event={"id": event_id, "type": "org.wt.tell"}, to=to)


async def create(
    store: RedisThredStore,
    thred: Thred,
    *,
    work_key: str,
    limits: CreationLimits | None = None,
    unbound: bool = False,
    deadline_ms: int | None = None,
) -> bool:
    async with store.unit(thred.id, work_key=work_key, lock=False) as unit:
        change = ThredChange(
            thred,
            unbound=unbound,
            deadline_ms=deadline_ms,
            participants_added=list(thred.thredContext.participantIds),
            create=limits if limits is not None else CreationLimits(pattern_id=thred.patternId),
        )
        return await unit.commit([change], outbox=[])


# --- commit and load -------------------------------------------------------------------------


async def test_committed_thred_loads_back_identical(store: RedisThredStore) -> None:
    thred = make_thred("th1", participants=["alice", "bob"])
    async with store.unit("th1", work_key="e1", lock=False) as unit:
        assert unit.thred is None
        assert unit.done is False
        committed = await unit.commit(
            [ThredChange(thred, unbound=True, participants_added=["alice", "bob"])], outbox=[]
        )
    assert committed is True
    async with store.unit("th1", work_key="e2") as unit:
        assert unit.thred is not None
        assert unit.thred.stored() == thred.stored()
    stored = await store.get_thred("th1")
    assert stored is not None
    assert stored.stored() == thred.stored()


async def test_indexes_follow_a_saved_thred(store: RedisThredStore) -> None:
    await create(store, make_thred("b", participants=["alice"]), work_key="e1", unbound=True)
    await create(store, make_thred("a", participants=["alice", "bob"]), work_key="e2")
    assert [thred.id for thred in await store.list_threds()] == ["a", "b"]
    assert await store.count_threds() == 2
    assert await store.unbound_thred_ids() == ["b"]
    assert await store.participant_thred_ids("alice") == ["a", "b"]
    assert await store.participant_thred_ids("bob") == ["a"]
    assert await store.get_thred("missing") is None


async def test_saving_again_leaves_the_unbound_set(store: RedisThredStore) -> None:
    thred = make_thred("th1")
    await create(store, thred, work_key="e1", unbound=True)
    async with store.unit("th1", work_key="e2") as unit:
        assert await unit.commit([ThredChange(thred, unbound=False)], outbox=[])
    assert await store.unbound_thred_ids() == []


async def test_creation_counts_the_pattern(store: RedisThredStore, clock: VirtualClock) -> None:
    assert await store.get_counters("p1") == PatternCounters(0, None)
    assert await create(store, make_thred("th1"), work_key="e1")
    assert await store.get_counters("p1") == PatternCounters(1, START_MS)
    assert await store.creation_done("e1", pattern_id="p1") is True
    assert await store.creation_done("e1", pattern_id="p2") is False
    assert await store.creation_done("e2", pattern_id="p1") is False


# --- locks -----------------------------------------------------------------------------------


async def test_a_held_lock_excludes_another_store(
    store: RedisThredStore, other_client: Redis, prefix: str, clock: VirtualClock
) -> None:
    other = RedisThredStore(
        other_client, clock=clock, prefix=prefix, lock_tries=3, lock_retry_s=0.02
    )
    async with store.unit("th1", work_key="e1"):
        with pytest.raises(LockTimeoutError, match=f"{prefix}LCK:Thred:th1"):
            async with other.unit("th1", work_key="e2"):
                pass
    async with other.unit("th1", work_key="e2") as unit:
        assert unit.thred is None


async def test_concurrent_units_of_two_stores_serialise(
    client: Redis, other_client: Redis, prefix: str, clock: VirtualClock
) -> None:
    stores = [
        RedisThredStore(connection, clock=clock, prefix=prefix, lock_retry_s=0.01)
        for connection in (client, other_client)
    ]
    await create(stores[0], make_thred("th1"), work_key="e0")

    async def increment(store: RedisThredStore, work_key: str) -> None:
        async with store.unit("th1", work_key=work_key) as unit:
            assert unit.thred is not None
            unit.thred.thredContext.scope["n"] += 1
            await asyncio.sleep(0)
            assert await unit.commit([ThredChange(unit.thred)], outbox=[])

    await asyncio.gather(*(increment(stores[index % 2], f"e{index + 1}") for index in range(40)))
    stored = await stores[1].get_thred("th1")
    assert stored is not None
    assert stored.thredContext.scope["n"] == 41


async def test_a_lock_held_past_its_ttl_is_extended(
    client: Redis, other_client: Redis, prefix: str, clock: VirtualClock
) -> None:
    holder = RedisThredStore(client, clock=clock, prefix=prefix, lock_ttl_ms=300)
    other = RedisThredStore(
        other_client, clock=clock, prefix=prefix, lock_tries=2, lock_retry_s=0.02
    )
    async with holder.unit("th1", work_key="e1") as unit:
        await asyncio.sleep(1.0)
        assert await client.pttl(f"{prefix}LCK:Thred:th1") > 0
        with pytest.raises(LockTimeoutError):
            async with other.unit("th1", work_key="e2"):
                pass
        assert await unit.commit([ThredChange(make_thred("th1"))], outbox=[])
    assert await client.exists(f"{prefix}LCK:Thred:th1") == 0


async def test_a_stolen_lock_fails_the_old_owners_commit(
    store: RedisThredStore, client: Redis, other_client: Redis, prefix: str, clock: VirtualClock
) -> None:
    original = make_thred("th1", reaction="r1")
    await create(store, original, work_key="e0")
    other = RedisThredStore(other_client, clock=clock, prefix=prefix)
    lock_key = f"{prefix}LCK:Thred:th1"
    async with store.unit("th1", work_key="e1") as stale:
        # As if the owner had stalled past the TTL: the lock expires and another process takes it.
        await client.delete(lock_key)
        async with other.unit("th1", work_key="e2") as fresh:
            with pytest.raises(LockLostError, match="nothing was written"):
                await stale.commit(
                    [ThredChange(make_thred("th1", reaction="r2"), unbound=True)],
                    outbox=[message("m1", to=["alice"])],
                )
            stored = await store.get_thred("th1")
            assert stored is not None
            assert stored.reactionStore.reactionName == "r1"
            assert await store.unbound_thred_ids() == []
            assert await store.outbox("e1") == []
            async with store.unit("th1", work_key="e1", lock=False) as check:
                assert check.done is False
            assert await fresh.commit([ThredChange(make_thred("th1", reaction="r3"))], outbox=[])
    stored = await store.get_thred("th1")
    assert stored is not None
    assert stored.reactionStore.reactionName == "r3"


async def test_only_the_owner_releases_a_lock(
    store: RedisThredStore, client: Redis, prefix: str
) -> None:
    lock_key = f"{prefix}LCK:Thred:th1"
    async with store.unit("th1", work_key="e1"):
        await client.set(lock_key, "someone-else")
    assert await client.get(lock_key) == b"someone-else"


async def test_exit_without_commit_releases_the_lock(
    store: RedisThredStore, client: Redis, prefix: str
) -> None:
    async with store.unit("th1", work_key="e1"):
        assert await client.exists(f"{prefix}LCK:Thred:th1") == 1
    assert await client.exists(f"{prefix}LCK:Thred:th1") == 0


async def test_a_unit_without_lock_takes_none(
    store: RedisThredStore, client: Redis, prefix: str
) -> None:
    async with store.unit("th1", work_key="e1", lock=False):
        assert await client.exists(f"{prefix}LCK:Thred:th1") == 0


async def test_the_lock_is_held_until_exit_when_commit_does_not_release(
    client: Redis, prefix: str, clock: VirtualClock
) -> None:
    store = RedisThredStore(client, clock=clock, prefix=prefix, release_on_commit=False)
    async with store.unit("th1", work_key="e1") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"))], outbox=[])
        assert await client.exists(f"{prefix}LCK:Thred:th1") == 1
    assert await client.exists(f"{prefix}LCK:Thred:th1") == 0


async def test_a_second_commit_after_the_release_raises(store: RedisThredStore) -> None:
    async with store.unit("th1", work_key="e1") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"))], outbox=[])
        with pytest.raises(LockLostError, match="committed already"):
            await unit.commit([ThredChange(make_thred("th1", reaction="r2"))], outbox=[])
    stored = await store.get_thred("th1")
    assert stored is not None
    assert stored.reactionStore.reactionName == "r1"


# --- creation limits -------------------------------------------------------------------------


async def test_max_instances_refuses_the_whole_commit(store: RedisThredStore) -> None:
    limits = CreationLimits(pattern_id="child", max_instances=1)
    assert await create(store, make_thred("c1", pattern_id="child"), work_key="e1", limits=limits)
    parent = make_thred("parent", reaction="r1")
    await create(store, parent, work_key="e2")
    async with store.unit("parent", work_key="e3") as unit:
        refused = await unit.commit(
            [
                ThredChange(make_thred("parent", reaction="r2"), unbound=True),
                ThredChange(
                    make_thred("c2", pattern_id="child", participants=["alice"]),
                    participants_added=["alice"],
                    create=limits,
                ),
            ],
            outbox=[message("m1", to=["alice"])],
        )
    assert refused is False
    stored = await store.get_thred("parent")
    assert stored is not None
    assert stored.reactionStore.reactionName == "r1"
    assert await store.get_thred("c2") is None
    assert await store.count_threds() == 2
    assert await store.unbound_thred_ids() == []
    assert await store.participant_thred_ids("alice") == []
    assert await store.get_counters("child") == PatternCounters(1, START_MS)
    assert await store.outbox("e3") == []
    assert await store.creation_done("e3", pattern_id="child") is False


async def test_a_refused_commit_keeps_the_lock_for_a_retry(
    store: RedisThredStore, client: Redis, prefix: str
) -> None:
    limits = CreationLimits(pattern_id="child", max_instances=1)
    await create(store, make_thred("c1", pattern_id="child"), work_key="e1", limits=limits)
    async with store.unit("parent", work_key="e2") as unit:
        parent = make_thred("parent")
        child = make_thred("c2", pattern_id="child")
        assert not await unit.commit(
            [ThredChange(parent), ThredChange(child, create=limits)], outbox=[]
        )
        assert await client.exists(f"{prefix}LCK:Thred:parent") == 1
        assert await unit.commit([ThredChange(parent)], outbox=[])
    assert await store.get_thred("parent") is not None


async def test_instance_interval_refuses_until_it_has_passed(
    store: RedisThredStore, clock: VirtualClock
) -> None:
    limits = CreationLimits(pattern_id="p1", interval_ms=1000)
    assert await create(store, make_thred("th1"), work_key="e1", limits=limits)
    clock.advance(999)
    assert not await create(store, make_thred("th2"), work_key="e2", limits=limits)
    assert await store.get_thred("th2") is None
    assert await store.get_counters("p1") == PatternCounters(1, START_MS)
    clock.advance(1)
    assert await create(store, make_thred("th3"), work_key="e3", limits=limits)
    assert await store.get_counters("p1") == PatternCounters(2, START_MS + 1000)


async def test_creations_in_one_commit_count_against_each_other(store: RedisThredStore) -> None:
    limits = CreationLimits(pattern_id="child", max_instances=1)
    async with store.unit("parent", work_key="e1") as unit:
        refused = await unit.commit(
            [
                ThredChange(make_thred("parent")),
                ThredChange(make_thred("c1", pattern_id="child"), create=limits),
                ThredChange(make_thred("c2", pattern_id="child"), create=limits),
            ],
            outbox=[],
        )
    assert refused is False
    assert await store.count_threds() == 0
    assert await store.get_counters("child") == PatternCounters(0, None)


# --- ended threds ----------------------------------------------------------------------------


async def test_an_ended_thred_leaves_every_index(store: RedisThredStore) -> None:
    thred = make_thred("th1", participants=["alice", "bob"])
    await create(store, thred, work_key="e1", unbound=True, deadline_ms=START_MS + 5000)
    async with store.unit("th1", work_key="e2") as unit:
        assert await unit.commit([ThredChange(thred, ended=True)], outbox=[])
    assert await store.get_thred("th1") is None
    assert await store.list_threds() == []
    assert await store.count_threds() == 0
    assert await store.unbound_thred_ids() == []
    assert await store.participant_thred_ids("alice") == []
    assert await store.participant_thred_ids("bob") == []
    assert await store.next_deadline_ms() is None
    assert await store.get_counters("p1") == PatternCounters(0, START_MS)


async def test_ending_an_uncounted_thred_keeps_the_count_at_zero(store: RedisThredStore) -> None:
    async with store.unit("th1", work_key="e1") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"), ended=True)], outbox=[])
    assert await store.get_counters("p1") == PatternCounters(0, None)


async def test_a_thred_created_and_ended_at_once_is_not_counted(store: RedisThredStore) -> None:
    thred = make_thred("th1")
    async with store.unit("th1", work_key="e1", lock=False) as unit:
        change = ThredChange(thred, ended=True, create=CreationLimits(pattern_id="p1"))
        assert await unit.commit([change], outbox=[])
    assert await store.get_thred("th1") is None
    assert await store.get_counters("p1") == PatternCounters(0, START_MS)
    assert await store.creation_done("e1", pattern_id="p1") is True


# --- done marks and the outbox ---------------------------------------------------------------


async def test_a_committed_work_key_is_done_for_its_thred(store: RedisThredStore) -> None:
    await create(store, make_thred("th1"), work_key="e1")
    async with store.unit("th1", work_key="e1") as unit:
        assert unit.done is True
    async with store.unit("th1", work_key="e2") as unit:
        assert unit.done is False
    async with store.unit("th2", work_key="e1") as unit:
        assert unit.done is False


async def test_done_marks_expire(
    client: Redis, prefix: str, clock: VirtualClock, store: RedisThredStore
) -> None:
    short = RedisThredStore(client, clock=clock, prefix=prefix, done_ttl_s=60)
    await create(short, make_thred("th1"), work_key="e1")
    assert 0 < await client.ttl(f"{prefix}Done:e1") <= 60


async def test_the_outbox_survives_and_clears(
    store: RedisThredStore, other_client: Redis, prefix: str, clock: VirtualClock
) -> None:
    messages = [message("m1", to=["alice"]), message("m2", to=["bob", "carol"])]
    async with store.unit("th1", work_key="e1") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"))], outbox=messages)
    restarted = RedisThredStore(other_client, clock=clock, prefix=prefix)
    assert await restarted.outbox("e1") == messages
    await restarted.clear_outbox("e1")
    assert await store.outbox("e1") == []


async def test_a_replayed_commit_writes_nothing_twice(
    client: Redis, prefix: str, clock: VirtualClock
) -> None:
    store = RedisThredStore(client, clock=clock, prefix=prefix, release_on_commit=False)
    async with store.unit("th1", work_key="e1") as unit:
        change = ThredChange(make_thred("th1"), create=CreationLimits(pattern_id="p1"))
        assert await unit.commit([change], outbox=[message("m1", to=["alice"])])
        # What redis-py's retry does after a lost reply: the same commit id once more.
        unit._commits -= 1
        assert await unit.commit([change], outbox=[message("m1", to=["alice"])])
    assert await store.get_counters("p1") == PatternCounters(1, START_MS)
    assert len(await store.outbox("e1")) == 1


# --- deadlines -------------------------------------------------------------------------------


async def test_due_threds_come_earliest_first(store: RedisThredStore) -> None:
    for thred_id, due in (("late", 300), ("early", 100), ("middle", 200)):
        await create(store, make_thred(thred_id), work_key=f"e-{thred_id}", deadline_ms=due)
    assert await store.next_deadline_ms() == 100
    assert await store.due_thred_ids(250) == ["early", "middle"]
    assert await store.due_thred_ids(250, limit=1) == ["early"]
    assert await store.due_thred_ids(99) == []
    assert await store.due_thred_ids(300) == ["early", "middle", "late"]


async def test_a_cleared_deadline_is_no_longer_due(store: RedisThredStore) -> None:
    await create(store, make_thred("th1"), work_key="e1", deadline_ms=100)
    async with store.unit("th1", work_key="e2") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"), deadline_ms=None)], outbox=[])
    assert await store.due_thred_ids(1000) == []
    assert await store.next_deadline_ms() is None


async def test_a_moved_deadline_moves(store: RedisThredStore) -> None:
    await create(store, make_thred("th1"), work_key="e1", deadline_ms=100)
    await create(store, make_thred("th2"), work_key="e2", deadline_ms=200)
    async with store.unit("th1", work_key="e3") as unit:
        assert await unit.commit([ThredChange(make_thred("th1"), deadline_ms=300)], outbox=[])
    assert await store.due_thred_ids(1000) == ["th2", "th1"]
    assert await store.next_deadline_ms() == 200


# --- sessions --------------------------------------------------------------------------------


@pytest.fixture
def sessions(client: Redis, prefix: str) -> RedisSessionStore:
    return RedisSessionStore(client, prefix=prefix)


async def test_added_sessions_are_found(sessions: RedisSessionStore) -> None:
    await sessions.add_session(Session("alice", "node-b", ["admin"], "s2"))
    await sessions.add_session(Session("alice", "node-a", [], "s1"))
    await sessions.add_session(Session("bob", "node-a"))
    assert await sessions.sessions_for("alice") == [
        Session("alice", "node-a", [], "s1"),
        Session("alice", "node-b", ["admin"], "s2"),
    ]
    assert await sessions.sessions_for("bob") == [Session("bob", "node-a")]
    assert await sessions.sessions_for("carol") == []
    assert await sessions.participants_with_sessions() == ["alice", "bob"]


async def test_the_sessions_of_several_participants_come_in_one_round_trip(
    sessions: RedisSessionStore,
) -> None:
    await sessions.add_session(Session("alice", "node-b", ["admin"], "s2"))
    await sessions.add_session(Session("alice", "node-a", [], "s1"))
    await sessions.add_session(Session("bob", "node-a"))
    before = sessions.round_trips.count
    assert await sessions.sessions_of(["alice", "bob", "carol"]) == {
        "alice": [
            Session("alice", "node-a", [], "s1"),
            Session("alice", "node-b", ["admin"], "s2"),
        ],
        "bob": [Session("bob", "node-a")],
        "carol": [],
    }
    assert sessions.round_trips.count - before == 1
    assert await sessions.sessions_of([]) == {}


async def test_a_session_replaces_the_one_on_its_node(sessions: RedisSessionStore) -> None:
    await sessions.add_session(Session("alice", "node-a", [], "s1"))
    await sessions.add_session(Session("alice", "node-a", ["admin"], "s2"))
    assert await sessions.sessions_for("alice") == [Session("alice", "node-a", ["admin"], "s2")]


async def test_removing_the_last_session_drops_the_participant(
    sessions: RedisSessionStore, client: Redis, prefix: str
) -> None:
    await sessions.add_session(Session("alice", "node-a", [], "s1"))
    await sessions.add_session(Session("alice", "node-b", [], "s2"))
    assert await sessions.remove_session("s1") is True
    assert await sessions.participants_with_sessions() == ["alice"]
    assert await sessions.remove_session("s2") is True
    assert await sessions.remove_session("s2") is False
    assert await sessions.sessions_for("alice") == []
    assert await sessions.participants_with_sessions() == []
    assert await client.exists(f"{prefix}SessionParticipant:s1") == 0


async def test_a_session_is_stored_in_the_original_shape(
    sessions: RedisSessionStore, client: Redis, prefix: str
) -> None:
    await sessions.add_session(Session("alice", "node-a", ["admin"], "s1"))
    assert await client.smembers(f"{prefix}ParticipantSession:alice") == {b"s1"}
    stored = await client.hget(f"{prefix}SessionParticipant:s1", "data")
    assert stored is not None
    assert b'"data":{"roles":["admin"],"isProxy":false}' in stored


# --- pattern-changed pub/sub -----------------------------------------------------------------


async def test_pattern_changes_reach_another_client(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    received: asyncio.Queue[str | None] = asyncio.Queue()
    listener = await RedisPatternChanges(other_client, prefix=prefix).subscribe(received.put)
    try:
        publisher = RedisPatternChanges(client, prefix=prefix)
        assert await publisher.publish("p1") == 1
        assert await publisher.publish(None) == 1
        assert await asyncio.wait_for(received.get(), 10) == "p1"
        assert await asyncio.wait_for(received.get(), 10) is None
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_the_listener_resubscribes_after_a_connection_loss(
    client: Redis, other_client: Redis, prefix: str, redis_db: RedisDb
) -> None:
    received: asyncio.Queue[str | None] = asyncio.Queue()
    listener = await RedisPatternChanges(other_client, prefix=prefix).subscribe(received.put)
    try:
        # Only this test's subscriber: the server is shared by the session.
        subscribers = [
            entry
            for entry in await client.client_list(_type="pubsub")
            if int(entry["db"]) == redis_db.db
        ]
        assert len(subscribers) == 1
        await client.client_kill_filter(_id=subscribers[0]["id"])
        # The reconnection is announced as "everything may have changed".
        assert await asyncio.wait_for(received.get(), 20) is None
        assert await RedisPatternChanges(client, prefix=prefix).publish("p2") == 1
        assert await asyncio.wait_for(received.get(), 10) == "p2"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


# --- health and round trips ------------------------------------------------------------------


async def test_ping_answers_when_redis_is_up(store: RedisThredStore) -> None:
    assert await store.ping() is True


async def test_a_down_redis_raises_connection_error(clock: VirtualClock) -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RedisConnectionError):
            await RedisThredStore(down, clock=clock).ping()
    finally:
        await down.aclose()


async def test_subscribing_to_a_down_redis_raises_connection_error() -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RedisConnectionError):
            await RedisPatternChanges(down).subscribe(_ignore)
    finally:
        await down.aclose()


async def _ignore(pattern_id: str | None) -> None:
    pass


async def test_scripts_are_reloaded_after_a_script_flush(
    store: RedisThredStore, client: Redis
) -> None:
    await create(store, make_thred("th1"), work_key="e1")
    await client.script_flush()
    async with store.unit("th1", work_key="e2") as unit:
        assert unit.thred is not None
        assert await unit.commit([ThredChange(make_thred("th1", reaction="r2"))], outbox=[])
    stored = await store.get_thred("th1")
    assert stored is not None
    assert stored.reactionStore.reactionName == "r2"


async def test_a_simple_bound_event_takes_three_round_trips(store: RedisThredStore) -> None:
    await create(store, make_thred("th1", participants=["alice"]), work_key="e0")
    # Warm the script cache: the first call of a script also loads it.
    async with store.unit("th1", work_key="e1") as unit:
        await unit.commit([ThredChange(make_thred("th1"))], outbox=[])
    counter = store.round_trips = RoundTrips()
    async with store.unit("th1", work_key="e2") as unit:
        await unit.commit(
            [ThredChange(make_thred("th1", reaction="r2"))], outbox=[message("m1", to=["alice"])]
        )
    await store.clear_outbox("e2")
    assert counter.count == 3


async def test_a_commit_reads_its_recipients_sessions_in_the_same_round_trip(
    client: Redis, prefix: str, clock: VirtualClock, sessions: RedisSessionStore
) -> None:
    store = RedisThredStore(client, clock=clock, prefix=prefix, read_recipient_sessions=True)
    await sessions.add_session(Session("ann", "node-a", [], "s1"))
    await create(store, make_thred("t1"), work_key="w0")
    async with store.unit("t1", work_key="w1") as unit:
        before = store.round_trips.count
        outbox = [message("m1", to=["ann", "org.wt.robot"]), message("m2", to=["ann"])]
        assert await unit.commit([ThredChange(make_thred("t1"))], outbox=outbox, release=False)
        assert store.round_trips.count - before == 1
        assert unit.recipient_sessions == {
            "ann": [Session("ann", "node-a", [], "s1")],
            "org.wt.robot": [],
        }
        await unit.settle()
    # Without messages nothing is read, and by default a store reads nothing.
    async with store.unit("t1", work_key="w2") as unit:
        assert await unit.commit([ThredChange(make_thred("t1"))], outbox=[])
        assert unit.recipient_sessions is None
