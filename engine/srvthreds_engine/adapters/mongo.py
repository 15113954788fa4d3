"""MongoDB persistence (PyMongo's AsyncMongoClient): records, archives, users, patterns, tasks."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.errors import InvalidDocument
from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne, uri_parser
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError, WriteError

from srvthreds_engine.core.clock import SystemClock
from srvthreds_engine.core.errors import EngineError
from srvthreds_engine.core.tasks import (
    COUNT,
    DELETE,
    GET,
    GET_ONE,
    PUT,
    REPLACE,
    UPDATE,
    UPSERT,
    Plan,
    TaskPlan,
    plan_tasks,
    put_result,
    shape_document,
    task_error,
    translate_matcher,
)
from srvthreds_engine.ports import Clock

Document = dict[str, Any]
Collection = AsyncCollection[Document]
Session = AsyncClientSession | None

DEFAULT_DATABASE = "nr"
REFUSALS_KEPT = 100
_log = logging.getLogger(__name__)
EVENT_RECORDS = "EventRecord"
THRED_LOG = "ThredLogRecord"
THRED_RECORDS = "ThredRecord"
PATTERNS = "PatternModel"
USERS = "User"
CONFIGS = "Config"
# A log record is the same record when these agree (a redelivered event logs them again).
LOG_KEY = ("eventId", "thredId", "type", "fromReaction", "toReaction")
ARCHIVED_PATH = "threds.archived"


@dataclass(frozen=True, slots=True)
class _Write:
    """One idempotent upsert of a record: an update, or a whole replacement."""

    filter: Document
    update: Document
    replace: bool = False

    def operation(self) -> UpdateOne | ReplaceOne[Document]:
        if self.replace:
            return ReplaceOne(self.filter, self.update, upsert=True)
        return UpdateOne(self.filter, self.update, upsert=True)

    async def run_alone(self, collection: Collection) -> None:
        if self.replace:
            await collection.replace_one(self.filter, self.update, upsert=True)
        else:
            await collection.update_one(self.filter, self.update, upsert=True)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One index `ensure_indexes` creates (`unique` ones are sparse: task-made documents may
    carry their id only as `_id`)."""

    collection: str
    field: str
    unique: bool = False

    @property
    def name(self) -> str:
        """The index name (stable, so creating it again is a no-op)."""
        return f"{self.field}_unique" if self.unique else f"{self.field}_1"


INDEXES = (
    IndexSpec(EVENT_RECORDS, "id", unique=True),
    IndexSpec(EVENT_RECORDS, "thredId"),
    IndexSpec(THRED_LOG, "eventId"),
    IndexSpec(THRED_LOG, "thredId"),
    IndexSpec(THRED_RECORDS, "id", unique=True),
    IndexSpec(PATTERNS, "id", unique=True),
    IndexSpec(USERS, "id", unique=True),
    IndexSpec(CONFIGS, "id", unique=True),
)


@dataclass(slots=True)
class _EventWrite:
    """What the buffered calls for one EventRecord set (later calls win)."""

    fields: Document = field(default_factory=dict)
    on_insert: Document = field(default_factory=dict)

    def absorb(self, later: _EventWrite) -> None:
        self.fields.update(later.fields)
        self.on_insert = later.on_insert | self.on_insert


@dataclass(slots=True)
class _Pending:
    """Writes buffered since the last flush, per collection."""

    events: dict[str, _EventWrite] = field(default_factory=dict)
    logs: list[Document] = field(default_factory=list)
    threds: dict[str, Document] = field(default_factory=dict)
    archived: dict[str, list[str]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.events or self.logs or self.threds or self.archived)

    def event(self, event_id: str, *, timestamp: int) -> _EventWrite:
        write = self.events.get(event_id)
        if write is None:
            write = self.events[event_id] = _EventWrite(
                on_insert={"id": event_id, "timestamp": timestamp}
            )
        return write

    def absorb(self, later: _Pending) -> None:
        """Append writes buffered after these (a failed flush keeps its writes first)."""
        for event_id, write in later.events.items():
            if event_id in self.events:
                self.events[event_id].absorb(write)
            else:
                self.events[event_id] = write
        self.logs.extend(later.logs)
        self.threds.update(later.threds)
        for participant_id, thred_ids in later.archived.items():
            self.archived.setdefault(participant_id, []).extend(thred_ids)


