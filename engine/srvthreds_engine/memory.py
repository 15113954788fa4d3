"""In-memory implementations of the engine's ports, and the embedded engine wiring."""

from __future__ import annotations

import asyncio
import heapq
from bisect import bisect_left, insort
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from srvthreds_engine.events import OutboundMessage
from srvthreds_engine.ports import Clock, EngineObserver, PatternCounters, Session
from srvthreds_engine.thred import Thred

if TYPE_CHECKING:
    from srvthreds_engine.addresses import AddressBook
    from srvthreds_engine.engine import Engine
    from srvthreds_engine.patterns import Pattern

LOCK_TIMEOUT_S = 5.0


class LockTimeoutError(RuntimeError):
    """A lock could not be taken in time (e.g. a pattern that spawns itself while locked)."""


class _MemoryLock:
    """`async with storage.lock(key)`: a FIFO mutex per key, held while the key is in the table.

    Not asyncio.Lock behind an @asynccontextmanager: a lock is taken several times per event,
    and the uncontended path here takes it without suspending or allocating a lock object.
    Release hands the key straight to the first waiter, so no third party can slip in.
    """

    __slots__ = ("_held", "_key")

    def __init__(self, held: dict[str, deque[asyncio.Future[None]]], key: str) -> None:
        self._held = held
        self._key = key

    async def __aenter__(self) -> None:
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

    async def __aexit__(self, *exc_info: object) -> None:
        waiters = self._held[self._key]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._held[self._key]


