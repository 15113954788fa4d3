"""Fixtures of the engine-node tests: the test's report sections and fresh backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.brokers.fixtures import MongoDatabase, RabbitVhost, RedisDb
from tests.srvthreds_engine.backends.nodes import Backends

Report = Callable[[str, str], None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Adds a section (an engine's log) to the test's report, shown when it fails."""

    def add(title: str, text: str) -> None:
        request.node.add_report_section("call", title, text)

    return add


@pytest.fixture
def shared_backends(
    redis_db: RedisDb, rabbitmq_vhost: RabbitVhost, mongo_database: MongoDatabase
) -> Backends:
    """A fresh Redis db, vhost and Mongo database on the session servers."""
    return Backends(
        redis_url=redis_db.url,
        rabbitmq_url=rabbitmq_vhost.url,
        mongodb_url=mongo_database.url + mongo_database.name,
    )
