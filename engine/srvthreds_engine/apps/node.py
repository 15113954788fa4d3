"""The engine node: one replica of a distributed engine on Redis, RabbitMQ and MongoDB.

Every replica consumes the shared event queue, fires the expiry deadlines that fall due (one
replica per deadline, by the thred lock), follows pattern changes (its folder, MongoDB, and the
other replicas' `patternChanged` notices) and serves the HTTP API, whose `POST /events`
publishes to the shared queue. Each delivery is acknowledged only after its effects are
committed, its records written and its messages published with confirms; while a backend is
down the node reports not ready and puts deliveries back untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from srvthreds_engine.adapters.prometheus import EngineMetrics
from srvthreds_engine.api.http import QueueFullError, ThredStatus
from srvthreds_engine.apps.profiles import PatternSource, Profile
from srvthreds_engine.apps.settings import Settings
from srvthreds_engine.core import limits
from srvthreds_engine.core.addresses import AddressBook
from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.events import Event, OutboundMessage
from srvthreds_engine.ports import (
    Clock,
    InboundDelivery,
    InboundEvents,
    MessagePublisher,
    Persistence,
    Session,
    SessionStore,
    ThredStore,
)
from srvthreds_engine.service.processing import Engine
from srvthreds_engine.service.routing import participants_to_look_up, route_message

log = logging.getLogger(__name__)

HEALTH_INTERVAL_SECONDS = 1.0
TIMER_POLL_SECONDS = 0.5
TASK_STOP_SECONDS = 5.0
Check = Callable[[], Awaitable[object]]


@dataclass(slots=True)
class NodeParts:
    """The adapters a node runs on, built by the composition root from the settings."""

    store: ThredStore
    sessions: SessionStore
    persistence: Persistence
    inbound: InboundEvents
    publisher: MessagePublisher
    # Readiness probes by backend name: each raises (or returns False) while it is down.
    checks: dict[str, Check]
    # Exceptions that mean "a backend is down": the delivery goes back, not to an error.
    transient_errors: tuple[type[BaseException], ...]
    # Tell the other replicas that patterns changed (None id = all); None: a single replica.
    announce_patterns: Callable[[str | None], Awaitable[object]] | None = None
    # Active patterns stored in MongoDB (PatternModel), as JSON documents.
    stored_patterns: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    close: list[Callable[[], Awaitable[object]]] = field(default_factory=list)


class QueueDispatcher:
    """Routes each message by its recipients' session nodes (spec §12) and publishes them."""

    def __init__(
        self,
        publisher: MessagePublisher,
        *,
        sessions: SessionStore,
        addresses: AddressBook,
        metrics: EngineMetrics,
        keep: int,
    ) -> None:
        self._publisher = publisher
        self._sessions = sessions
        self._addresses = addresses
        self._metrics = metrics
        self._kept: list[dict[str, Any]] = []
        self._keep = keep

    async def dispatch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        sessions: Mapping[str, list[Session]] | None = None,
    ) -> None:
        """Publish every routed queue message of `messages`, confirmed, in order."""
        known = dict(sessions or {})
        wanted = [
            pid
            for pid in participants_to_look_up(messages, is_service=self._addresses.is_service)
            if pid not in known
        ]
        if wanted:
            known.update(await self._sessions.sessions_of(wanted))
        routed = [
            item
            for message in messages
            for item in route_message(
                message, sessions=known, is_service=self._addresses.is_service
            )
        ]
        for dropped in await self._publisher.publish(routed):
            self._metrics.messages_unroutable.inc()
            log.warning(
                "message dropped: no queue is bound for its routing key",
                extra={"messageId": dropped.message_id, "routingKey": dropped.routing_key},
            )
        self._metrics.messages_dispatched.inc(len(messages))
        if self._keep:
            self._kept.extend(message.to_dict() for message in messages)
            del self._kept[: max(0, len(self._kept) - self._keep)]

    def recent(self) -> list[dict[str, Any]]:
        """The last messages dispatched by this replica, oldest first."""
        return list(self._kept)


