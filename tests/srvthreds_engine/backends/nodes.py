"""Helpers of the node stream tests: engine processes, a conversation profile and its client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from tests.brokers.procfs import free_port
from tests.brokers.server import tail
from tests.localcluster.processes import start_process
from tests.srvthreds_engine.polling import eventually

REPO_ROOT = Path(__file__).resolve().parents[3]
ENGINE_BINARY = REPO_ROOT / ".venv" / "bin" / "srvthreds-engine"

CLIENT = "client"
NODE_ID = "test-node"
INBOX = "test-node-inbox"
EVENT_EXCHANGE = "event-exchange"
EVENT_ROUTING_KEY = "org.wt.event"
MESSAGE_EXCHANGE = "message-exchange"
DEAD_EVENTS = "event-queue.dead"
REASON_HEADER = "x-srvthreds-reason"
PATTERN_ID = "conversation"
BOOM_PATTERN_ID = "boom"

ENGINE_START_SECONDS = 60.0
ENGINE_STOP_SECONDS = 15.0
LOG_LINES = 80


# --- the profile -------------------------------------------------------------------------------


def _values(**values: str | int) -> dict[str, Any]:
    return {"content": {"values": values}}


def _reply(title: str, **values: str | int) -> dict[str, Any]:
    return {
        "transform": {"eventDataTemplate": {"title": title, **_values(**values)}},
        "publish": {"to": [CLIENT]},
    }


LABEL = "$xpr($valueNamed('label'))"


def conversation_pattern(*, steps: int, expiry_ms: int) -> dict[str, Any]:
    """`start` opens a thred (reply `opened`), `step` 1..steps each get a reply with their
    number; after the last step the thred waits `expiry_ms`, then says `expired` and ends."""
    is_step = "$event.type = 'step'"
    step_number = "$valueNamed('step')"
    return {
        "name": "Conversation",
        "id": PATTERN_ID,
        "reactions": [
            {
                "name": "opened",
                "condition": {
                    "type": "filter",
                    "xpr": "$event.type = 'start'",
                    **_reply("opened", label=LABEL, step=0),
                },
            },
            {
                "name": "talking",
                "condition": {
                    "type": "or",
                    "operands": [
                        {
                            "type": "filter",
                            "xpr": f"{is_step} and {step_number} < {steps}",
                            "transition": {"name": "$noTransition"},
                        },
                        {
                            "type": "filter",
                            "xpr": f"{is_step} and {step_number} = {steps}",
                            "onTrue": {"xpr": "$setLocal('last', $event)"},
                            "transition": {"name": "waiting"},
                        },
                    ],
                    **_reply("step", label=LABEL, step=f"$xpr({step_number})"),
                },
            },
            {
                "name": "waiting",
                "condition": {"type": "filter", "xpr": "$event.type = 'never'"},
                "expiry": {
                    "interval": expiry_ms,
                    "transition": {"name": "expired", "input": "local", "localName": "last"},
                },
            },
            {
                "name": "expired",
                "condition": {
                    "type": "filter",
                    "xpr": "true",
                    **_reply("expired", label=LABEL),
                    "transition": {"name": "$terminate"},
                },
            },
        ],
    }


def boom_pattern() -> dict[str, Any]:
    """A `boom` event creates a thred whose transform throws (`$error('boom')`)."""
    return {
        "name": "Boom",
        "id": BOOM_PATTERN_ID,
        "reactions": [
            {
                "condition": {
                    "type": "filter",
                    "xpr": "$event.type = 'boom'",
                    "transform": {"eventDataTemplate": {"title": "$xpr( $error('boom') )"}},
                    "publish": {"to": [CLIENT]},
                }
            }
        ],
    }


def write_profile(root: Path, *, steps: int, expiry_ms: int = 1000) -> Path:
    """A profile folder: the conversation and boom patterns, and `client`'s session."""
    patterns = root / "patterns"
    patterns.mkdir(parents=True)
    conversation = conversation_pattern(steps=steps, expiry_ms=expiry_ms)
    (patterns / "conversation.json").write_text(json.dumps(conversation, indent=1))
    (patterns / "boom.json").write_text(json.dumps(boom_pattern(), indent=1))
    sessions = [{"participantId": CLIENT, "nodeId": NODE_ID, "roles": []}]
    (root / "sessions.json").write_text(json.dumps(sessions))
    return root


# --- engine processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backends:
    """The URLs the engine processes get."""

    redis_url: str
    rabbitmq_url: str
    mongodb_url: str


