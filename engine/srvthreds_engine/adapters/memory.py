"""In-memory adapters of every port (store, sessions, persistence, dispatch): one process."""

from __future__ import annotations

import asyncio
import heapq
from bisect import bisect_left, insort
from collections import OrderedDict, defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from srvthreds_engine.core.errors import TASK_ERROR, EngineError
from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.core.matchers import compile_matcher
from srvthreds_engine.core.thred import Thred
from srvthreds_engine.ports import (
    Clock,
    CreationLimits,
    PatternCounters,
    Session,
    ThredChange,
)

LOCK_TIMEOUT_S = 5.0
NO_DATA_BACKEND = (
    "dataControl needs a persistence backend (MongoDB); none is configured: "
    "the embedded mode and replay keep their records in memory only"
)
# Work keys whose "done" marks are kept; in one process nothing is redelivered, so the marks
# only need to outlive the processing that made them.
DONE_MARKS_KEPT = 256


class LockTimeoutError(RuntimeError):
    """A lock could not be taken in time (e.g. a pattern that spawns itself while locked)."""


class _MemoryLock:
    """A FIFO mutex per key, held while the key is in the table.

    Not asyncio.Lock behind an @asynccontextmanager: a lock is taken for every thred an event
    touches, and the uncontended path here takes it without suspending or allocating a lock
    object. Release hands the key straight to the first waiter, so no third party can slip in.
    """

    __slots__ = ("_held", "_key")

    def __init__(self, held: dict[str, deque[asyncio.Future[None]]], key: str) -> None:
        self._held = held
        self._key = key

    async def acquire(self) -> None:
        waiters = self._held.get(self._key)
        if waiters is None:
            self._held[self._key] = deque()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await asyncio.wait_for(turn, timeout=LOCK_TIMEOUT_S)
        except TimeoutError as exc:
            raise LockTimeoutError(f"could not lock {self._key} within {LOCK_TIMEOUT_S} s") from exc

    def release(self) -> None:
        waiters = self._held[self._key]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._held[self._key]


class _MemoryUnit:
    """A locked, loaded thred; `commit` applies its changes to the store at once."""

    __slots__ = (
        "_held",
        "_lock",
        "_store",
        "_thred_id",
        "_work_key",
        "done",
        "recipient_sessions",
        "thred",
    )

    def __init__(
        self, store: MemoryThredStore, *, thred_id: str, work_key: str, lock: _MemoryLock | None
    ) -> None:
        self._store = store
        self._thred_id = thred_id
        self._work_key = work_key
        self._lock = lock
        self._held = False
        self.thred: Thred | None = None
        self.done = False
        # Sessions are in another store here: the dispatcher looks them up.
        self.recipient_sessions: dict[str, list[Session]] | None = None

    async def __aenter__(self) -> _MemoryUnit:
        if self._lock is None:
            # A brand-new id (the only use of lock=False): nothing is stored under it yet.
            return self
        await self._lock.acquire()
        self._held = True
        self.thred = self._store.load(self._thred_id)
        self.done = self._store.is_done(self._work_key, mark=self._thred_id)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._held and self._lock is not None:
            self._held = False
            self._lock.release()

    async def commit(
        self,
        changes: Sequence[ThredChange],
        *,
        outbox: Sequence[OutboundMessage],
        release: bool = True,
    ) -> bool:
        """Write every change, the done marks and the outbox, or nothing when limits refuse."""
        if not self._store.apply(changes, work_key=self._work_key, outbox=outbox):
            return False
        if release:
            self._release()
        return True

    async def settle(self) -> None:
        """Clear the work's outbox and release the lock."""
        self._store.drop_outbox(self._work_key)
        self._release()