class MongoPersistence:
    """`Persistence` on MongoDB (database `nr` by default) plus pattern and config reads.

    NB: the write methods only buffer; `flush()` makes them durable (one unordered bulk write
    per collection, idempotent upserts, so a redelivered event's records are not duplicated).
    Reads and `run_tasks` flush first. Connection failures raise PyMongo's errors.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        *,
        database: str = DEFAULT_DATABASE,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._db = client.get_database(database)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._pending = _Pending()
        # One flush at a time: a flush that finds the buffer empty must still wait for the
        # flush that took this caller's writes, or the caller would ack before they are durable.
        self._flush_lock = asyncio.Lock()
        self._transactions_refused: str | None = None
        # The latest records the server refused for good (see flush), newest last.
        self.refused: deque[str] = deque(maxlen=REFUSALS_KEPT)
        self._transactions_checked = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        database: str | None = None,
        clock: Clock | None = None,
        timeout_ms: int = 5000,
    ) -> MongoPersistence:
        """A persistence with its own client (no I/O until first used).

        The database is `database`, else the one the URL names (`mongodb://host/<db>`), else
        `nr` (spec §13).
        """
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        named = uri_parser.parse_uri(url).get("database")
        return cls(client, database=database or named or DEFAULT_DATABASE, clock=clock)

    # --- health ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Readiness: raises PyMongo's error when the server cannot be reached."""
        await self._client.admin.command("ping")

    async def close(self) -> None:
        """Write what is still buffered, then close the client (also when the flush fails)."""
        try:
            await self.flush()
        finally:
            await self._client.close()

    async def ensure_indexes(self) -> list[str]:
        """Create the indexes of spec §13 (a no-op for those that exist); their names."""
        for spec in INDEXES:
            await self._db[spec.collection].create_index(
                [(spec.field, 1)], name=spec.name, unique=spec.unique, sparse=spec.unique
            )
        return [spec.name for spec in INDEXES]

    # --- buffered writes -----------------------------------------------------------------------

    async def save_event(self, event: dict[str, Any], *, thred_id: str | None) -> None:
        """Buffer an EventRecord `{id, event, thredId, timestamp}`."""
        event_id = str(event["id"])
        fields: Document = {"event": event}
        if thred_id is not None:
            fields["thredId"] = thred_id
        self._pending.event(event_id, timestamp=self._clock.now_ms()).fields.update(fields)

    async def set_event_to(self, event_id: str, *, to: list[str]) -> None:
        """Buffer the resolved recipients of an event."""
        self._pending.event(event_id, timestamp=self._clock.now_ms()).fields["to"] = list(to)

    async def set_event_error(self, event_id: str, *, error: dict[str, Any]) -> None:
        """Buffer why an event failed."""
        self._pending.event(event_id, timestamp=self._clock.now_ms()).fields["error"] = error

    async def add_log(self, record: dict[str, Any]) -> None:
        """Buffer a ThredLogRecord."""
        self._pending.logs.append(dict(record))

    async def archive_thred(self, view: dict[str, Any]) -> None:
        """Buffer a ThredRecord `{id, thred}`."""
        self._pending.threds[str(view["id"])] = view

    async def add_archived_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Buffer an addition to the user's `threds.archived` (the user is made if missing)."""
        self._pending.archived.setdefault(participant_id, []).append(thred_id)

    async def flush(self) -> None:
        """Write everything buffered; on failure it stays buffered (and the error is raised).

        Records the server refuses for good (a duplicate key, a document it cannot store, such
        as an integer beyond 64 bits) are dropped, logged and kept in `refused`, not retried:
        they would be refused again and hold back every later flush, and the processing they
        record is already committed.
        """
        async with self._flush_lock:
            batch, self._pending = self._pending, _Pending()
            if batch.empty():
                return
            try:
                refusals = await self._write(batch)
            except BaseException:
                batch.absorb(self._pending)
                self._pending = batch
                raise
        for refusal in refusals:
            _log.error("record refused by MongoDB, dropped: %s", refusal)
        self.refused.extend(refusals)

    async def _write(self, batch: _Pending) -> list[str]:
        bulks = _bulk_writes(batch)
        outcomes = await asyncio.gather(
            *(self._bulk(name, writes) for name, writes in bulks), return_exceptions=True
        )
        refusals: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            refusals.extend(outcome)
        return refusals

    async def _bulk(self, name: str, writes: list[_Write]) -> list[str]:
        """Write one collection's records; the refusals of those the server refuses for good."""
        collection = self._db[name]
        try:
            await collection.bulk_write([write.operation() for write in writes], ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            return [_refusal(name, error) for error in exc.details.get("writeErrors") or []]
        except PyMongoError:
            raise
        except Exception:
            # A record BSON cannot hold, or an answer the driver cannot read (FerretDB 1.24
            # leaves `nModified` out of an update reply with write errors): one at a time, the
            # refused records show themselves.
            return await _write_one_by_one(collection, name=name, writes=writes)
        return []

    # --- reads -----------------------------------------------------------------------------------

    async def events_for_thred(self, thred_id: str) -> list[dict[str, Any]]:
        """Every EventRecord of a thred, oldest first (ties in the order they were stored)."""
        await self.flush()
        cursor = self._db[EVENT_RECORDS].find({"thredId": thred_id}, projection={"_id": False})
        records = [record async for record in cursor]
        # A stable sort keeps the natural (insertion) order of records within one millisecond.
        return sorted(records, key=lambda record: int(record.get("timestamp") or 0))

    async def archived_threds(
        self, *, matcher: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Archived thred views whose ThredRecord `{id, thred}` satisfies `matcher` (in MongoDB)."""
        await self.flush()
        query = translate_matcher(matcher, where="matcher", map_id=False)
        cursor = self._db[THRED_RECORDS].find(query, projection={"thred": True, "_id": False})
        return [record["thred"] async for record in cursor if "thred" in record]

    async def user_archived(self, participant_id: str) -> list[str]:
        """The user's `threds.archived` (empty for an unknown user)."""
        await self.flush()
        user = await self._db[USERS].find_one(_by_id(participant_id))
        archived = ((user or {}).get("threds") or {}).get("archived") or []
        return [str(thred_id) for thred_id in archived]

    async def active_patterns(self) -> list[dict[str, Any]]:
        """Pattern JSON of every PatternModel with `meta.active` true (the caller validates)."""
        cursor = self._db[PATTERNS].find({"meta.active": True})
        return [shape_document(document) async for document in cursor]

    async def config(self, name: str) -> dict[str, Any] | None:
        """The `config` of the Config document named `name`, or None."""
        document = await self._db[CONFIGS].find_one(_by_id(name))
        value = (document or {}).get("config")
        return dict(value) if isinstance(value, Mapping) else None

    # --- tasks -----------------------------------------------------------------------------------

    async def run_tasks(self, tasks: list[Any]) -> list[Any]:
        """Run dataControl tasks (spec §11); a task that fails raises EngineError 5200."""
        plans = plan_tasks(tasks)
        transactions = [plan for plan in plans if isinstance(plan, list)]
        if transactions:
            await self._refuse_transaction(transactions[0])
        await self.flush()
        return [await self._run_plan(plan) for plan in plans]

    async def _run_plan(self, plan: Plan) -> Any:
        if isinstance(plan, TaskPlan):
            return await self._run_task(plan, session=None)
        return await self._run_transaction(plan)

    async def _run_transaction(self, plans: list[TaskPlan]) -> list[Any]:
        await self._refuse_transaction(plans)
        running = plans[0]

        async def run_all(session: AsyncClientSession) -> list[Any]:
            # Unwrapped: with_transaction retries on PyMongo's transient error labels.
            nonlocal running
            results = []
            for plan in plans:
                running = plan
                results.append(await _RUNNERS[plan.op](self._collection(plan), plan, session))
            return results

        try:
            async with self._client.start_session() as session:
                return await session.with_transaction(run_all)
        except OperationFailure as exc:
            raise _task_failed(running, exc) from exc

    async def _refuse_transaction(self, plans: list[TaskPlan]) -> None:
        refusal = await self.transactions_refused()
        if refusal is not None:
            where = plans[0].where.rsplit("[", 1)[0]
            raise task_error(f"{where}: cannot run the tasks as one transaction: {refusal}")

    async def transactions_refused(self) -> str | None:
        """Why this server cannot run transactions (None: it can); asked once."""
        if not self._transactions_checked:
            build_info = await self._client.admin.command("buildInfo")
            hello = await self._client.admin.command("hello")
            self._transactions_refused = transaction_refusal(build_info, hello=hello)
            self._transactions_checked = True
        return self._transactions_refused

    async def _run_task(self, plan: TaskPlan, *, session: Session) -> Any:
        try:
            return await _RUNNERS[plan.op](self._collection(plan), plan, session)
        except (OperationFailure, InvalidDocument, OverflowError) as exc:
            raise _task_failed(plan, exc) from exc

    def _collection(self, plan: TaskPlan) -> Collection:
        database = self._db if plan.database is None else self._client[plan.database]
        return database[plan.collection]


def _task_failed(plan: TaskPlan, error: Exception) -> EngineError:
    """The 5200 error of a task the server (or BSON) refused."""
    if isinstance(error, OperationFailure):
        message = (error.details or {}).get("errmsg") or str(error)
        cause: Any = {"code": error.code}
    else:
        message, cause = f"not storable as BSON: {error}", None
    return task_error(
        f"{plan.where}: {plan.op} on {plan.collection} failed: {message}", cause=cause
    )


def transaction_refusal(build_info: Mapping[str, Any], *, hello: Mapping[str, Any]) -> str | None:
    """Why a server (its `buildInfo` and `hello` answers) cannot run transactions, or None."""
    ferretdb = build_info.get("ferretdbVersion")
    if ferretdb is not None:
        return f"the server is FerretDB {ferretdb}, which does not support transactions"
    if hello.get("setName") is None and hello.get("msg") != "isdbgrid":
        return "the server is a standalone MongoDB; transactions need a replica set or mongos"
    return None


def _bulk_writes(batch: _Pending) -> list[tuple[str, list[_Write]]]:
    """One unordered bulk write per collection with buffered records."""
    bulks: list[tuple[str, list[_Write]]] = [
        (EVENT_RECORDS, [_event_write(*item) for item in batch.events.items()]),
        (THRED_LOG, [_log_write(record) for record in batch.logs]),
        (THRED_RECORDS, [_thred_write(view) for view in batch.threds.values()]),
        (USERS, [_archived_write(*item) for item in batch.archived.items()]),
    ]
    return [(name, writes) for name, writes in bulks if writes]


async def _write_one_by_one(
    collection: Collection, *, name: str, writes: list[_Write]
) -> list[str]:
    refusals = []
    for write in writes:
        try:
            await write.run_alone(collection)
        except WriteError as exc:
            refusals.append(_refusal(name, exc.details or {"errmsg": str(exc)}))
        except (InvalidDocument, OverflowError) as exc:
            # Not storable as BSON (e.g. an integer beyond 64 bits in a client's event).
            refusals.append(_refusal(name, {"errmsg": str(exc)}))
    return refusals


def _refusal(collection: str, error: Mapping[str, Any]) -> str:
    return f"{collection}: {error.get('errmsg')}"


def _by_id(document_id: str) -> Document:
    # Documents the engine writes carry both; task-made ones only `_id`, imported ones maybe `id`.
    return {"$or": [{"_id": document_id}, {"id": document_id}]}


def _event_write(event_id: str, write: _EventWrite) -> _Write:
    update: Document = {"$setOnInsert": write.on_insert}
    if write.fields:
        update["$set"] = write.fields
    return _Write({"_id": event_id}, update)


def _log_write(record: Document) -> _Write:
    # `$exists: false` rather than `null`: an upsert copies equality fields into the new record.
    key = {name: record.get(name, {"$exists": False}) for name in LOG_KEY}
    return _Write(key, {"$setOnInsert": record})


def _thred_write(view: Document) -> _Write:
    thred_id = str(view["id"])
    return _Write({"_id": thred_id}, {"_id": thred_id, "id": thred_id, "thred": view}, replace=True)


def _archived_write(participant_id: str, thred_ids: list[str]) -> _Write:
    # Matched like `user_archived` reads: a user imported with its own `_id` is not doubled.
    return _Write(
        _by_id(participant_id),
        {
            "$addToSet": {ARCHIVED_PATH: {"$each": list(dict.fromkeys(thred_ids))}},
            "$setOnInsert": {"_id": participant_id, "id": participant_id},
        },
    )


# --- one task, one MongoDB call ---------------------------------------------------------------


async def _put(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    documents = [dict(document) for document in plan.documents]
    if plan.many:
        await collection.insert_many(documents, session=session)
    else:
        await collection.insert_one(documents[0], session=session)
    return put_result(plan)


async def _get_one(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    document = await collection.find_one(
        plan.filter,
        projection=plan.projection,
        sort=plan.sort or None,
        skip=plan.skip,
        session=session,
    )
    return None if document is None else shape_document(document)


async def _get(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    cursor = collection.find(
        plan.filter,
        projection=plan.projection,
        sort=plan.sort or None,
        skip=plan.skip,
        limit=plan.limit,
        session=session,
    )
    return [shape_document(document) async for document in cursor]


async def _update(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    await collection.update_many(plan.filter, plan.update or {}, session=session)


async def _upsert(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    await collection.update_one(plan.filter, plan.update or {}, upsert=True, session=session)


async def _replace(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    await collection.replace_one(plan.filter, plan.documents[0], session=session)


async def _delete(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    await collection.delete_many(plan.filter, session=session)


async def _count(collection: Collection, plan: TaskPlan, session: Session) -> Any:
    return await collection.count_documents(plan.filter, session=session)


_RUNNERS: dict[str, Callable[[Collection, TaskPlan, Session], Awaitable[Any]]] = {
    PUT: _put,
    GET_ONE: _get_one,
    GET: _get,
    UPDATE: _update,
    UPSERT: _upsert,
    REPLACE: _replace,
    DELETE: _delete,
    COUNT: _count,
}