class EngineProcess:
    """One `srvthreds-engine` subprocess on a free port (PORT), its log in a file.

    By default `run --profile <profile>`; `command` runs another one (e.g. `agent session`),
    with `extra_env` on top of the backend URLs.
    """

    def __init__(
        self,
        name: str,
        *,
        profile: Path,
        backends: Backends,
        log_dir: Path,
        command: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.backends = backends
        self.log_path = log_dir / f"{name}.log"
        self.port = 0
        self.command = list(command) if command is not None else None
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The HTTP API of the running process."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process on a new free port (call from the main thread: parent-death kill)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("API_TOKEN", "PROFILE_DIR", "PATTERNS_DIR")
        }
        env.update(
            REDIS_URL=self.backends.redis_url,
            RABBITMQ_URL=self.backends.rabbitmq_url,
            MONGODB_URL=self.backends.mongodb_url,
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            HOST="127.0.0.1",
            PORT=str(self.port),
        )
        env.update(self.extra_env)
        if self.command is None:
            argv = [str(ENGINE_BINARY), "run", "--profile", str(self.profile)]
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        else:
            argv = [str(ENGINE_BINARY), *self.command]
        with self.log_path.open("a") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} starting {self.name} on {self.port}\n")
        self.process = start_process(
            self.name, argv, log=self.log_path, tie_to_parent=True, env=env
        )

    async def kill(self) -> None:
        """SIGKILL (no drain, no cleanup: a crash), and reap it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, ENGINE_STOP_SECONDS)

    def log_tail(self, *, lines: int = LOG_LINES) -> str:
        """The end of the process's log."""
        return tail(self.log_path, lines=lines) if self.log_path.exists() else "(no log)"


class EngineApi:
    """HTTP calls to the engine processes (one shared aiohttp session)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def get(self, engine: EngineProcess, path: str) -> tuple[int, Any]:
        """Status and JSON body; status 0 when the process does not answer."""
        try:
            async with self.session.get(
                engine.base_url + path, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def checks(self, engine: EngineProcess) -> dict[str, bool]:
        """The `/ready` checks of one engine (empty when it does not answer)."""
        _, body = await self.get(engine, "/ready")
        return dict(body["checks"]) if isinstance(body, dict) else {}

    async def ready(self, engine: EngineProcess) -> bool:
        """Whether `/ready` answers 200."""
        status, _ = await self.get(engine, "/ready")
        return status == 200

    async def threds(self, engine: EngineProcess) -> list[dict[str, Any]]:
        """GET /threds of one engine."""
        status, body = await self.get(engine, "/threds")
        assert status == 200, f"GET /threds of {engine.name}: {status} {body}"
        return list(body["threds"])

    async def counter(self, engine: EngineProcess, name: str) -> float:
        """The sum of a Prometheus counter's samples (every label set) on one engine."""
        async with self.session.get(engine.base_url + "/metrics") as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


@dataclass
class EngineGroup:
    """Engine processes of one test: started ready, always killed, logs in the report."""

    engines: list[EngineProcess]
    api: EngineApi

    async def start(self, engine: EngineProcess) -> None:
        """Start one process and wait until its /ready says every check passes."""
        engine.start()
        await self.wait_ready(engine)

    async def wait_ready(self, engine: EngineProcess) -> None:
        """Wait until the engine's /ready answers 200 (failing at once if it exited)."""

        async def ready() -> bool:
            if not engine.running:
                pytest.fail(f"{engine.name} exited:\n{engine.log_tail()}")
            return await self.api.ready(engine)

        await eventually(
            ready,
            what=f"{engine.name} ({engine.base_url}) to be ready",
            seconds=ENGINE_START_SECONDS,
        )

    async def checks_become(self, check: str, *, value: bool, seconds: float) -> None:
        """Wait until every running engine's /ready shows `check` = `value`."""

        async def shown() -> bool:
            for engine in self.engines:
                if (await self.api.checks(engine)).get(check) is not value:
                    return False
            return True

        await eventually(
            shown, what=f"/ready of every engine to show {check}={value}", seconds=seconds
        )


@contextlib.asynccontextmanager
async def engine_group(
    count: int,
    *,
    profile: Path,
    backends: Backends,
    log_dir: Path,
    report: Callable[[str, str], None],
) -> AsyncIterator[EngineGroup]:
    """`count` engine processes, ready; killed at the end, each log's tail in the report."""
    engines = [
        EngineProcess(f"engine-{index}", profile=profile, backends=backends, log_dir=log_dir)
        for index in range(count)
    ]
    async with aiohttp.ClientSession() as session:
        group = EngineGroup(engines, EngineApi(session))
        try:
            for engine in engines:
                engine.start()
            for engine in engines:
                await group.wait_ready(engine)
            yield group
        finally:
            for engine in engines:
                await engine.kill()
            for engine in engines:
                report(f"{engine.name} log ({engine.log_path})", engine.log_tail())


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One delivery of an outbound message on the client's queue."""

    message_id: str
    body: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        """The message's event."""
        return dict(self.body["event"])

    @property
    def title(self) -> str:
        """The event's title (`opened`, `step`, `expired`, or an error's)."""
        return str(self.event.get("data", {}).get("title", ""))

    @property
    def values(self) -> dict[str, Any]:
        """The event's `content.values` (empty when it has none)."""
        content = self.event.get("data", {}).get("content", {})
        values = content.get("values") if isinstance(content, dict) else None
        return values if isinstance(values, dict) else {}