@dataclass(slots=True)
class PatternStatus:
    """The last pattern load of this replica, for /ready and the logs."""

    ok: bool = True
    error: str | None = None
    loaded_at_ms: int | None = None
    pattern_ids: list[str] = field(default_factory=list)


class NodeRuntime:
    """One engine replica on the brokers; the HTTP layer's ApiBackend."""

    def __init__(
        self,
        *,
        engine: Engine,
        parts: NodeParts,
        source: PatternSource,
        dispatcher: QueueDispatcher,
        metrics: EngineMetrics,
        clock: Clock,
        max_concurrent_events: int,
        pattern_poll_seconds: float,
    ) -> None:
        self.engine = engine
        self.parts = parts
        self.source = source
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.clock = clock
        self.pattern_status = PatternStatus(
            loaded_at_ms=clock.now_ms(),
            pattern_ids=[pattern.pattern_id for pattern in engine.patterns],
        )
        # sysControl reloadPattern/reloadAllPatterns read the same source, then tell every
        # replica (`patternChanged`).
        engine.pattern_loader = source.load
        engine.announce_patterns = parts.announce_patterns
        self._max_concurrent = max_concurrent_events
        self._pattern_poll_seconds = pattern_poll_seconds
        self._health: dict[str, bool] = dict.fromkeys(parts.checks, False)
        self._healthy = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._consuming = False
        self._digest = source.digest()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe the backends, then consume, fire timers and follow pattern changes."""
        await self._probe()
        self._consuming = True
        self._tasks = [
            asyncio.create_task(self._monitor_health(), name="health"),
            asyncio.create_task(self._consume(), name="event-consumer"),
            asyncio.create_task(self._fire_timers(), name="expiry-timers"),
            asyncio.create_task(self._watch_pattern_folder(), name="pattern-folder"),
        ]

    async def stop(self, *, drain_seconds: float) -> bool:
        """Stop taking deliveries, let those in flight finish, then close the connections."""
        self._consuming = False
        close_inbound = getattr(self.parts.inbound, "close", None)
        if close_inbound is not None:
            await close_inbound()
        drained = True
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=drain_seconds)
            drained = not pending
        tasks = [*self._tasks, *self._in_flight]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TASK_STOP_SECONDS)
        for close in self.parts.close:
            with contextlib.suppress(Exception):
                await close()
        return drained

    # --- readiness -----------------------------------------------------------------------------

    async def _probe(self) -> None:
        for name, check in self.parts.checks.items():
            try:
                ok = (
                    await asyncio.wait_for(check(), timeout=HEALTH_INTERVAL_SECONDS * 2)
                ) is not False
            except Exception:
                ok = False
            if ok != self._health.get(name):
                log.log(
                    logging.INFO if ok else logging.WARNING,
                    "backend %s",
                    "up" if ok else "down",
                    extra={"backend": name},
                )
            self._health[name] = ok
        if all(self._health.values()):
            self._healthy.set()
        else:
            self._healthy.clear()

    async def _monitor_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            await self._probe()
            with contextlib.suppress(*self.parts.transient_errors):
                await self.engine.report_thred_count()

    def _backend_down(self) -> None:
        self._healthy.clear()

    def readiness(self) -> dict[str, bool]:
        """Each backend, the patterns and the consumer: /ready is 200 when all are True."""
        consumer_running = bool(self._tasks) and not self._tasks[1].done()
        return {
            **self._health,
            "patterns": bool(self.engine.patterns),
            "consumer": self._consuming and consumer_running,
        }

    def readiness_details(self) -> dict[str, Any]:
        """The last pattern load (shown by /ready)."""
        status = self.pattern_status
        return {
            "patternLoad": {
                "ok": status.ok,
                "error": status.error,
                "loadedAt": status.loaded_at_ms,
                "patterns": status.pattern_ids,
            }
        }

    # --- the event stream ----------------------------------------------------------------------

    async def _consume(self) -> None:
        slots = asyncio.Semaphore(self._max_concurrent)
        async for delivery in self.parts.inbound.deliveries():
            await slots.acquire()
            task = asyncio.create_task(self._handle(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _handle(self, delivery: InboundDelivery) -> None:
        started = time.perf_counter()
        event, problem = _parse(delivery.body)
        if event is None:
            self.metrics.events_processed.labels(result="malformed").inc()
            await delivery.dead_letter(reason=problem or "malformed event")
            return
        # While a backend is down, nothing can be committed: wait for it (prefetch bounds this).
        await self._healthy.wait()
        redelivered = delivery.attempts > 0 or delivery.redelivered
        try:
            outcome = await self.engine.process(event, redelivered=redelivered)
        except self.parts.transient_errors as exc:
            log.warning(
                "backend failed while processing; the event goes back to the queue",
                extra={"eventId": event.id, "reason": repr(exc)},
            )
            self._backend_down()
            await delivery.release()
            return
        except Exception as exc:
            log.exception("event processing failed", extra={"eventId": event.id})
            await delivery.retry(reason=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.metrics.event_latency_seconds.observe(time.perf_counter() - started)
        if outcome.error is not None:
            # The sender was told; the event is kept, with why, in the dead-letter queue.
            await delivery.dead_letter(reason=f"{outcome.error.code}: {outcome.error.message}")
            return
        await delivery.ack()

    async def _fire_timers(self) -> None:
        while True:
            try:
                await self._healthy.wait()
                await self.engine.refresh_timers()
                due = self.engine.next_timer_due_ms()
                now = self.clock.now_ms()
                if due is not None and due <= now:
                    fired = await self.engine.fire_due_timers()
                    if fired:
                        log.info("expiry timers fired", extra={"fired": fired})
                    continue
                wait_ms = TIMER_POLL_SECONDS * 1000 if due is None else due - now
                await asyncio.sleep(min(TIMER_POLL_SECONDS, wait_ms / 1000))
            except self.parts.transient_errors as exc:
                log.warning("expiry timers paused: backend down", extra={"reason": repr(exc)})
                self._backend_down()
                await asyncio.sleep(TIMER_POLL_SECONDS)

    # --- patterns ------------------------------------------------------------------------------

    async def _watch_pattern_folder(self) -> None:
        while True:
            await asyncio.sleep(self._pattern_poll_seconds)
            digest = self.source.digest()
            if digest != self._digest:
                self._digest = digest
                await self.reload_patterns(reason="pattern folder changed")

    async def reload_patterns(
        self, *, reason: str, op: str = "watch", only: str | None = None
    ) -> bool:
        """Load the patterns and swap them in whole (or just pattern `only`).

        On error the old set stays, and /ready, the metric and the log say why.
        """
        try:
            patterns = await self.source.load()
        except PatternError as exc:
            self.pattern_status.ok = False
            self.pattern_status.error = str(exc)
            self.metrics.pattern_reloads.labels(op=op, result="failed").inc()
            log.error(
                "patterns not reloaded: the old set stays",
                extra={"reason": reason, "error": str(exc)},
            )
            return False
        if only is not None:
            merged = {pattern.pattern_id: pattern for pattern in self.engine.patterns}
            merged.update((item.pattern_id, item) for item in patterns if item.pattern_id == only)
            patterns = list(merged.values())
        self.engine.set_patterns(patterns)
        self.pattern_status = PatternStatus(
            ok=True,
            loaded_at_ms=self.clock.now_ms(),
            pattern_ids=[pattern.pattern_id for pattern in patterns],
        )
        self.metrics.pattern_reloads.labels(op=op, result="ok").inc()
        log.info(
            "patterns reloaded",
            extra={"reason": reason, "patterns": self.pattern_status.pattern_ids},
        )
        return True

    async def pattern_changed_elsewhere(self, pattern_id: str | None) -> None:
        """A replica reloaded patterns (`patternChanged`): load them here too.

        The replica that ran the reload gets its own notice as well, which brings its /ready
        pattern status up to date (loading the same files twice changes nothing).
        """
        await self.reload_patterns(
            reason=f"patternChanged {pattern_id or 'all'}", op="patternChanged", only=pattern_id
        )

    # --- ApiBackend ----------------------------------------------------------------------------

    async def submit(self, events: Sequence[Event]) -> None:
        """Publish the events to the shared queue (any replica takes them), confirmed."""
        if not self._consuming:
            raise QueueFullError("the engine is not accepting events (starting or shutting down)")
        try:
            await self.parts.inbound.submit([event.to_dict() for event in events])
        except self.parts.transient_errors as exc:
            raise QueueFullError(f"the event queue cannot take events now: {exc}") from exc

    async def list_threds(self, *, status: ThredStatus | None) -> list[dict[str, Any]]:
        """Public views of the stored threds (every replica's)."""
        threds = await self.engine.store.list_threds()
        return [
            self.engine.public_view(thred)
            for thred in threds
            if status is None or thred.status == status
        ]

    async def get_thred(self, thred_id: str) -> dict[str, Any] | None:
        """The public view of one stored thred."""
        thred = await self.engine.store.get_thred(thred_id)
        return None if thred is None else self.engine.public_view(thred)

    def recent_messages(self) -> list[dict[str, Any]]:
        """The last messages this replica dispatched."""
        return self.dispatcher.recent()


def _parse(body: bytes) -> tuple[Event | None, str | None]:
    """The event of a delivery, or why it is not one (depth, JSON, shape)."""
    if limits.may_be_too_deep(body):
        try:
            import json

            problem = limits.depth_problem(json.loads(body))
        except (ValueError, RecursionError):
            problem = limits.too_deep_message()
        if problem is not None:
            return None, problem
    try:
        return Event.model_validate_json(body), None
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "<event>"
        return None, f"not an event: {where}: {first['msg']}"


# --- composition root --------------------------------------------------------------------------

CONNECT_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


def transient_errors() -> tuple[type[BaseException], ...]:
    """The adapters' "backend went away" exceptions: the work is retried, nobody is notified."""
    import pymongo.errors
    import redis.exceptions

    from srvthreds_engine.adapters import rabbitmq
    from srvthreds_engine.adapters import redis as redis_adapter

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis_adapter.LockLostError,
        # A thred lock held past the retries: by a slow processing, or by a crashed replica
        # until its TTL runs out. Retried later, never a 5000 to the sender nor a dropped timer.
        redis_adapter.LockTimeoutError,
        pymongo.errors.ConnectionFailure,
        pymongo.errors.NetworkTimeout,
        rabbitmq.MessagingError,
        ConnectionError,
        TimeoutError,
    )


