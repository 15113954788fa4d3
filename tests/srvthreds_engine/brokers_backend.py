"""The behaviour tests' "brokers" backend: Redis thred and session stores, MongoDB persistence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from srvthreds_engine.adapters.memory import MemoryPersistence
from srvthreds_engine.adapters.mongo import Document, MongoPersistence
from srvthreds_engine.adapters.redis import RedisSessionStore, RedisThredStore
from srvthreds_engine.apps.replay import Replay
from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.patterns import Pattern


class RecordingMongoPersistence(MemoryPersistence):
    """Every write goes to MongoDB and to the in-memory record; every read to MongoDB.

    The tests (and replay's output) look at `events`, `log`, `archive` and `user_archived` as
    in memory, while the engine's reads (`events_for_thred`, `archived_threds`, `run_tasks`)
    exercise the MongoDB adapter.
    """

    def __init__(self, mongo: MongoPersistence) -> None:
        super().__init__()
        self.mongo = mongo

    async def save_event(self, event: dict[str, Any], *, thred_id: str | None) -> None:
        """Record an event in both."""
        await super().save_event(event, thred_id=thred_id)
        await self.mongo.save_event(event, thred_id=thred_id)

    async def set_event_to(self, event_id: str, *, to: list[str]) -> None:
        """Record an event's recipients in both."""
        await super().set_event_to(event_id, to=to)
        await self.mongo.set_event_to(event_id, to=to)

    async def set_event_error(self, event_id: str, *, error: dict[str, Any]) -> None:
        """Record an event's error in both."""
        await super().set_event_error(event_id, error=error)
        await self.mongo.set_event_error(event_id, error=error)

    async def add_log(self, record: dict[str, Any]) -> None:
        """Append a log record to both."""
        await super().add_log(record)
        await self.mongo.add_log(record)

    async def archive_thred(self, view: dict[str, Any]) -> None:
        """Archive a thred view in both."""
        await super().archive_thred(view)
        await self.mongo.archive_thred(view)

    async def add_archived_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Note a user's archived thred in both."""
        await super().add_archived_thred(participant_id, thred_id=thred_id)
        await self.mongo.add_archived_thred(participant_id, thred_id=thred_id)

    async def events_for_thred(self, thred_id: str) -> list[dict[str, Any]]:
        """A thred's event records, from MongoDB."""
        return await self.mongo.events_for_thred(thred_id)

    async def archived_threds(
        self, *, matcher: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Archived thred views, selected by MongoDB."""
        return await self.mongo.archived_threds(matcher=matcher)

    async def run_tasks(self, tasks: list[Any]) -> list[Any]:
        """dataControl tasks, run by MongoDB."""
        return await self.mongo.run_tasks(tasks)

    async def flush(self) -> None:
        """Write what MongoDB has buffered."""
        await self.mongo.flush()


@dataclass
class BrokersBackend:
    """Builds each Driver's Replay on Redis and MongoDB, under a key prefix and a database of its
    own (a test may make several Drivers); `close` drops the databases and closes the clients.

    The clients are shared by the Drivers of one test and made on first use, in its event loop.
    """

    redis_url: str
    key_prefix: str
    mongo_url: str
    database_prefix: str
    name = "brokers"
    databases: list[str] = field(default_factory=list)
    _redis: Redis | None = None
    _mongo: AsyncMongoClient[Document] | None = None

    def replay(
        self,
        patterns: list[Pattern],
        *,
        sessions_model: SessionsModel,
        resolver_config: ResolverConfig,
    ) -> Replay:
        """A Replay whose store, sessions and persistence all run on the servers' clock: its own."""
        number = len(self.databases)
        prefix = f"{self.key_prefix}d{number}:"
        database = f"{self.database_prefix}_{number}"
        self.databases.append(database)
        clock = VirtualClock()
        redis = self._redis_client()
        return Replay(
            patterns,
            sessions_model=sessions_model,
            resolver_config=resolver_config,
            clock=clock,
            store=RedisThredStore(redis, clock=clock, prefix=prefix),
            sessions=RedisSessionStore(redis, prefix=prefix),
            persistence=RecordingMongoPersistence(
                MongoPersistence(self._mongo_client(), database=database, clock=clock)
            ),
        )

    def _redis_client(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    def _mongo_client(self) -> AsyncMongoClient[Document]:
        if self._mongo is None:
            self._mongo = AsyncMongoClient(
                self.mongo_url, serverSelectionTimeoutMS=10_000, tz_aware=True
            )
        return self._mongo

    async def close(self) -> None:
        """Drop the Drivers' databases and close both clients (Redis keys go with the db)."""
        if self._mongo is not None:
            try:
                for database in self.databases:
                    await self._mongo.drop_database(database)
            finally:
                await self._mongo.close()
        if self._redis is not None:
            await self._redis.aclose()
