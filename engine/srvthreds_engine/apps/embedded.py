"""Composition root of the embedded single-process mode: engine, in-memory ports, queue, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from srvthreds_engine.adapters.memory import (
    BoundedMemoryPersistence,
    MemorySessionStore,
    MemoryThredStore,
)
from srvthreds_engine.adapters.prometheus import EngineMetrics, PrometheusObserver
from srvthreds_engine.api.http import (
    ApiBackend,
    BatchTooLargeError,
    QueueFullError,
    ThredStatus,
    build_http_app,
)
from srvthreds_engine.apps.logging import configure_logging, flush_logging
from srvthreds_engine.apps.profiles import PatternSource, Profile, ProfileError, load_profile
from srvthreds_engine.apps.settings import EventLoopChoice, Settings, SettingsError, load_settings
from srvthreds_engine.core.clock import SystemClock
from srvthreds_engine.core.events import Event, OutboundMessage
from srvthreds_engine.ports import Clock, Session
from srvthreds_engine.service.processing import Engine

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
TASK_STOP_SECONDS = 5.0
# How long the serial consumer may work through a backlog before letting HTTP handlers run.
CONSUMER_BATCH_SECONDS = 0.0005


class RecentMessages:
    """The outbound dispatcher of the embedded mode: logs each message and keeps the last N."""

    def __init__(self, *, keep: int, metrics: EngineMetrics) -> None:
        self._kept: deque[dict[str, Any]] = deque(maxlen=keep)
        self._metrics = metrics

    async def dispatch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        sessions: Mapping[str, list[Session]] | None = None,
    ) -> None:
        """Log and keep the messages (there is no transport in the embedded mode)."""
        self._metrics.messages_dispatched.inc(len(messages))
        # DEBUG, not INFO: a log line per message cost more CPU than the engine's own work on it.
        if log.isEnabledFor(logging.DEBUG):
            for message in messages:
                event = message.event
                log.debug(
                    "message dispatched",
                    extra={
                        "eventId": event.get("id"),
                        "thredId": event.get("thredId"),
                        "to": message.to,
                        "title": (event.get("data") or {}).get("title"),
                    },
                )
        if self._kept.maxlen:
            self._kept.extend(message.to_dict() for message in messages)

    def recent(self) -> list[dict[str, Any]]:
        """The kept messages, oldest first."""
        return list(self._kept)


class EmbeddedRuntime:
    """The engine with in-memory ports, its inbound queue, consumer and expiry timer tasks.

    It is also the HTTP layer's ApiBackend.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        settings: Settings,
        metrics: EngineMetrics,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock if clock is not None else SystemClock()
        self.messages = RecentMessages(keep=settings.messages_kept, metrics=metrics)
        self.storage = MemoryThredStore(clock=self._clock)
        self.persistence = BoundedMemoryPersistence(keep=settings.records_kept)
        self.engine = Engine(
            patterns=profile.patterns,
            store=self.storage,
            sessions=MemorySessionStore(),
            persistence=self.persistence,
            dispatcher=self.messages,
            clock=self._clock,
            observer=PrometheusObserver(metrics),
            sessions_model=profile.sessions_model,
            resolver_config=profile.resolver_config,
        )
        # reloadPattern/reloadAllPatterns re-read the profile's folder (system.py).
        self.engine.pattern_loader = PatternSource(profile.patterns_dir, stored=None).load
        self._sessions = [item.to_session() for item in profile.sessions]
        self.synchronous = (
            settings.synchronous_mode
            if settings.synchronous_mode is not None
            else profile.engine_config.synchronousMode
        )
        # Each event travels with the perf_counter() reading of its acceptance.
        self._queue: asyncio.Queue[tuple[Event, float]] = asyncio.Queue(
            maxsize=settings.event_queue_size
        )
        self._latency = metrics.event_latency_seconds
        # A labelled child looked up once: `labels()` costs more than the update itself.
        self._queue_depth = metrics.queue_depth.labels(queue=EVENTS_QUEUE)
        self._timers_changed = asyncio.Event()
        self._timer_due_seen: int | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting = False

    async def start(self) -> None:
        """Register the profile's sessions, start consuming the queue and firing expiry timers."""
        for session in self._sessions:
            await self.engine.sessions.add_session(session)
        consume = self._consume_serially() if self.synchronous else self._consume_concurrently()
        self._tasks = [
            asyncio.create_task(consume, name="event-consumer"),
            asyncio.create_task(self._fire_timers_when_due(), name="expiry-timers"),
        ]
        self._accepting = True
        self._queue_depth.set(0)

    async def stop(self, *, drain_seconds: float) -> bool:
        """Refuse new events, let the queued ones finish (up to `drain_seconds`), stop the tasks.

        Returns whether every queued event was processed in time.
        """
        self._accepting = False
        drained = True
        try:
            async with asyncio.timeout(drain_seconds):
                await self._queue.join()
        except TimeoutError:
            drained = False
            log.warning(
                "shutdown: events left unprocessed",
                extra={"unprocessed": self._queue.qsize(), "drainSeconds": drain_seconds},
            )
        tasks = [*self._tasks, *self._in_flight]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=TASK_STOP_SECONDS)
            if stuck:
                log.error("shutdown: tasks did not stop", extra={"tasks": len(stuck)})
        self._tasks = []
        return drained

    def queued(self) -> int:
        """Events waiting in the inbound queue."""
        return self._queue.qsize()

    async def idle(self) -> None:
        """Wait until every queued event has been processed (for tests and benchmarks)."""
        await self._queue.join()

    # --- ApiBackend --------------------------------------------------------------------------

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue every event or none of them."""
        if len(events) > self._queue.maxsize:
            raise BatchTooLargeError(
                f"{len(events)} events at once are more than the event queue holds "
                f"({self._queue.maxsize}): send at most {self._queue.maxsize} per request",
                limit=self._queue.maxsize,
            )
        if not self._accepting:
            raise QueueFullError("the engine is not accepting events (starting or shutting down)")
        free = self._queue.maxsize - self._queue.qsize()
        if len(events) > free:
            raise QueueFullError(
                f"the event queue is full ({self._queue.qsize()} of {self._queue.maxsize} used, "
                f"{len(events)} offered)"
            )
        accepted_at = time.perf_counter()
        for event in events:
            self._queue.put_nowait((event, accepted_at))
        self._queue_depth.set(self._queue.qsize())

    async def list_threds(self, *, status: ThredStatus | None) -> list[dict[str, Any]]:
        """Public views of the stored threds."""
        threds = await self.storage.list_threds()
        return [
            self.engine.public_view(thred)
            for thred in threds
            if status is None or thred.status == status
        ]

    async def get_thred(self, thred_id: str) -> dict[str, Any] | None:
        """The public view of one stored thred."""
        thred = await self.storage.get_thred(thred_id)
        return None if thred is None else self.engine.public_view(thred)

    def readiness(self) -> dict[str, bool]:
        """Patterns loaded, in-memory storage up, consumer and timer tasks running."""
        tasks_running = bool(self._tasks) and not any(task.done() for task in self._tasks)
        return {
            "patterns": bool(self.engine.patterns),
            "storage": True,
            "queue": self._accepting and tasks_running,
        }

    def readiness_details(self) -> dict[str, Any]:
        """Nothing more: the embedded mode has no backends to explain."""
        return {}

    def recent_messages(self) -> list[dict[str, Any]]:
        """The last outbound messages."""
        return self.messages.recent()

    # --- tasks -------------------------------------------------------------------------------

    async def _consume_serially(self) -> None:
        while True:
            event, accepted_at = await self._queue.get()
            await self._process(event, accepted_at=accepted_at)
            # One event per loop turn lets a burst of requests starve the queue (each turn then
            # accepts several events and processes one), so queued events wait for hundreds of
            # ms; a batch bounded in time keeps both the queue and HTTP moving.
            batch_ends = time.perf_counter() + CONSUMER_BATCH_SECONDS
            while not self._queue.empty() and time.perf_counter() < batch_ends:
                event, accepted_at = self._queue.get_nowait()
                await self._process(event, accepted_at=accepted_at)
            # With in-memory ports nothing above suspends: without this, a backlog would keep
            # the loop from answering HTTP (/health included) until the queue is empty.
            await asyncio.sleep(0)

    async def _consume_concurrently(self) -> None:
        # Per-thred order is kept by the storage locks; the semaphore bounds memory and latency.
        slots = asyncio.Semaphore(self._settings.max_concurrent_events)
        while True:
            await slots.acquire()
            event, accepted_at = await self._queue.get()
            task = asyncio.create_task(self._process(event, accepted_at=accepted_at))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _process(self, event: Event, *, accepted_at: float) -> None:
        try:
            await self.engine.process(event)
            # In memory, counting the threds costs nothing: keep the gauge exact.
            await self.engine.report_thred_count()
        except Exception:
            # The engine turns failures into notifications; reaching here means that failed too.
            log.exception("event processing failed", extra={"eventId": event.id})
        finally:
            self._latency.observe(time.perf_counter() - accepted_at)
            self._queue.task_done()
            self._queue_depth.set(self._queue.qsize())
            # Waking the timer task after every event cost a loop turn each; only a changed
            # deadline needs it.
            if self.engine.next_timer_due_ms() != self._timer_due_seen:
                self._timers_changed.set()

    async def _fire_timers_when_due(self) -> None:
        while True:
            self._timers_changed.clear()
            due_ms = self._timer_due_seen = self.engine.next_timer_due_ms()
            if due_ms is not None and due_ms <= self._clock.now_ms():
                await self._fire_due_timers()
                continue
            timeout = None if due_ms is None else (due_ms - self._clock.now_ms()) / 1000
            # NB: not asyncio.wait_for: on 3.11 it swallows a cancellation that arrives as the
            # event is set, and this task would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._timers_changed.wait()

    async def _fire_due_timers(self) -> None:
        try:
            fired = await self.engine.fire_due_timers()
            await self.engine.report_thred_count()
        except Exception:
            log.exception("expiry timers failed")
            # Without this pause a persistent failure would spin the loop.
            await asyncio.sleep(1)
            return
        if fired:
            log.info("expiry timers fired", extra={"fired": fired})


class Runtime(ApiBackend, Protocol):
    """What a server runs: the embedded runtime or an engine node."""

    engine: Engine

    async def start(self) -> None: ...
    async def stop(self, *, drain_seconds: float) -> bool: ...


class EngineServer:
    """An engine runtime behind the HTTP API on one TCP port."""

    def __init__(self, runtime: Runtime, *, settings: Settings, metrics: EngineMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime = runtime
        token = settings.api_token.get_secret_value() if settings.api_token else None
        self.app = build_http_app(
            runtime,
            metrics=metrics,
            api_token=token,
            max_body_bytes=settings.max_body_bytes,
        )
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Set by SIGTERM/SIGINT (serve_until_signalled) or, after its delay, a sysControl shutdown.
        self.stop_requested = asyncio.Event()
        runtime.engine.shutdown_requested = self.request_stop

    def request_stop(self, delay_ms: int) -> None:
        """Ask the server to stop after `delay_ms` (the sysControl `shutdown` hook)."""
        log.info("shutdown requested", extra={"delayMs": delay_ms})
        asyncio.get_running_loop().call_later(delay_ms / 1000, self.stop_requested.set)

    async def start(self, *, host: str, port: int) -> None:
        """Start the runtime, then listen (port 0 picks a free port, see `self.port`)."""
        await self.runtime.start()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host=host, port=port)
        try:
            await site.start()
        except OSError:
            await self.stop(drain_seconds=0)
            raise
        self.port = int(self._runner.addresses[0][1])

    async def stop(self, *, drain_seconds: float) -> bool:
        """Drain the queue (HTTP keeps answering probes meanwhile), then close the listener."""
        drained = await self.runtime.stop(drain_seconds=drain_seconds)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        return drained


class EmbeddedServer(EngineServer):
    """The embedded runtime (in-memory ports) behind the HTTP API."""

    runtime: EmbeddedRuntime

    def __init__(self, profile: Profile, *, settings: Settings, clock: Clock | None = None) -> None:
        metrics = EngineMetrics()
        runtime = EmbeddedRuntime(profile, settings=settings, metrics=metrics, clock=clock)
        super().__init__(runtime, settings=settings, metrics=metrics)


def run_embedded(
    profile_dir: Path | None, *, host: str | None = None, port: int | None = None
) -> int:
    """`srvthreds-engine run`: serve the profile until SIGTERM/SIGINT; the exit status.

    `profile_dir` None means the `PROFILE_DIR` setting; `host`/`port` None mean the settings'.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"srvthreds-engine: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    chosen = profile_dir if profile_dir is not None else settings.profile_dir
    if chosen is None:
        flush_logging()
        print(
            "srvthreds-engine: no profile: pass --profile DIR or set PROFILE_DIR", file=sys.stderr
        )
        return 2
    try:
        profile = load_profile(chosen, patterns_dir=settings.patterns_dir)
    except ProfileError as exc:
        flush_logging()
        print(f"srvthreds-engine: invalid profile: {exc}", file=sys.stderr)
        return 2
    problem = backend_problem(settings)
    if problem is not None:
        flush_logging()
        print(f"srvthreds-engine: {problem}", file=sys.stderr)
        return 2
    try:
        loop_factory = event_loop_factory(settings.event_loop)
    except SettingsError as exc:
        flush_logging()
        print(f"srvthreds-engine: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(
                serve_until_signalled(
                    profile,
                    settings=settings,
                    host=host if host is not None else settings.host,
                    port=port if port is not None else settings.port,
                )
            )
    finally:
        flush_logging()