@dataclass(slots=True)
class _StateBackend:
    store: ThredStore
    sessions: SessionStore
    changes: Any = None


async def _state_backend(
    settings: Settings, *, profile: Profile, clock: Clock, parts: dict[str, Any]
) -> _StateBackend:
    """Redis (REDIS_URL), else memory (one replica only); registers checks and closers."""
    state: _StateBackend
    if not settings.redis_url:
        from srvthreds_engine.adapters.memory import MemorySessionStore, MemoryThredStore

        log.warning("REDIS_URL is not set: thred state is in memory, for ONE replica only")
        state = _StateBackend(MemoryThredStore(clock=clock), MemorySessionStore())
    else:
        from srvthreds_engine.adapters import redis as redis_adapter

        client = redis_adapter.connect(settings.redis_url)
        parts["checks"]["redis"] = client.ping
        parts["close"].append(client.aclose)
        state = _StateBackend(
            redis_adapter.RedisThredStore(client, clock=clock, read_recipient_sessions=True),
            redis_adapter.RedisSessionStore(client),
            redis_adapter.RedisPatternChanges(client),
        )
    # The profile's declared sessions (sessions.json) exist from the start.
    for session in profile.sessions:
        await state.sessions.add_session(session.to_session())
    return state


def _persistence(settings: Settings, *, clock: Clock, parts: dict[str, Any]) -> Persistence:
    """MongoDB (MONGODB_URL), else bounded memory; registers checks and closers."""
    if not settings.mongodb_url:
        from srvthreds_engine.adapters.memory import BoundedMemoryPersistence

        return BoundedMemoryPersistence(keep=settings.records_kept)
    from srvthreds_engine.adapters.mongo import MongoPersistence

    mongo = MongoPersistence.from_url(settings.mongodb_url, clock=clock)
    parts["checks"]["mongodb"] = _mongo_check(mongo)
    parts["close"].append(mongo.close)
    parts["stored_patterns"] = mongo.active_patterns
    return mongo


