"""Protocols the engine service needs: a unit-of-work thred store, sessions, records, messaging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.core.thred import Thred


@dataclass(slots=True)
class PatternCounters:
    """Per-pattern instance bookkeeping (`ni` live count, `li` last creation ms)."""

    instances: int = 0
    last_instance_ms: int | None = None


@dataclass(slots=True)
class Session:
    """A live session of a participant."""

    participant_id: str
    node_id: str
    roles: list[str] = field(default_factory=list)
    session_id: str | None = None


class SessionStore(Protocol):
    """Live sessions by participant (what `$all`, routing by node and role checks need)."""

    async def sessions_for(self, participant_id: str) -> list[Session]: ...

    async def sessions_of(self, participant_ids: Sequence[str]) -> dict[str, list[Session]]:
        """Live sessions of several participants at once (routing a processing's messages)."""
        ...

    async def participants_with_sessions(self) -> list[str]: ...
    async def add_session(self, session: Session) -> None: ...


class Persistence(Protocol):
    """Event records, the thred log, archived threds, users and data tasks."""

    async def save_event(self, event: dict[str, Any], *, thred_id: str | None) -> None: ...
    async def set_event_to(self, event_id: str, *, to: list[str]) -> None: ...
    async def set_event_error(self, event_id: str, *, error: dict[str, Any]) -> None: ...
    async def add_log(self, record: dict[str, Any]) -> None: ...
    async def archive_thred(self, view: dict[str, Any]) -> None: ...
    async def add_archived_thred(self, participant_id: str, *, thred_id: str) -> None: ...
    async def events_for_thred(self, thred_id: str) -> list[dict[str, Any]]: ...
    async def archived_threds(
        self, *, matcher: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Archived thred views; `matcher` (see matchers.py) tests each ThredRecord `{id, thred}`.

        A database adapter pushes the matcher down into its query.
        """
        ...

    async def run_tasks(self, tasks: list[Any]) -> list[Any]:
        """Run dataControl tasks (spec §11); raises EngineError (5200) when it cannot."""
        ...

    async def flush(self) -> None:
        """Make every record written so far durable (an adapter may batch until then)."""
        ...


class Dispatcher(Protocol):
    """Hands outbound messages to the transport (queues, sockets, a list in tests)."""

    async def dispatch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        sessions: Mapping[str, list[Session]] | None = None,
    ) -> None:
        """Send the messages of one processing, in order; returns once the transport has them.

        `sessions`: recipients' sessions already known (routing need not look them up).
        """
        ...


class Clock(Protocol):
    """Engine time in epoch milliseconds (virtual under `replay`)."""

    def now_ms(self) -> int: ...


class EngineObserver(Protocol):
    """Metrics hook; the core never imports prometheus."""

    def event_processed(self, *, result: str, seconds: float) -> None: ...
    def thred_creation_skipped(self, *, pattern_id: str, reason: str) -> None: ...
    def threds_changed(self, *, active: int) -> None: ...


class NullObserver:
    """An observer that records nothing."""

    def event_processed(self, *, result: str, seconds: float) -> None:
        """Ignore a processed event."""

    def thred_creation_skipped(self, *, pattern_id: str, reason: str) -> None:
        """Ignore a skipped creation."""

    def threds_changed(self, *, active: int) -> None:
        """Ignore a change in the number of threds."""


# --- the thred store as a unit of work (the backends' contract) ------------------------------


@dataclass(slots=True)
class CreationLimits:
    """The pattern limits a new thred's commit checks atomically (and counts it when it passes).

    `maxInstances` 0 = unlimited; `instanceInterval` 0 = none. A commit that fails the check
    stores nothing (the creation is skipped silently, as the spec says).
    """

    pattern_id: str
    max_instances: int = 0
    interval_ms: int = 0


@dataclass(slots=True)
class ThredChange:
    """What one processing writes for one thred, committed with the rest of its unit at once.

    * `ended` (TERMINATED): delete `Thred:<id>`, drop it from the unbound set, the deadlines and
      every `ParticipantThreds:<pid>` of `participants`, and decrement the pattern's live count.
    * otherwise: store the thred, add it to / remove it from `U:UnboundReaction` (`unbound`),
      set or clear its expiry deadline (`deadline_ms`), and index it under each participant
      of `participants_added`.
    * `create` set: the thred is new; the commit first checks and counts the pattern's limits
      and stores nothing of the whole unit when they refuse (see `ThredUnit.commit`).
    """

    thred: Thred
    ended: bool = False
    unbound: bool = False
    deadline_ms: int | None = None
    participants_added: list[str] = field(default_factory=list)
    create: CreationLimits | None = None


class ThredUnit(Protocol):
    """One thred locked and loaded for one processing; commits everything or nothing.

    `thred` is the stored thred as loaded (None: not stored, or a unit for a new thred).
    `done` is True when this processing (`work_key`, e.g. the inbound event id) was already
    committed for this thred before (a redelivered event): the caller must not apply it again.
    """

    thred: Thred | None
    done: bool
    # After a commit: the sessions of its messages' recipients, when the store read them in
    # the same step (None: not read; the dispatcher looks them up).
    recipient_sessions: dict[str, list[Session]] | None

    async def commit(
        self,
        changes: Sequence[ThredChange],
        *,
        outbox: Sequence[OutboundMessage],
        release: bool = True,
    ) -> bool:
        """Write every change, the "done" mark and the outbox entries in one atomic step.

        `changes` holds this unit's thred first, then threds created with it (spawned
        children). Returns False, having written nothing, when a change's `create` limits
        refuse it (the caller then reports the creation as skipped; the lock is kept). Raises
        when the lock was lost (another process may have taken the thred) or the backend
        failed. `release` frees the lock in the same step; keep it (False) when messages are
        to be published under the lock, then call `settle`.
        """
        ...

    async def settle(self) -> None:
        """The work's messages are published: clear its outbox and release the lock, at once.

        Holding the lock until then keeps each thred's messages in order across processes.
        """
        ...


class ThredStore(Protocol):
    """Thred state, the routing sets, expiry deadlines, the outbox and the locks behind them.

    NB: every write of a processing goes through `ThredUnit.commit`; the locks are token-owned
    and expiring, safe across every process sharing the store, and not reentrant.
    """

    def unit(
        self, thred_id: str, *, work_key: str, lock: bool = True
    ) -> AbstractAsyncContextManager[ThredUnit]:
        """Lock `Thred:<thred_id>`, load it and whether `work_key` was done for it; unlock on
        exit (commit is explicit). `lock=False` is for a brand-new id nobody knows yet: no
        lock, nothing read (`thred` None, `done` False)."""
        ...

    async def creation_done(self, work_key: str, *, pattern_id: str) -> bool:
        """Whether `work_key` already created a thred of this pattern (a redelivery)."""
        ...

    async def get_thred(self, thred_id: str) -> Thred | None: ...
    async def list_threds(self) -> list[Thred]: ...
    async def count_threds(self) -> int: ...
    async def unbound_thred_ids(self) -> list[str]: ...
    async def participant_thred_ids(self, participant_id: str) -> list[str]: ...
    async def get_counters(self, pattern_id: str) -> PatternCounters: ...

    async def due_thred_ids(self, now_ms: int, *, limit: int = 100) -> list[str]:
        """Threds whose expiry deadline is at or before `now_ms`, earliest first."""
        ...

    async def next_deadline_ms(self) -> int | None: ...

    async def outbox(self, work_key: str) -> list[OutboundMessage]:
        """Messages committed for `work_key` and not yet cleared (published after a crash)."""
        ...

    async def clear_outbox(self, work_key: str) -> None:
        """Forget the outbox of `work_key` once its messages are published (confirmed)."""
        ...


# --- messaging (the queue backends' contract) -------------------------------------------------


@dataclass(slots=True, frozen=True)
class RoutedMessage:
    """One message for `message-exchange` (spec §12): its routing key and `{id, event, to}`."""

    routing_key: str
    message_id: str
    body: dict[str, Any]


class MessagePublisher(Protocol):
    """Outbound messages to agents and session nodes."""

    async def publish(self, messages: Sequence[RoutedMessage]) -> list[RoutedMessage]:
        """Publish persistent messages and wait for every broker confirm; raise if any fails.

        Returns the messages no queue takes (no consumer bound for their routing key).
        """
        ...


class InboundDelivery(Protocol):
    """One inbound event message; exactly one of the settling methods is called."""

    body: bytes
    # How many earlier deliveries of this message failed while being processed.
    attempts: int
    # The broker delivered it before (a consumer stopped or died holding it).
    redelivered: bool

    async def ack(self) -> None:
        """Processed: remove it from the queue."""
        ...

    async def retry(self, *, reason: str) -> None:
        """Processing failed: deliver it again later, or dead-letter it with `reason` once it
        has failed the configured number of times."""
        ...

    async def dead_letter(self, *, reason: str) -> None:
        """Never processable (malformed, refused): to the dead-letter queue with `reason`."""
        ...

    async def release(self) -> None:
        """Not processed (shutting down, a backend is down): back to the queue, not counted."""
        ...


class InboundEvents(Protocol):
    """The shared inbound event queue: every engine replica consumes from it."""

    def deliveries(self) -> AsyncIterator[InboundDelivery]:
        """Deliveries as they arrive (at most `prefetch` unsettled at once)."""
        ...

    async def submit(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events to `event-exchange` with publisher confirms (HTTP intake, agents)."""
        ...