class MemoryStorage:
    """ThredStore and SessionStore in one process; threds are stored as JSON copies."""

    def __init__(self) -> None:
        self._threds: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, PatternCounters] = {}
        self._unbound: dict[str, None] = {}
        self._participant_threds: dict[str, dict[str, None]] = defaultdict(dict)
        self._deadlines: dict[str, int] = {}
        self._deadline_heap: list[tuple[int, str]] = []
        self._locks: dict[str, deque[asyncio.Future[None]]] = {}
        # Ids kept sorted as threds come and go, so listings need no sort.
        self._sorted_ids: list[str] = []
        self._sessions: dict[str, list[Session]] = defaultdict(list)

    def lock(self, key: str) -> _MemoryLock:
        """Serialise work on `key`; not reentrant, gives up after LOCK_TIMEOUT_S."""
        return _MemoryLock(self._locks, key)

    async def get_thred(self, thred_id: str) -> Thred | None:
        """The stored thred (a copy), or None."""
        stored = self._threds.get(thred_id)
        return None if stored is None else Thred.from_stored(stored)

    async def save_thred(self, thred: Thred) -> None:
        """Store (a copy of) the thred."""
        if thred.id not in self._threds:
            insort(self._sorted_ids, thred.id)
        self._threds[thred.id] = thred.stored()

    async def delete_thred(self, thred_id: str) -> None:
        """Forget the thred and its routing entries."""
        if self._threds.pop(thred_id, None) is not None:
            del self._sorted_ids[bisect_left(self._sorted_ids, thred_id)]
        self._unbound.pop(thred_id, None)
        self._deadlines.pop(thred_id, None)

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

    async def get_counters(self, pattern_id: str) -> PatternCounters:
        """The pattern's instance counters."""
        counters = self._counters.get(pattern_id, PatternCounters())
        return PatternCounters(counters.instances, counters.last_instance_ms)

    async def set_counters(self, pattern_id: str, *, counters: PatternCounters) -> None:
        """Replace the pattern's instance counters."""
        self._counters[pattern_id] = PatternCounters(counters.instances, counters.last_instance_ms)

    async def set_unbound(self, thred_id: str, *, allowed: bool) -> None:
        """Add to or remove from the `U:UnboundReaction` set."""
        if allowed:
            self._unbound[thred_id] = None
        else:
            self._unbound.pop(thred_id, None)

    async def unbound_thred_ids(self) -> list[str]:
        """Threds whose current reaction accepts unbound events."""
        return list(self._unbound)

    async def add_participant_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Index a thred under a participant."""
        self._participant_threds[participant_id][thred_id] = None

    async def remove_participant_thred(self, participant_id: str, *, thred_id: str) -> None:
        """Drop a thred from a participant's index."""
        self._participant_threds[participant_id].pop(thred_id, None)

    async def participant_thred_ids(self, participant_id: str) -> list[str]:
        """The threds a participant takes part in."""
        return list(self._participant_threds.get(participant_id, {}))

    async def set_deadline(self, thred_id: str, *, due_ms: int | None) -> None:
        """Set or clear the expiry deadline of a thred."""
        if due_ms is None:
            self._deadlines.pop(thred_id, None)
        elif self._deadlines.get(thred_id) != due_ms:
            self._deadlines[thred_id] = due_ms
            heapq.heappush(self._deadline_heap, (due_ms, thred_id))

    def _drop_stale_deadlines(self) -> None:
        # The heap keeps superseded entries; the dict is the truth.
        heap = self._deadline_heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    async def due_thred_ids(self, now_ms: int) -> list[str]:
        """Threds whose deadline is at or before `now_ms`, earliest first."""
        due: list[str] = []
        self._drop_stale_deadlines()
        while self._deadline_heap and self._deadline_heap[0][0] <= now_ms:
            _, thred_id = heapq.heappop(self._deadline_heap)
            due.append(thred_id)
            self._drop_stale_deadlines()
        unique = list(dict.fromkeys(due))
        # Still stored until the engine clears or moves them; keep them findable.
        for thred_id in unique:
            heapq.heappush(self._deadline_heap, (self._deadlines[thred_id], thred_id))
        return unique

    async def next_deadline_ms(self) -> int | None:
        """The earliest deadline, or None."""
        return self.next_deadline_now()

    def next_deadline_now(self) -> int | None:
        """The earliest deadline, synchronously."""
        self._drop_stale_deadlines()
        return self._deadline_heap[0][0] if self._deadline_heap else None

    async def sessions_for(self, participant_id: str) -> list[Session]:
        """Live sessions of a participant."""
        return list(self._sessions.get(participant_id, []))

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

    async def archived_threds(self) -> list[dict[str, Any]]:
        """Every archived thred view."""
        return [record["thred"] for record in self.archive]

    async def run_tasks(self, tasks: list[Any]) -> list[Any]:
        """Data tasks are answered by the persistence agent; in memory none is supported."""
        return [None for _ in tasks]


class ListDispatcher:
    """Records every dispatched message, in order."""

    def __init__(self) -> None:
        self.messages: list[OutboundMessage] = []

    async def dispatch(self, message: OutboundMessage) -> None:
        """Record the message."""
        self.messages.append(message)


def build_embedded_engine(
    patterns: Sequence[Pattern],
    *,
    address_book: AddressBook | None = None,
    clock: Clock | None = None,
    observer: EngineObserver | None = None,
    dispatcher: ListDispatcher | None = None,
) -> tuple[Engine, MemoryStorage, MemoryPersistence, ListDispatcher]:
    """An engine wired to in-memory ports; returns the engine and the ports it uses."""
    from srvthreds_engine.addresses import AddressBook
    from srvthreds_engine.clock import SystemClock
    from srvthreds_engine.engine import Engine
    from srvthreds_engine.ports import NullObserver

    storage = MemoryStorage()
    persistence = MemoryPersistence()
    outbound = dispatcher if dispatcher is not None else ListDispatcher()
    engine = Engine(
        patterns=patterns,
        address_book=address_book if address_book is not None else AddressBook(),
        storage=storage,
        sessions=storage,
        persistence=persistence,
        dispatcher=outbound,
        clock=clock if clock is not None else SystemClock(),
        observer=observer if observer is not None else NullObserver(),
    )
    return engine, storage, persistence, outbound