async def build_node(
    profile: Profile, *, settings: Settings, metrics: EngineMetrics, clock: Clock
) -> NodeRuntime:
    """The node's adapters from the settings' URLs (RABBITMQ_URL required), engine and runtime."""
    from srvthreds_engine.adapters import rabbitmq
    from srvthreds_engine.adapters.prometheus import PrometheusObserver

    wiring: dict[str, Any] = {"checks": {}, "close": [], "stored_patterns": None}
    state = await _state_backend(settings, profile=profile, clock=clock, parts=wiring)
    persistence = _persistence(settings, clock=clock, parts=wiring)
    broker = await _connect_rabbitmq(settings.rabbitmq_url)
    wiring["checks"]["rabbitmq"] = _sync_check(lambda: broker.healthy)
    wiring["close"].append(broker.close)
    transient = transient_errors()
    parts = NodeParts(
        store=state.store,
        sessions=state.sessions,
        persistence=persistence,
        inbound=rabbitmq.RabbitInboundEvents(
            broker, prefetch=settings.event_prefetch, max_attempts=settings.max_delivery_attempts
        ),
        publisher=rabbitmq.RabbitMessagePublisher(broker),
        checks=wiring["checks"],
        transient_errors=transient,
        announce_patterns=state.changes.publish if state.changes is not None else None,
        stored_patterns=wiring["stored_patterns"],
        close=wiring["close"],
    )
    addresses = AddressBook(profile.sessions_model, resolver_config=profile.resolver_config)
    dispatcher = QueueDispatcher(
        parts.publisher,
        sessions=state.sessions,
        addresses=addresses,
        metrics=metrics,
        keep=settings.messages_kept,
    )
    engine = Engine(
        patterns=profile.patterns,
        store=state.store,
        sessions=state.sessions,
        persistence=persistence,
        dispatcher=dispatcher,
        clock=clock,
        observer=PrometheusObserver(metrics),
        address_book=addresses,
        transient_errors=transient,
    )
    node = NodeRuntime(
        engine=engine,
        parts=parts,
        source=PatternSource(profile.patterns_dir, stored=parts.stored_patterns),
        dispatcher=dispatcher,
        metrics=metrics,
        clock=clock,
        max_concurrent_events=settings.max_concurrent_events,
        pattern_poll_seconds=settings.pattern_poll_seconds,
    )
    if state.changes is not None:
        task = await state.changes.subscribe(node.pattern_changed_elsewhere)
        parts.close.insert(0, _cancel(task))
    return node


def _mongo_check(mongo: Any) -> Check:
    indexed = False

    async def check() -> bool:
        nonlocal indexed
        await mongo.ping()
        if not indexed:
            await mongo.ensure_indexes()
            indexed = True
        return True

    return check


def _sync_check(probe: Callable[[], bool]) -> Check:
    async def check() -> bool:
        return probe()

    return check


def _cancel(task: asyncio.Task[None]) -> Callable[[], Awaitable[object]]:
    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


async def _connect_rabbitmq(url: str) -> Any:
    """The broker connection, retried until RabbitMQ answers (it may start after the engine)."""
    from srvthreds_engine.adapters import rabbitmq

    attempt = 0
    while True:
        try:
            return await rabbitmq.RabbitBroker.connect(url)
        except Exception as exc:  # aio-pika raises several kinds while the broker is away
            pause = CONNECT_RETRY_SECONDS[min(attempt, len(CONNECT_RETRY_SECONDS) - 1)]
            attempt += 1
            log.warning(
                "RabbitMQ not reachable; retrying",
                extra={"reason": repr(exc), "retryInSeconds": pause},
            )
            await asyncio.sleep(pause)