def start_event(label: str) -> dict[str, Any]:
    """The unbound event that opens conversation `label`."""
    return {
        "id": f"{label}-start",
        "type": "start",
        "source": {"id": CLIENT},
        "data": {"title": "start", "content": {"values": {"label": label}}},
    }


def step_event(label: str, *, thred_id: str, step: int) -> dict[str, Any]:
    """Step `step` of conversation `label`, bound to its thred."""
    return {
        "id": f"{label}-step-{step}",
        "type": "step",
        "thredId": thred_id,
        "source": {"id": CLIENT},
        "data": {"title": "step", "content": {"values": {"label": label, "step": step}}},
    }


async def connect_client(url: str) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
    """A robust connection and a confirming channel (restored after a broker restart)."""
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.5)
    channel = await connection.channel(publisher_confirms=True)
    assert isinstance(channel, AbstractRobustChannel)
    return connection, channel


async def declare_inbox(channel: AbstractRobustChannel) -> aio_pika.abc.AbstractRobustQueue:
    """The client's durable queue, bound to `message-exchange` by its node id."""
    exchange = await channel.declare_exchange(
        MESSAGE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(INBOX, durable=True)
    await queue.bind(exchange, routing_key=NODE_ID)
    return queue


@dataclass
class Conversations:
    """The client side of the stream: one closed loop per conversation, all in parallel.

    Each conversation sends `start`, then step k+1 once the reply to step k arrived (a
    repeated reply is recorded, not answered). `allowance` caps the events sent so far
    (None: no cap), so a test can keep part of the stream for later.
    """

    channel: AbstractRobustChannel
    labels: list[str]
    steps: int
    received: list[Received] = field(default_factory=list)
    thred_ids: dict[str, str] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    # Events whose publish the broker confirmed.
    confirmed: int = 0
    # Event ids the client published again after a publish failed (not confirmed).
    republished: list[str] = field(default_factory=list)
    allowance: int | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def total_events(self) -> int:
        """Events of the whole stream: a start and every step per conversation."""
        return len(self.labels) * (1 + self.steps)

    @property
    def expected_messages(self) -> int:
        """Distinct messages of the whole stream: opened, every step reply, expired."""
        return len(self.labels) * (2 + self.steps)

    def distinct(self) -> dict[str, Received]:
        """The first delivery of each message id."""
        first: dict[str, Received] = {}
        for item in self.received:
            first.setdefault(item.message_id, item)
        return first

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """The inbox consumer: record, acknowledge, then answer a new reply."""
        body = json.loads(message.body)
        item = Received(message_id=str(message.message_id), body=body)
        self.received.append(item)
        with contextlib.suppress(Exception):  # a lost channel: the broker redelivers it
            await message.ack()
        self._answer(item)
        async with self._changed:
            self._changed.notify_all()

    def _answer(self, item: Received) -> None:
        label = item.values.get("label")
        if not isinstance(label, str) or label not in self.answered:
            return
        step = item.values.get("step")
        if item.title == "opened" and label not in self.thred_ids:
            self.thred_ids[label] = str(item.event["thredId"])
        elif item.title != "step" or step != self.answered[label] + 1:
            return
        if item.title == "step":
            self.answered[label] += 1
        if self.answered[label] < self.steps:
            thred_id = self.thred_ids[label]
            event = step_event(label, thred_id=thred_id, step=self.answered[label] + 1)
            self._spawn(self.send(event))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def begin(self) -> None:
        """Send every conversation's `start`."""
        for label in self.labels:
            self.answered[label] = 0
            self._spawn(self.send(start_event(label)))

    async def allow(self, events: int | None) -> None:
        """Let the client send up to `events` events in all (None: all of them)."""
        async with self._changed:
            self.allowance = events
            self._changed.notify_all()

    async def send(self, event: dict[str, Any]) -> None:
        """Publish one event to `event-exchange`, confirmed; published again until confirmed."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.allowance is None or self.sent < self.allowance
            )
            self.sent += 1
        message = aio_pika.Message(
            json.dumps(event).encode(),
            message_id=str(event["id"]),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        deadline = time.monotonic() + 120.0
        while True:
            try:
                exchange = await self.channel.get_exchange(EVENT_EXCHANGE, ensure=False)
                await exchange.publish(message, routing_key=EVENT_ROUTING_KEY, timeout=10)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                self.republished.append(str(event["id"]))
                await asyncio.sleep(0.5)
                continue
            async with self._changed:
                self.confirmed += 1
                self._changed.notify_all()
            return

    async def wait_for(self, condition: Callable[[], bool], *, what: str, seconds: float) -> None:
        """Wait until `condition` holds (checked on every message) or fail naming `what`."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(condition), seconds)
        except TimeoutError:
            pytest.fail(
                f"timed out after {seconds:.0f} s waiting for {what} "
                f"({len(self.distinct())} of {self.expected_messages} messages, "
                f"{self.sent} events sent)"
            )

    async def wait_messages(self, count: int, *, seconds: float) -> None:
        """Wait until `count` distinct messages arrived."""
        await self.wait_for(
            lambda: len(self.distinct()) >= count,
            what=f"{count} distinct messages on {INBOX}",
            seconds=seconds,
        )

    async def close(self) -> None:
        """Cancel sends still waiting."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


# --- checks ------------------------------------------------------------------------------------


def repeats_with_other_content(received: Sequence[Received]) -> list[str]:
    """Message ids delivered more than once with different bodies."""
    bodies: dict[str, dict[str, Any]] = {}
    wrong: list[str] = []
    for item in received:
        first = bodies.setdefault(item.message_id, item.body)
        if first != item.body:
            wrong.append(item.message_id)
    return wrong


def repeated_ids(received: Sequence[Received]) -> dict[str, int]:
    """Message ids delivered more than once, with their delivery count."""
    counts = Counter(item.message_id for item in received)
    return {message_id: count for message_id, count in counts.items() if count > 1}


def stream_problems(conversations: Conversations) -> list[str]:
    """What the distinct messages lack or repeat, per conversation (empty = all fine).

    Per conversation: exactly one `opened`, the step replies 1..steps in that order (each
    number once), exactly one `expired`, every message about the conversation's thred.
    """
    by_label: dict[str, list[Received]] = defaultdict(list)
    for item in conversations.distinct().values():
        by_label[str(item.values.get("label"))].append(item)
    problems: list[str] = []
    unknown = set(by_label) - set(conversations.labels)
    if unknown:
        problems.append(f"messages of unknown conversations: {sorted(unknown)[:5]}")
    wanted_steps = list(range(1, conversations.steps + 1))
    for label in conversations.labels:
        items = by_label.get(label, [])
        titles = Counter(item.title for item in items)
        steps = [item.values.get("step") for item in items if item.title == "step"]
        threds = {item.event.get("thredId") for item in items}
        if titles["opened"] != 1 or titles["expired"] != 1 or steps != wanted_steps:
            problems.append(
                f"{label}: opened x{titles['opened']}, expired x{titles['expired']}, "
                f"step replies {steps}"
            )
        elif threds != {conversations.thred_ids.get(label)}:
            problems.append(f"{label}: messages of several threds {sorted(map(str, threds))}")
    return problems


async def dead_letters(
    channel: AbstractRobustChannel, *, count: int, seconds: float
) -> list[AbstractIncomingMessage]:
    """`count` messages taken (acknowledged) from `event-queue.dead`, waiting for them."""
    queue = await channel.declare_queue(DEAD_EVENTS, durable=True, passive=True)
    taken: list[AbstractIncomingMessage] = []

    async def more() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            taken.append(message)
        return len(taken) >= count

    await eventually(more, what=f"{count} messages in {DEAD_EVENTS}", seconds=seconds, every=0.05)
    return taken


@contextlib.asynccontextmanager
async def conversation_client(
    url: str, *, labels: list[str], steps: int
) -> AsyncIterator[Conversations]:
    """The client: its inbox declared and consumed; the connection closed at the end."""
    connection, channel = await connect_client(url)
    try:
        inbox = await declare_inbox(channel)
        conversations = Conversations(channel=channel, labels=labels, steps=steps)
        await inbox.consume(conversations.on_message, no_ack=False)
        try:
            yield conversations
        finally:
            await conversations.close()
    finally:
        await connection.close()


async def publish_raw(channel: AbstractRobustChannel, body: bytes, *, message_id: str) -> None:
    """Publish any body to `event-exchange` (as a client that sends garbage would), confirmed."""
    exchange = await channel.get_exchange(EVENT_EXCHANGE, ensure=False)
    message = aio_pika.Message(
        body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )
    await exchange.publish(message, routing_key=EVENT_ROUTING_KEY, timeout=10)


def header_text(message: AbstractIncomingMessage, name: str) -> str:
    """A header as text (AMQP long strings may arrive as bytes)."""
    value = message.headers.get(name)
    return value.decode() if isinstance(value, bytes) else str(value)
