"""The test-services harness: each server starts, answers, restarts in place and dies cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
import redis.asyncio
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.fixtures import MongoDatabase, RabbitVhost, RedisDb, ServerFactory
from tests.brokers.procfs import port_is_free, process_tree
from tests.brokers.rabbitmq_server import RabbitMqServer
from tests.brokers.redis_server import RedisServer
from tests.brokers.server import ServerStartError, TestServer
from tests.localcluster.layout import REPO_ROOT
from tests.localcluster.waiting import wait_until

pytestmark = pytest.mark.backends

# FerretDB's answer for a feature it lacks (MongoDB's NotImplemented).
NOT_IMPLEMENTED = 238


async def redis_roundtrip(url: str, *, key: str, value: str) -> bytes | str | None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.set(key, value)
        return await client.get(key)
    finally:
        await client.aclose()


async def redis_get(url: str, key: str) -> bytes | str | None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return await client.get(key)
    finally:
        await client.aclose()


async def amqp_publish(url: str, *, queue: str, body: bytes) -> None:
    """Publishes one persistent message to a durable queue and waits for the broker's confirm."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        # With confirms on, publish returns once the broker has taken responsibility.
        confirmation = await channel.default_exchange.publish(message, routing_key=queue)
        # Basic.Ack; a Basic.Nack would mean the broker refused the message.
        assert type(confirmation).__name__ == "Ack"


async def amqp_consume_one(url: str, *, queue: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        message = await declared.get(timeout=10, fail=True)
        assert message is not None
        await message.ack()
        return message.body


def mongo_client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=5000)


def assert_gone(server: TestServer, ports: list[int], processes: list[Any]) -> None:
    """No process of the server's tree runs and every port it used can be bound again."""
    wait_until(
        lambda: not any(p.alive() for p in processes) and all(port_is_free(p) for p in ports),
        timeout=15,
        what=f"{server.name}'s processes to exit and ports {ports} to be free",
    )
    assert not server.running


# --- each server answers -------------------------------------------------------------------


async def test_redis_set_then_get_returns_the_value(redis_db: RedisDb) -> None:
    key = f"{redis_db.key_prefix}greeting"
    assert await redis_roundtrip(redis_db.url, key=key, value="hello") == b"hello"


async def test_redis_db_fixture_starts_empty(redis_db: RedisDb) -> None:
    client = redis.asyncio.Redis.from_url(redis_db.url)
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_rabbitmq_publish_with_confirms_then_consume(rabbitmq_vhost: RabbitVhost) -> None:
    await amqp_publish(rabbitmq_vhost.url, queue="harness", body=b"event-1")
    assert await amqp_consume_one(rabbitmq_vhost.url, queue="harness") == b"event-1"


async def test_rabbitmq_vhosts_are_isolated(rabbitmq_vhost: RabbitVhost) -> None:
    await amqp_publish(rabbitmq_vhost.url, queue="isolated", body=b"mine")
    connection = await aio_pika.connect(rabbitmq_vhost.server.url)  # the default vhost "/"
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed, match="NOT_FOUND"):
            await channel.declare_queue("isolated", passive=True)


async def test_ferretdb_insert_then_find(mongo_database: MongoDatabase) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_database.url)
    try:
        things = client[mongo_database.name]["things"]
        await things.insert_one({"_id": "t1", "state": "new"})
        found = await things.find_one({"_id": "t1"})
    finally:
        await client.close()
    assert found == {"_id": "t1", "state": "new"}


# --- stop + start on the same port ---------------------------------------------------------