class MemoryThredStore:
    """ThredStore in one process; threds are kept as JSON copies, as a database would."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._threds: dict[str, dict[str, Any]] = {}
        # Ids kept sorted as threds come and go, so listings need no sort.
        self._sorted_ids: list[str] = []
        self._counters: dict[str, PatternCounters] = {}
        self._unbound: dict[str, None] = {}
        self._participant_threds: dict[str, dict[str, None]] = defaultdict(dict)
        self._deadlines: dict[str, int] = {}
        self._deadline_heap: list[tuple[int, str]] = []
        self._locks: dict[str, deque[asyncio.Future[None]]] = {}
        self._done: OrderedDict[str, set[str]] = OrderedDict()
        self._outbox: dict[str, list[OutboundMessage]] = {}

    # --- units ---------------------------------------------------------------------------------

    def unit(self, thred_id: str, *, work_key: str, lock: bool = True) -> _MemoryUnit:
        """Lock (unless `lock` is False), load and mark-check one thred for one processing."""
        return _MemoryUnit(
            self,
            thred_id=thred_id,
            work_key=work_key,
            lock=_MemoryLock(self._locks, f"Thred:{thred_id}") if lock else None,
        )

    def load(self, thred_id: str) -> Thred | None:
        """The stored thred (a copy), or None."""
        stored = self._threds.get(thred_id)
        return None if stored is None else Thred.from_stored(stored)

    def is_done(self, work_key: str, *, mark: str) -> bool:
        """Whether `mark` (a thred id or `P:<pattern id>`) was committed for `work_key`."""
        return mark in self._done.get(work_key, ())

    async def creation_done(self, work_key: str, *, pattern_id: str) -> bool:
        """Whether `work_key` already created a thred of this pattern."""
        return self.is_done(work_key, mark=f"P:{pattern_id}")

    def apply(
        self,
        changes: Sequence[ThredChange],
        *,
        work_key: str,
        outbox: Sequence[OutboundMessage],
    ) -> bool:
        """A unit's commit: all of it, or nothing when a creation's limits refuse."""
        now_ms = self._clock.now_ms()
        if not all(self._limits_allow(change.create, now_ms=now_ms) for change in changes):
            return False
        marks = self._done.setdefault(work_key, set())
        self._done.move_to_end(work_key)
        while len(self._done) > DONE_MARKS_KEPT:
            self._done.popitem(last=False)
        for change in changes:
            if change.create is not None:
                self._count_creation(change.create, now_ms=now_ms)
                marks.add(f"P:{change.create.pattern_id}")
            self._write(change)
            marks.add(change.thred.id)
        if outbox:
            self._outbox.setdefault(work_key, []).extend(outbox)
        return True

    def _limits_allow(self, limits: CreationLimits | None, *, now_ms: int) -> bool:
        if limits is None:
            return True
        counters = self._counters.get(limits.pattern_id, PatternCounters())
        if limits.max_instances and counters.instances >= limits.max_instances:
            return False
        last = counters.last_instance_ms
        return not (limits.interval_ms and last is not None and now_ms - last < limits.interval_ms)

    def _count_creation(self, limits: CreationLimits, *, now_ms: int) -> None:
        counters = self._counters.get(limits.pattern_id, PatternCounters())
        self._counters[limits.pattern_id] = PatternCounters(counters.instances + 1, now_ms)

    def _write(self, change: ThredChange) -> None:
        thred = change.thred
        if change.ended:
            self._delete(thred)
            return
        if thred.id not in self._threds:
            insort(self._sorted_ids, thred.id)
        self._threds[thred.id] = thred.stored()
        if change.unbound:
            self._unbound[thred.id] = None
        else:
            self._unbound.pop(thred.id, None)
        self._set_deadline(thred.id, due_ms=change.deadline_ms)
        for participant in change.participants_added:
            self._participant_threds[participant][thred.id] = None

    def _delete(self, thred: Thred) -> None:
        if self._threds.pop(thred.id, None) is not None:
            del self._sorted_ids[bisect_left(self._sorted_ids, thred.id)]
        self._unbound.pop(thred.id, None)
        self._deadlines.pop(thred.id, None)
        for participant in thred.thredContext.participantIds:
            self._participant_threds[participant].pop(thred.id, None)
        counters = self._counters.get(thred.patternId)
        if counters is not None:
            counters.instances = max(counters.instances - 1, 0)

    def _set_deadline(self, thred_id: str, *, due_ms: int | None) -> None:
        if due_ms is None:
            self._deadlines.pop(thred_id, None)
        elif self._deadlines.get(thred_id) != due_ms:
            self._deadlines[thred_id] = due_ms
            heapq.heappush(self._deadline_heap, (due_ms, thred_id))

    # --- reads ---------------------------------------------------------------------------------

    async def get_thred(self, thred_id: str) -> Thred | None:
        """The stored thred (a copy), or None."""
        return self.load(thred_id)

    async def list_threds(self) -> list[Thred]:
        """Every stored thred, sorted by id."""
        return [Thred.from_stored(self._threds[key]) for key in self._sorted_ids]

    async def count_threds(self) -> int:
        """How many threds are stored."""
        return len(self._threds)

    def stored_items(self) -> list[tuple[str, dict[str, Any]]]:
        """`(id, stored JSON)` of every thred, sorted by id; a saved thred gets a new dict.

        NB: the dicts are the store's own (a reader may cache by identity); do not mutate them.
        """
        threds = self._threds
        return [(thred_id, threds[thred_id]) for thred_id in self._sorted_ids]

    async def unbound_thred_ids(self) -> list[str]:
        """Threds whose current reaction accepts unbound events."""
        return list(self._unbound)

    async def participant_thred_ids(self, participant_id: str) -> list[str]:
        """The threds a participant takes part in."""
        return list(self._participant_threds.get(participant_id, {}))

    async def get_counters(self, pattern_id: str) -> PatternCounters:
        """The pattern's instance counters."""
        counters = self._counters.get(pattern_id, PatternCounters())
        return PatternCounters(counters.instances, counters.last_instance_ms)

    def _drop_stale_deadlines(self) -> None:
        # The heap keeps superseded entries; the dict is the truth.
        heap = self._deadline_heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    async def due_thred_ids(self, now_ms: int, *, limit: int = 100) -> list[str]:
        """Threds whose deadline is at or before `now_ms`, earliest first."""
        heap = self._deadline_heap
        due: list[tuple[int, str]] = []
        self._drop_stale_deadlines()
        while heap and heap[0][0] <= now_ms and len(due) < limit:
            due.append(heapq.heappop(heap))
            self._drop_stale_deadlines()
        # Still stored until a commit moves or clears them: keep them findable.
        for entry in due:
            heapq.heappush(heap, entry)
        return list(dict.fromkeys(thred_id for _, thred_id in due))

    async def next_deadline_ms(self) -> int | None:
        """The earliest deadline, or None."""
        self._drop_stale_deadlines()
        return self._deadline_heap[0][0] if self._deadline_heap else None

    async def outbox(self, work_key: str) -> list[OutboundMessage]:
        """Messages committed for `work_key` and not yet cleared."""
        return list(self._outbox.get(work_key, ()))

    async def clear_outbox(self, work_key: str) -> None:
        """Forget the outbox of `work_key`."""
        self.drop_outbox(work_key)

    def drop_outbox(self, work_key: str) -> None:
        """Forget the outbox of `work_key`, synchronously."""
        self._outbox.pop(work_key, None)


