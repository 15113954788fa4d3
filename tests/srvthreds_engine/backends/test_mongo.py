"""The MongoDB persistence adapter against FerretDB (MongoDB wire protocol, SQLite backend)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ServerSelectionTimeoutError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from srvthreds_engine.adapters.mongo import (
    INDEXES,
    MongoPersistence,
    transaction_refusal,
)
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.errors import TASK_ERROR, EngineError
from srvthreds_engine.core.matchers import compile_matcher
from srvthreds_engine.ports import Persistence
from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.fixtures import MongoDatabase, ServerFactory

pytestmark = pytest.mark.backends

Document = dict[str, Any]


class FindCommands(CommandListener):
    """The filters of the `find` commands a client sends (what the server is asked)."""

    def __init__(self) -> None:
        self.filters: list[Document] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(dict(event.command.get("filter", {})))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Not needed."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Not needed."""


@pytest.fixture
def find_commands() -> FindCommands:
    return FindCommands()


@pytest.fixture
async def client(
    mongo_database: MongoDatabase, find_commands: FindCommands
) -> AsyncIterator[AsyncMongoClient[Document]]:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_database.url, serverSelectionTimeoutMS=10_000, event_listeners=[find_commands]
    )
    yield mongo
    await mongo.close()


@pytest.fixture
def database(
    client: AsyncMongoClient[Document], mongo_database: MongoDatabase
) -> AsyncDatabase[Document]:
    # A database of its own per test (dropped by `mongo_database`).
    return client.get_database(mongo_database.name)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start_ms=1_000)


@pytest.fixture
async def persistence(
    client: AsyncMongoClient[Document], database: AsyncDatabase[Document], clock: VirtualClock
) -> MongoPersistence:
    mongo = MongoPersistence(client, database=database.name, clock=clock)
    await mongo.ensure_indexes()
    # mypy checks that the adapter satisfies the port.
    port: Persistence = mongo
    assert port is mongo
    return mongo


def event(event_id: str, **fields: Any) -> Document:
    return {"id": event_id, "type": "org.wt.tell", "source": {"id": "p1"}, **fields}


def log_record(event_id: str, *, to: str, at: int) -> Document:
    return {
        "type": "m",
        "eventId": event_id,
        "thredId": "t1",
        "fromReaction": "start",
        "toReaction": to,
        "timestamp": at,
    }


def view(thred_id: str, *, pattern: str, status: str = "TERMINATED", n: int = 0) -> Document:
    return {"id": thred_id, "patternId": pattern, "status": status, "n": n}


async def without_ids(database: AsyncDatabase[Document], collection: str) -> list[Document]:
    return [
        {key: value for key, value in document.items() if key != "_id"}
        async for document in database[collection].find()
    ]


async def buffer_processing(mongo: MongoPersistence) -> None:
    """What one processing of event e1 for thred t1 records."""
    await mongo.save_event(event("e1"), thred_id="t1")
    await mongo.save_event(event("e2"), thred_id="t1")
    await mongo.set_event_to("e2", to=["p1", "p2"])
    await mongo.set_event_error("e3", error={"message": "bad", "code": 4000})
    await mongo.add_log(log_record("e1", to="next", at=1_000))
    await mongo.add_log({"type": "nt", "eventId": "e1", "timestamp": 1_000})
    await mongo.archive_thred(view("t1", pattern="p"))
    await mongo.add_archived_thred("p1", thred_id="t1")


# --- buffered writes and flush ---------------------------------------------------------------


