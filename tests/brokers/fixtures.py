"""pytest fixtures: session-wide Redis, RabbitMQ and FerretDB, and per-test isolation in them."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from pymongo import MongoClient

from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.rabbitmq_server import RabbitMqServer
from tests.brokers.redis_server import DATABASES, RedisServer
from tests.brokers.server import TestServer

ServerT = TypeVar("ServerT", bound=TestServer)


def _serve(server: ServerT) -> Iterator[ServerT]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (no persistence), started on first use."""
    yield from _serve(RedisServer(root=tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMqServer]:
    """One RabbitMQ node for the session, started on first use (a boot takes 10-30 s)."""
    yield from _serve(RabbitMqServer(root=tmp_path_factory.mktemp("rabbitmq")))


@pytest.fixture(scope="session")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDbServer]:
    """One FerretDB (SQLite) for the session, started on first use."""
    yield from _serve(FerretDbServer(root=tmp_path_factory.mktemp("ferretdb")))


def unique_name(test_name: str, *, separator: str, limit: int) -> str:
    """`t<sep><test name, sanitised><sep><8 hex>`, at most `limit` characters."""
    slug = re.sub(r"[^a-z0-9]+", separator, test_name.lower()).strip(separator)
    suffix = uuid.uuid4().hex[:8]
    slug = slug[: limit - len(suffix) - 2 * len(separator) - 1].rstrip(separator)
    return f"t{separator}{slug}{separator}{suffix}"


@dataclass(frozen=True)
class RedisDb:
    """A Redis database number of its own, and a key prefix for code that needs db 0."""

    server: RedisServer
    db: int
    key_prefix: str

    @property
    def url(self) -> str:
        return self.server.db_url(self.db)


# Database 0 stays for code that cannot choose one; a session of more than 1023 tests reuses
# numbers, each flushed after its test.
_redis_dbs = itertools.cycle(range(1, DATABASES))


@pytest.fixture
def redis_db(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[RedisDb]:
    """A fresh, empty Redis database on the session server, flushed afterwards."""
    redis_server.ensure_running()
    allocated = RedisDb(
        server=redis_server,
        db=next(_redis_dbs),
        key_prefix=unique_name(request.node.name, separator=":", limit=60) + ":",
    )
    _flush(allocated)
    yield allocated
    if redis_server.running:
        _flush(allocated)


def _flush(allocated: RedisDb) -> None:
    client = redis.Redis.from_url(allocated.url, socket_timeout=10.0)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass(frozen=True)
class RabbitVhost:
    """A RabbitMQ virtual host of its own, on which guest may do anything."""

    server: RabbitMqServer
    name: str

    @property
    def url(self) -> str:
        return self.server.vhost_url(self.name)


@pytest.fixture
def rabbitmq_vhost(
    rabbitmq_server: RabbitMqServer, request: pytest.FixtureRequest
) -> Iterator[RabbitVhost]:
    """A fresh vhost on the session node (one rabbitmqctl run, 1-3 s), deleted later."""
    rabbitmq_server.ensure_running()
    vhost = RabbitVhost(
        server=rabbitmq_server, name=unique_name(request.node.name, separator="-", limit=80)
    )
    rabbitmq_server.add_vhost(vhost.name)
    yield vhost
    rabbitmq_server.discard_vhost(vhost.name)


@dataclass(frozen=True)
class MongoDatabase:
    """A database name of its own on the session FerretDB."""

    server: FerretDbServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def mongo_database(
    ferretdb_server: FerretDbServer, request: pytest.FixtureRequest
) -> Iterator[MongoDatabase]:
    """A fresh database name on the session FerretDB, dropped afterwards."""
    ferretdb_server.ensure_running()
    # FerretDB accepts database names of [a-zA-Z0-9_-] up to 63 characters.
    database = MongoDatabase(
        server=ferretdb_server, name=unique_name(request.node.name, separator="_", limit=63)
    )
    yield database
    if ferretdb_server.running:
        client: MongoClient[dict[str, Any]] = MongoClient(database.url)
        try:
            client.drop_database(database.name)
        finally:
            client.close()


@dataclass
class ServerFactory:
    """Starts private servers for one test (e.g. one to kill, or Redis with persistence)."""

    root: Path
    servers: list[TestServer] = field(default_factory=list)

    def start(self, kind: Callable[..., ServerT], **options: Any) -> ServerT:
        server = kind(root=self.root / f"server-{len(self.servers)}", **options)
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """`server_factory.start(RedisServer, persistent=True)`: private servers, killed after."""
    factory = ServerFactory(root=tmp_path)
    yield factory
    factory.stop_all()


def _servers_of(item: pytest.Item) -> list[TestServer]:
    values = getattr(item, "funcargs", {}).values()
    found: list[TestServer] = []
    for value in values:
        if isinstance(value, TestServer):
            found.append(value)
        elif isinstance(value, ServerFactory):
            found.extend(value.servers)
        elif isinstance(getattr(value, "server", None), TestServer):
            found.append(value.server)
    return list(dict.fromkeys(found))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attaches the end of each used server's log to a failed test's report."""
    report: pytest.TestReport = yield
    if report.failed:
        for server in _servers_of(item):
            report.sections.append((f"{server.name} log ({server.log_path})", server.log_tail()))
    return report