class MemorySessionStore:
    """Live sessions by participant, in one process."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Session]] = defaultdict(list)

    async def sessions_for(self, participant_id: str) -> list[Session]:
        """Live sessions of a participant."""
        return list(self._sessions.get(participant_id, []))

    async def sessions_of(self, participant_ids: Sequence[str]) -> dict[str, list[Session]]:
        """Live sessions of several participants."""
        return {pid: list(self._sessions.get(pid, [])) for pid in participant_ids}

    async def participants_with_sessions(self) -> list[str]:
        """Every participant with at least one session."""
        return [key for key, sessions in self._sessions.items() if sessions]

    async def add_session(self, session: Session) -> None:
        """Register a live session (replacing one on the same node)."""
        sessions = self._sessions[session.participant_id]
        sessions[:] = [known for known in sessions if known.node_id != session.node_id]
        sessions.append(session)


class MemoryPersistence:
    """Event records, thred log, archive and users in memory."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self.archive: list[dict[str, Any]] = []
        self.user_archived: dict[str, list[str]] = defaultdict(list)
        self.documents: dict[str, dict[str, Any]] = {}

    async def save_event(self, event: dict[str, Any], *, thred_id: str | None) -> None:
        """Record an event (`EventRecord{id,event,thredId,timestamp}`)."""
        record: dict[str, Any] = {"id": event["id"], "event": event}
        if thred_id is not None:
            record["thredId"] = thred_id
        self.events[str(event["id"])] = record

    async def set_event_to(self, event_id: str, *, to: list[str]) -> None:
        """Record the resolved recipients of an outbound event."""
        self.events.setdefault(event_id, {"id": event_id})["to"] = list(to)

    async def set_event_error(self, event_id: str, *, error: dict[str, Any]) -> None:
        """Record why an event failed."""
        self.events.setdefault(event_id, {"id": event_id})["error"] = error

    async def add_log(self, record: dict[str, Any]) -> None:
        """Append a thred log record."""
        self.log.append(dict(record))

    async def archive_thred(self, view: dict[str, Any]) -> None:
        """Insert a ThredRecord `{id, thred}`."""
        self.archive.append({"id": view["id"], "thred": view})

    async def add_archived_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Add to a user's `threds.archived`."""
        self.user_archived[participant_id].append(thred_id)

    async def events_for_thred(self, thred_id: str) -> list[dict[str, Any]]:
        """Every recorded event of a thred, in record order."""
        return [record for record in self.events.values() if record.get("thredId") == thred_id]

    async def archived_threds(
        self, *, matcher: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The archived thred views whose ThredRecord `{id, thred}` satisfies `matcher`."""
        if matcher is None:
            return [record["thred"] for record in self.archive]
        test = compile_matcher(matcher)
        return [record["thred"] for record in self.archive if test(record)]

    async def run_tasks(self, tasks: list[Any]) -> list[Any]:
        """Refuse: data tasks need a database (the MongoDB adapter implements this port)."""
        raise EngineError(NO_DATA_BACKEND, code=TASK_ERROR)

    async def flush(self) -> None:
        """Nothing to do: every record is kept as soon as it is written."""


class BoundedMemoryPersistence(MemoryPersistence):
    """In-memory persistence that keeps only the newest records of each kind.

    A long-running embedded engine would otherwise grow without bound, and Python's full
    garbage collections, which scan every record, would grow into pauses of 100 ms and more.
    """

    def __init__(self, *, keep: int) -> None:
        super().__init__()
        self._keep = keep

    async def save_event(self, event: dict[str, Any], *, thred_id: str | None) -> None:
        """Record an event, forgetting the oldest records beyond the limit."""
        await super().save_event(event, thred_id=thred_id)
        self._trim_events()

    async def set_event_to(self, event_id: str, *, to: list[str]) -> None:
        """Record an outbound event's recipients, forgetting the oldest records."""
        await super().set_event_to(event_id, to=to)
        self._trim_events()

    async def add_log(self, record: dict[str, Any]) -> None:
        """Append a thred log record, forgetting the oldest beyond the limit."""
        await super().add_log(record)
        if len(self.log) > self._keep:
            del self.log[: len(self.log) - self._keep]

    async def archive_thred(self, view: dict[str, Any]) -> None:
        """Archive a thred view, forgetting the oldest beyond the limit."""
        await super().archive_thred(view)
        if len(self.archive) > self._keep:
            del self.archive[: len(self.archive) - self._keep]

    async def add_archived_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Note a participant's archived thred, keeping the newest per participant."""
        await super().add_archived_thred(participant_id, thred_id=thred_id)
        archived = self.user_archived[participant_id]
        if len(archived) > self._keep:
            del archived[: len(archived) - self._keep]

    def _trim_events(self) -> None:
        # Dicts keep insertion order, so the first keys are the oldest records.
        while len(self.events) > self._keep:
            del self.events[next(iter(self.events))]


class ListDispatcher:
    """Records every dispatched message, in order."""

    def __init__(self) -> None:
        self.messages: list[OutboundMessage] = []

    async def dispatch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        sessions: Mapping[str, list[Session]] | None = None,
    ) -> None:
        """Record the messages."""
        self.messages.extend(messages)