def test_redis_restart_keeps_port_and_url(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop()
    assert port_is_free(redis_server.port)
    redis_server.start()
    assert redis_server.url == url
    assert asyncio.run(redis_roundtrip(url, key="after-restart", value="1")) == b"1"


@pytest.mark.parametrize("halt", [RedisServer.stop, RedisServer.kill], ids=["stop", "kill"])
def test_persistent_redis_keeps_a_key_across_restart(
    server_factory: ServerFactory, halt: Callable[[RedisServer], None]
) -> None:
    server = server_factory.start(RedisServer, persistent=True)
    asyncio.run(redis_roundtrip(server.url, key="durable", value="kept"))
    halt(server)
    server.start()
    assert asyncio.run(redis_get(server.url, "durable")) == b"kept"


def test_redis_without_persistence_restarts_empty(server_factory: ServerFactory) -> None:
    server = server_factory.start(RedisServer)
    asyncio.run(redis_roundtrip(server.url, key="volatile", value="gone"))
    server.stop()
    server.start()
    assert asyncio.run(redis_get(server.url, "volatile")) is None


def test_rabbitmq_restart_keeps_port_and_persistent_messages(
    rabbitmq_server: RabbitMqServer,
) -> None:
    url = rabbitmq_server.url
    asyncio.run(amqp_publish(url, queue="survives-restart", body=b"persistent"))
    processes = process_tree(rabbitmq_server.pids)
    rabbitmq_server.stop()
    # A graceful stop leaves nothing either: not the VM's helpers, not the node's own epmd.
    ports = [rabbitmq_server.port, rabbitmq_server.dist_port, rabbitmq_server.epmd_port]
    assert_gone(rabbitmq_server, ports, processes)
    rabbitmq_server.start()
    assert rabbitmq_server.url == url
    assert asyncio.run(amqp_consume_one(url, queue="survives-restart")) == b"persistent"


def test_ferretdb_restart_keeps_port_and_data(ferretdb_server: FerretDbServer) -> None:
    with mongo_client(ferretdb_server.url) as client:
        client["harness_restart"]["things"].insert_one({"_id": 1})
    ferretdb_server.stop()
    assert port_is_free(ferretdb_server.port)
    ferretdb_server.start()
    with mongo_client(ferretdb_server.url) as client:
        assert client["harness_restart"]["things"].find_one({"_id": 1}) == {"_id": 1}
        client.drop_database("harness_restart")


async def test_astart_boots_while_the_event_loop_runs(server_factory: ServerFactory) -> None:
    server = server_factory.start(RedisServer)
    await server.astop()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await server.astart()
    ticker.cancel()
    assert ticks > 0
    assert await redis_roundtrip(server.url, key="k", value="v") == b"v"


# --- kill leaves nothing behind ------------------------------------------------------------


@pytest.mark.parametrize("kind", [RedisServer, RabbitMqServer, FerretDbServer])
def test_kill_leaves_no_process_and_frees_the_ports(
    server_factory: ServerFactory, kind: type[TestServer]
) -> None:
    server = server_factory.start(kind)
    ports = [server.port]
    if isinstance(server, RabbitMqServer):
        ports += [server.dist_port, server.epmd_port]
    processes = process_tree(server.pids)
    assert processes
    server.kill()
    assert_gone(server, ports, processes)


def test_servers_die_with_the_test_process(tmp_path: Any) -> None:
    """A session killed with SIGKILL (no teardown) takes its servers along (PDEATHSIG)."""
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from tests.brokers.redis_server import RedisServer
        server = RedisServer(root=Path({str(tmp_path)!r}))
        server.start()
        print(json.dumps({{"pids": server.pids, "port": server.port}}), flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    ) as session:
        assert session.stdout is not None
        started = json.loads(session.stdout.readline())
        processes = process_tree(started["pids"])
        assert processes
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
    wait_until(
        lambda: not any(p.alive() for p in processes) and port_is_free(started["port"]),
        timeout=15,
        what=f"redis-server {started['pids']} to die with its parent",
    )


def test_a_server_that_cannot_start_names_the_wait_and_shows_its_log(
    server_factory: ServerFactory, tmp_path: Any
) -> None:
    occupied = server_factory.start(RedisServer)
    clash = RedisServer(root=tmp_path / "clash", port=occupied.port)
    with pytest.raises(ServerStartError) as raised:
        clash.start()
    message = str(raised.value)
    assert f"redis on 127.0.0.1:{occupied.port} to answer" in message
    assert "exited with code" in message
    assert "Address already in use" in message
    assert not clash.running


# --- what FerretDB 1.24 (SQLite) does not do -----------------------------------------------


def test_ferretdb_refuses_transactions(mongo_database: MongoDatabase) -> None:
    """Multi-document transactions are not implemented: the first operation in one fails."""
    with mongo_client(mongo_database.url) as client:
        things = client[mongo_database.name]["things"]
        with client.start_session() as session:
            session.start_transaction()
            with pytest.raises(OperationFailure, match="startTransaction"):
                things.insert_one({"_id": "in-txn"}, session=session)
        assert things.find_one({"_id": "in-txn"}) is None


def test_ferretdb_has_no_change_streams(mongo_database: MongoDatabase) -> None:
    with mongo_client(mongo_database.url) as client:
        things = client[mongo_database.name]["things"]
        with pytest.raises(OperationFailure) as raised:
            things.watch()
    assert raised.value.code == NOT_IMPLEMENTED


def test_ferretdb_has_no_ttl_indexes(mongo_database: MongoDatabase) -> None:
    with mongo_client(mongo_database.url) as client:
        things = client[mongo_database.name]["things"]
        with pytest.raises(OperationFailure) as raised:
            things.create_index("expiresAt", expireAfterSeconds=1)
    assert raised.value.code == NOT_IMPLEMENTED


def test_ferretdb_enforces_unique_indexes(mongo_database: MongoDatabase) -> None:
    """What the engine can use instead of transactions: unique keys and single-document
    atomic updates."""
    with mongo_client(mongo_database.url) as client:
        things = client[mongo_database.name]["things"]
        things.create_index("eventId", unique=True)
        things.insert_one({"eventId": "e1"})
        with pytest.raises(OperationFailure, match="E11000"):
            things.insert_one({"eventId": "e1"})


def test_ferretdb_find_one_and_update_is_atomic_on_one_document(
    mongo_database: MongoDatabase,
) -> None:
    with mongo_client(mongo_database.url) as client:
        things = client[mongo_database.name]["things"]
        things.insert_one({"_id": "thred", "version": 1})
        updated = things.find_one_and_update(
            {"_id": "thred", "version": 1}, {"$inc": {"version": 1}}, return_document=True
        )
        stale = things.find_one_and_update(
            {"_id": "thred", "version": 1}, {"$inc": {"version": 1}}, return_document=True
        )
    assert updated == {"_id": "thred", "version": 2}
    assert stale is None