async def test_writes_are_buffered_until_flush(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await buffer_processing(persistence)
    assert await database["EventRecord"].count_documents({}) == 0
    await persistence.flush()
    assert await database["EventRecord"].count_documents({}) == 3
    assert await database["ThredLogRecord"].count_documents({}) == 2
    assert await database["ThredRecord"].count_documents({}) == 1
    assert await database["User"].count_documents({}) == 1


async def test_flushed_records_have_the_stored_shapes(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await buffer_processing(persistence)
    await persistence.flush()
    events = {record["id"]: record for record in await without_ids(database, "EventRecord")}
    assert events["e1"] == {"id": "e1", "timestamp": 1_000, "event": event("e1"), "thredId": "t1"}
    assert events["e2"]["to"] == ["p1", "p2"]
    assert events["e3"] == {
        "id": "e3",
        "timestamp": 1_000,
        "error": {"message": "bad", "code": 4000},
    }
    logs = await without_ids(database, "ThredLogRecord")
    assert sorted(logs, key=lambda record: record["type"]) == [
        log_record("e1", to="next", at=1_000),
        {"type": "nt", "eventId": "e1", "timestamp": 1_000},
    ]
    assert await without_ids(database, "ThredRecord") == [
        {"id": "t1", "thred": view("t1", pattern="p")}
    ]


async def test_events_for_thred_are_only_that_threds(persistence: MongoPersistence) -> None:
    await persistence.save_event(event("late"), thred_id="t1")
    await persistence.save_event(event("other"), thred_id="t2")
    records = await persistence.events_for_thred("t1")
    assert [record["id"] for record in records] == ["late"]
    assert records[0]["event"] == event("late")


async def test_events_for_thred_keep_the_order_of_time_then_storage(
    persistence: MongoPersistence, clock: VirtualClock
) -> None:
    for event_id in ["b", "a", "c"]:
        await persistence.save_event(event(event_id), thred_id="t1")
    await persistence.flush()
    clock.advance(5)
    await persistence.save_event(event("0-later"), thred_id="t1")
    # Read flushes first.
    records = await persistence.events_for_thred("t1")
    assert [record["id"] for record in records] == ["b", "a", "c", "0-later"]
    assert [record["timestamp"] for record in records] == [1_000, 1_000, 1_000, 1_005]


async def test_a_redelivered_processing_does_not_duplicate_records(
    persistence: MongoPersistence, database: AsyncDatabase[Document], clock: VirtualClock
) -> None:
    await buffer_processing(persistence)
    await persistence.flush()
    first = {name: await without_ids(database, name) for name in ["EventRecord", "ThredRecord"]}
    clock.advance(60_000)
    await buffer_processing(persistence)
    await persistence.flush()
    assert await database["EventRecord"].count_documents({}) == 3
    assert await database["ThredLogRecord"].count_documents({}) == 2
    assert await database["ThredRecord"].count_documents({}) == 1
    assert await persistence.user_archived("p1") == ["t1"]
    # The first write's timestamps stay.
    assert {name: await without_ids(database, name) for name in first} == first


async def test_a_later_flush_merges_recipients_and_error_into_the_event_record(
    persistence: MongoPersistence,
) -> None:
    await persistence.save_event(event("e1"), thred_id="t1")
    await persistence.flush()
    await persistence.set_event_to("e1", to=["p2"])
    await persistence.flush()
    await persistence.set_event_error("e1", error={"message": "late"})
    [record] = await persistence.events_for_thred("t1")
    assert record == {
        "id": "e1",
        "event": event("e1"),
        "thredId": "t1",
        "timestamp": 1_000,
        "to": ["p2"],
        "error": {"message": "late"},
    }


async def test_log_records_differing_in_their_key_are_all_kept(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await persistence.add_log(log_record("e1", to="a", at=1))
    await persistence.add_log(log_record("e1", to="b", at=2))
    await persistence.add_log({**log_record("e1", to="a", at=3), "type": "nm"})
    await persistence.add_log(log_record("e2", to="a", at=4))
    await persistence.flush()
    await persistence.add_log(log_record("e1", to="a", at=99))
    await persistence.flush()
    timestamps = sorted(
        record["timestamp"] for record in await without_ids(database, "ThredLogRecord")
    )
    assert timestamps == [1, 2, 3, 4]


def unreachable_url(tmp_path: Path) -> str:
    # A missing Unix socket fails to connect at once: no connection attempt is in flight when
    # the client closes (PyMongo leaks the socket of a TCP connect it cancels).
    return "mongodb://" + quote_plus(str(tmp_path / "absent.sock"))


async def test_writes_buffered_while_the_server_is_down_are_written_once_it_is_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory.start(FerretDbServer)
    mongo = MongoPersistence.from_url(server.url, database="nr", timeout_ms=2_000)
    await mongo.save_event(event("e1"), thred_id="t1")
    await mongo.flush()
    await mongo.add_log(log_record("e1", to="a", at=1))
    await mongo.set_event_to("e1", to=["before"])
    await server.astop()
    with pytest.raises(ConnectionFailure):
        await mongo.flush()
    # Buffered after the failed flush: these must land after (and over) the ones kept.
    await mongo.set_event_to("e1", to=["after"])
    await mongo.add_log(log_record("e1", to="b", at=2))
    await server.astart()
    await mongo.flush()
    [record] = await mongo.events_for_thred("t1")
    assert record["to"] == ["after"]
    logs = mongo.run_tasks([{"op": "get", "params": {"type": "ThredLogRecord"}}])
    assert sorted(log["toReaction"] for log in (await logs)[0]) == ["a", "b"]
    await mongo.close()


async def test_a_flush_with_nothing_buffered_does_no_io(tmp_path: Path) -> None:
    unreachable: AsyncMongoClient[Document] = AsyncMongoClient(
        unreachable_url(tmp_path), serverSelectionTimeoutMS=300
    )
    mongo = MongoPersistence(unreachable)
    await mongo.flush()
    await unreachable.close()


async def test_a_failed_flush_keeps_the_writes_buffered(tmp_path: Path) -> None:
    unreachable: AsyncMongoClient[Document] = AsyncMongoClient(
        unreachable_url(tmp_path), serverSelectionTimeoutMS=300
    )
    mongo = MongoPersistence(unreachable)
    # Buffering does no I/O, so it works while the server is unreachable.
    await mongo.save_event(event("e1"), thred_id="t1")
    with pytest.raises(ServerSelectionTimeoutError):
        await mongo.flush()
    # Still buffered: the next flush tries again (and fails again).
    with pytest.raises(ServerSelectionTimeoutError):
        await mongo.flush()
    await unreachable.close()


async def test_records_the_server_refuses_are_dropped_and_the_rest_written(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    # Another document already holds id t1: the unique index refuses the archive record.
    await database["ThredRecord"].insert_one({"_id": "imported", "id": "t1"})
    await persistence.archive_thred(view("t1", pattern="p"))
    await persistence.save_event(event("e1"), thred_id="t1")
    await persistence.flush()
    assert [refusal.split(":")[0] for refusal in persistence.refused] == ["ThredRecord"]
    assert "duplicate key" in persistence.refused[0].lower()
    assert await database["EventRecord"].count_documents({"id": "e1"}) == 1
    # Not retried: it would be refused again and hold back every later flush.
    await persistence.flush()


@pytest.mark.parametrize(
    "values",
    [{"$weird": 1}, {"dotted.key": 1}, {"huge": 2**64}],
    ids=["dollar key", "dotted key", "integer beyond 64 bits"],
)
async def test_an_event_the_database_cannot_store_does_not_hold_back_the_rest(
    persistence: MongoPersistence, database: AsyncDatabase[Document], values: Document
) -> None:
    # FerretDB refuses `$`-prefixed and dotted keys (MongoDB 5+ takes them); BSON has no
    # integers beyond 64 bits.
    await persistence.save_event(event("odd", data={"content": {"values": values}}), thred_id="t1")
    await persistence.save_event(event("fine"), thred_id="t1")
    await persistence.add_log(log_record("odd", to="a", at=1))
    await persistence.flush()
    assert [refusal.split(":")[0] for refusal in persistence.refused] == ["EventRecord"]
    assert [record["id"] for record in await persistence.events_for_thred("t1")] == ["fine"]
    assert await database["ThredLogRecord"].count_documents({}) == 1


async def test_ping_answers_while_the_server_is_up(persistence: MongoPersistence) -> None:
    await persistence.ping()


async def test_ping_raises_the_driver_error_when_unreachable(tmp_path: Path) -> None:
    mongo = MongoPersistence.from_url(unreachable_url(tmp_path), timeout_ms=300)
    with pytest.raises(ServerSelectionTimeoutError):
        await mongo.ping()
    await mongo.close()


async def test_close_writes_what_is_still_buffered(
    mongo_database: MongoDatabase, database: AsyncDatabase[Document]
) -> None:
    mongo = MongoPersistence.from_url(mongo_database.url, database=mongo_database.name)
    await mongo.save_event(event("e1"), thred_id="t1")
    await mongo.close()
    assert await database["EventRecord"].count_documents({"id": "e1"}) == 1


# --- archive and users -----------------------------------------------------------------------


ARCHIVE = [
    view("t1", pattern="Alpha.one", n=1),
    view("t2", pattern="alpha.two", n=5),
    view("t3", pattern="beta", n=9, status="FINISHED"),
]

MATCHERS = [
    {"thred.patternId": {"$re": "^ALPHA"}},
    {"id": {"$in": ["t1", "t3"]}},
    {"id": {"$nin": ["t1"]}},
    {"thred.n": {"$gte": 5}},
    {"thred.n": {"$gt": 1, "$lt": 9}},
    {"thred.n": {"$lte": 1}},
    {"thred.status": {"$ne": "TERMINATED"}},
    {"$or": [{"id": "t1"}, {"thred.n": 9}]},
    {"thred.patternId": {"$not": {"$re": "one$"}}},
    {"thred.status": "TERMINATED", "thred.n": {"$gt": 2}},
]


@pytest.mark.parametrize("matcher", MATCHERS, ids=[str(matcher) for matcher in MATCHERS])
async def test_archived_threds_matcher_is_pushed_down_with_the_same_result(
    persistence: MongoPersistence, find_commands: FindCommands, matcher: Document
) -> None:
    for thred in ARCHIVE:
        await persistence.archive_thred(thred)
    expected = [
        thred for thred in ARCHIVE if compile_matcher(matcher)({"id": thred["id"], "thred": thred})
    ]
    find_commands.filters.clear()
    found = await persistence.archived_threds(matcher=matcher)
    assert sorted(found, key=lambda thred: thred["id"]) == expected
    # The server was asked with the matcher itself (`$re` as a case-insensitive `$regex`).
    assert len(find_commands.filters) == 1
    assert find_commands.filters[0] == _as_mongo(matcher)


def _as_mongo(matcher: Any) -> Any:
    if isinstance(matcher, dict):
        if "$re" in matcher:
            rest = {key: _as_mongo(value) for key, value in matcher.items() if key != "$re"}
            return {"$regex": matcher["$re"], "$options": "i", **rest}
        return {key: _as_mongo(value) for key, value in matcher.items()}
    if isinstance(matcher, list):
        return [_as_mongo(item) for item in matcher]
    return matcher


async def test_archived_threds_without_matcher_are_all_in_archive_order(
    persistence: MongoPersistence,
) -> None:
    for thred in reversed(ARCHIVE):
        await persistence.archive_thred(thred)
    assert await persistence.archived_threds() == list(reversed(ARCHIVE))


async def test_user_archived_list_collects_thred_ids_once_each(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await database["User"].insert_one(
        {"_id": "p1", "id": "p1", "password": "x", "roles": [{"name": "admin"}]}
    )
    await persistence.add_archived_thred("p1", thred_id="t1")
    await persistence.add_archived_thred("p1", thred_id="t2")
    await persistence.add_archived_thred("p1", thred_id="t1")
    await persistence.add_archived_thred("p2", thred_id="t2")
    await persistence.flush()
    assert await persistence.user_archived("p1") == ["t1", "t2"]
    assert await persistence.user_archived("p2") == ["t2"]
    assert await persistence.user_archived("nobody") == []
    user = await database["User"].find_one({"_id": "p1"})
    assert user is not None
    assert (user["password"], user["roles"]) == ("x", [{"name": "admin"}])


# --- indexes, patterns, configs --------------------------------------------------------------


async def test_indexes_exist_and_creating_them_again_is_harmless(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await persistence.ensure_indexes()
    for spec in INDEXES:
        indexes = {
            index["name"]: index async for index in await database[spec.collection].list_indexes()
        }
        assert spec.name in indexes, (spec.collection, sorted(indexes))
        assert dict(indexes[spec.name]["key"]) == {spec.field: 1}
        assert bool(indexes[spec.name].get("unique")) == spec.unique


async def test_unique_id_index_refuses_a_second_document_with_the_same_id(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await database["PatternModel"].insert_one({"id": "p"})
    with pytest.raises(DuplicateKeyError):
        await database["PatternModel"].insert_one({"id": "p"})


async def test_a_user_stored_under_another_mongo_id_is_not_doubled(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await database["User"].insert_one({"_id": "legacy-key", "id": "p5", "password": "x"})
    await persistence.add_archived_thred("p5", thred_id="t1")
    await persistence.flush()
    assert await persistence.user_archived("p5") == ["t1"]
    assert await database["User"].count_documents({}) == 1


async def test_unique_id_index_lets_documents_without_an_id_field_coexist(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    # Task-made documents carry their id as `_id` only.
    await persistence.run_tasks(
        [{"op": "put", "params": {"type": "User", "values": [{"id": "u1"}, {"id": "u2"}]}}]
    )
    await persistence.add_archived_thred("u3", thred_id="t1")
    await persistence.flush()
    assert await database["User"].count_documents({}) == 3


async def test_active_patterns_are_the_pattern_json_of_active_models(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await database["PatternModel"].insert_many(
        [
            {"id": "on", "name": "On", "meta": {"active": True}, "reactions": []},
            {"id": "off", "name": "Off", "meta": {"active": False}, "reactions": []},
            {"id": "bare", "name": "Bare", "reactions": []},
        ]
    )
    assert await persistence.active_patterns() == [
        {"id": "on", "name": "On", "meta": {"active": True}, "reactions": []}
    ]


async def test_config_is_read_by_name(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    await database["Config"].insert_many(
        [
            {"id": "engine", "config": {"shutdownDelay": 5}},
            {"_id": "sessions_model", "config": {"groups": []}},
        ]
    )
    assert await persistence.config("engine") == {"shutdownDelay": 5}
    assert await persistence.config("sessions_model") == {"groups": []}
    assert await persistence.config("missing") is None


# --- tasks -----------------------------------------------------------------------------------


def task(op: str, **params: Any) -> Document:
    return {"op": op, "params": {"type": "Things", **params}}


async def put_things(persistence: MongoPersistence) -> None:
    things = [
        {"id": "a", "name": "Apple", "n": 3, "tags": ["red"]},
        {"id": "b", "name": "banana", "n": 1, "tags": ["yellow"]},
        {"id": "c", "name": "Cherry", "n": 2, "tags": ["red", "small"], "sizes": ["s", "m"]},
    ]
    assert await persistence.run_tasks([task("put", values=things)]) == [["a", "b", "c"]]


async def test_put_answers_the_id_and_stores_it_as_mongo_id(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    [result] = await persistence.run_tasks([task("put", values={"id": "x", "v": 1})])
    assert result == "x"
    assert await database["Things"].find_one({"_id": "x"}) == {"_id": "x", "v": 1}


async def test_put_without_id_answers_the_new_id(persistence: MongoPersistence) -> None:
    [new_id] = await persistence.run_tasks([task("put", values={"v": 1})])
    assert isinstance(new_id, str)
    assert new_id
    [found] = await persistence.run_tasks([task("getOne", matcher={"id": new_id})])
    assert found == {"id": new_id, "v": 1}


async def test_get_one_answers_the_document_or_null(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    results = await persistence.run_tasks(
        [task("getOne", matcher={"id": "b"}), task("getOne", matcher={"id": "zzz"})]
    )
    assert results == [{"id": "b", "name": "banana", "n": 1, "tags": ["yellow"]}, None]


async def test_get_with_matcher_selector_and_collector(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    [found] = await persistence.run_tasks(
        [
            task(
                "get",
                matcher={"$or": [{"name": {"$re": "^A"}}, {"tags": {"$in": ["small"]}}]},
                selector={"include": ["name"], "exclude": ["id"]},
                collector={"sort": [{"field": "name", "desc": True}]},
            )
        ]
    )
    assert found == [{"name": "Cherry"}, {"name": "Apple"}]


async def test_get_with_sort_skip_and_limit(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    [found] = await persistence.run_tasks(
        [
            task(
                "get",
                matcher={"n": {"$gte": 1}},
                selector={"exclude": ["tags", "name", "sizes"]},
                collector={"sort": [{"field": "n"}], "skip": 1, "limit": 1},
            )
        ]
    )
    assert found == [{"id": "c", "n": 2}]


async def test_count_answers_how_many_match(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    results = await persistence.run_tasks(
        [task("count"), task("count", matcher={"tags": "red", "n": {"$ne": 3}})]
    )
    assert results == [3, 1]


async def test_update_applies_every_operator(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    values = {
        "$add": {"tags": ["red", "ripe"]},
        "$push": {"history": "picked"},
        "$remove": {"sizes": "s"},
        "$inc": {"n": 10},
        "$min": {"low": 5},
        "$max": {"high": 7},
        "$mul": {"price": 2},
        "$now": "updatedAt",
        "name": "Cherry!",
    }
    results = await persistence.run_tasks(
        [task("update", matcher={"id": "c"}, values=values), task("getOne", matcher={"id": "c"})]
    )
    assert results[0] is None
    updated = results[1]
    updated_at = updated.pop("updatedAt")
    assert updated == {
        "id": "c",
        "name": "Cherry!",
        "n": 12,
        "tags": ["red", "small", "ripe"],
        "sizes": ["m"],
        "history": ["picked"],
        "low": 5,
        "high": 7,
        "price": 0,
    }
    assert datetime.fromisoformat(updated_at.replace("Z", "+00:00")).year >= 2024


async def test_update_changes_every_matching_document(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    await persistence.run_tasks(
        [task("update", matcher={"tags": "red"}, values={"$inc": {"n": 1}})]
    )
    [found] = await persistence.run_tasks([task("get", collector={"sort": [{"field": "id"}]})])
    assert [thing["n"] for thing in found] == [4, 1, 3]


async def test_upsert_inserts_when_nothing_matches_and_updates_otherwise(
    persistence: MongoPersistence,
) -> None:
    results = await persistence.run_tasks(
        [
            task("upsert", matcher={"id": "u"}, values={"n": 1}),
            task("upsert", matcher={"id": "u"}, values={"$inc": {"n": 1}}),
            task("getOne", matcher={"id": "u"}),
        ]
    )
    assert results == [None, None, {"id": "u", "n": 2}]


async def test_replace_swaps_the_whole_document(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    results = await persistence.run_tasks(
        [
            task("replace", matcher={"id": "a"}, values={"id": "a", "fresh": True}),
            task("getOne", matcher={"id": "a"}),
        ]
    )
    assert results == [None, {"id": "a", "fresh": True}]


async def test_delete_removes_every_match(persistence: MongoPersistence) -> None:
    await put_things(persistence)
    results = await persistence.run_tasks([task("delete", matcher={"n": {"$lt": 3}}), task("get")])
    assert results == [None, [{"id": "a", "name": "Apple", "n": 3, "tags": ["red"]}]]


async def test_options_dbname_runs_the_task_in_that_database(
    persistence: MongoPersistence, client: AsyncMongoClient[Document]
) -> None:
    other = "t_dbname_" + uuid.uuid4().hex[:8]
    try:
        put = {"op": "put", "params": {"type": "Things", "values": {"id": "o"}}}
        await persistence.run_tasks([{**put, "options": {"dbname": other}}])
        assert await client[other]["Things"].count_documents({"_id": "o"}) == 1
        assert await persistence.run_tasks([task("count")]) == [0]
    finally:
        await client.drop_database(other)


async def test_tasks_see_the_records_buffered_before_them(persistence: MongoPersistence) -> None:
    await persistence.save_event(event("e1"), thred_id="t1")
    results = await persistence.run_tasks(
        [{"op": "getOne", "params": {"type": "EventRecord", "matcher": {"id": "e1"}}}]
    )
    assert results[0]["thredId"] == "t1"


async def test_a_server_refusal_is_a_task_error_naming_the_task(
    persistence: MongoPersistence,
) -> None:
    await put_things(persistence)
    with pytest.raises(EngineError) as caught:
        await persistence.run_tasks([task("count"), task("put", values={"id": "a"})])
    assert caught.value.code == TASK_ERROR
    assert caught.value.message.startswith("tasks[1]: put on Things failed:")
    assert "duplicate key" in caught.value.message.lower()


async def test_a_value_bson_cannot_hold_is_a_task_error(persistence: MongoPersistence) -> None:
    with pytest.raises(EngineError) as caught:
        await persistence.run_tasks([task("put", values={"id": "big", "n": 2**64})])
    assert caught.value.code == TASK_ERROR
    assert caught.value.message.startswith("tasks[0]: put on Things failed: not storable as BSON")


@pytest.mark.parametrize(
    ("build_info", "hello", "refused"),
    [
        ({"ferretdbVersion": "v1.24.2"}, {}, "FerretDB v1.24.2"),
        ({}, {"isWritablePrimary": True}, "standalone"),
        ({}, {"setName": "rs0"}, None),
        ({}, {"msg": "isdbgrid"}, None),
    ],
    ids=["ferretdb", "standalone", "replica set", "mongos"],
)
def test_transactions_need_a_replica_set_or_mongos_and_not_ferretdb(
    build_info: Document, hello: Document, refused: str | None
) -> None:
    refusal = transaction_refusal(build_info, hello=hello)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused in refusal


async def test_run_is_refused_clearly(persistence: MongoPersistence) -> None:
    with pytest.raises(EngineError) as caught:
        await persistence.run_tasks([task("run")])
    assert caught.value.code == TASK_ERROR
    assert "task op 'run' is not supported" in caught.value.message


async def test_a_transaction_is_refused_clearly_by_ferretdb(
    persistence: MongoPersistence, database: AsyncDatabase[Document]
) -> None:
    refusal = await persistence.transactions_refused()
    assert refusal is not None
    assert "FerretDB" in refusal
    with pytest.raises(EngineError) as caught:
        await persistence.run_tasks(
            [task("put", values={"id": "before"}), [task("put", values={"id": "x"}), task("count")]]
        )
    assert caught.value.code == TASK_ERROR
    assert caught.value.message == f"tasks[1]: cannot run the tasks as one transaction: {refusal}"
    # Refused before any task ran: not even the one before the transaction.
    assert await database["Things"].count_documents({}) == 0