def event_loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `EVENT_LOOP` (None = asyncio's default loop)."""
    if choice == "asyncio":
        return None
    try:
        # importlib, not `import`: uvloop is optional, and type-checks must pass without it.
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise SettingsError(
                "EVENT_LOOP='uvloop': uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def backend_problem(settings: Settings) -> str | None:
    """Why the backend URLs cannot work together, or None.

    RABBITMQ_URL makes the engine a node of a distributed engine; Redis and MongoDB without the
    shared event queue would give replicas that never see each other's events.
    """
    if settings.rabbitmq_url:
        return None
    without_queue = [
        name
        for name, url in (("REDIS_URL", settings.redis_url), ("MONGODB_URL", settings.mongodb_url))
        if url
    ]
    if without_queue:
        return (
            f"{' and '.join(without_queue)} set without RABBITMQ_URL: the engine's backends "
            "need the shared event queue too (set RABBITMQ_URL), or none (the embedded mode)"
        )
    return None


async def serve_until_signalled(
    profile: Profile, *, settings: Settings, host: str, port: int
) -> int:
    """Serve until SIGTERM, SIGINT or a sysControl shutdown, then drain.

    0 when drained, 1 when events were left.
    """
    server: EngineServer
    if settings.rabbitmq_url:
        from srvthreds_engine.apps.node import build_node

        metrics = EngineMetrics()
        node = await build_node(profile, settings=settings, metrics=metrics, clock=SystemClock())
        server = EngineServer(node, settings=settings, metrics=metrics)
    else:
        server = EmbeddedServer(profile, settings=settings)
    try:
        await server.start(host=host, port=port)
    except OSError as exc:
        log.error("cannot listen", extra={"host": host, "port": port, "reason": str(exc)})
        return 1
    # Modules, patterns and compiled expressions live as long as the process: moving them out
    # of the collector's reach keeps every later full collection short.
    gc.freeze()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stop_requested.set)
    log.info(
        "engine serving",
        extra={
            "url": f"http://{host}:{server.port}",
            "profile": str(profile.directory),
            "patterns": [pattern.pattern_id for pattern in profile.patterns],
            "sessions": [session.participantId for session in profile.sessions],
            "mode": "node" if settings.rabbitmq_url else "embedded",
        },
    )
    await server.stop_requested.wait()
    drain_seconds = _drain_seconds(profile, settings=settings)
    log.info("shutting down: draining queued events", extra={"drainSeconds": drain_seconds})
    drained = await server.stop(drain_seconds=drain_seconds)
    log.info("engine stopped", extra={"drained": drained})
    return 0 if drained else 1


def _drain_seconds(profile: Profile, *, settings: Settings) -> float:
    configured_ms = profile.engine_config.eventShutdownTimeout
    return configured_ms / 1000 if configured_ms is not None else settings.shutdown_timeout_seconds
