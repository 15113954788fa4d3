"""The backends benchmark: the engine node on Redis and RabbitMQ against a bare aio-pika relay."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import io
import itertools
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from tests.bench.engine_bench import (
    PATTERN_A,
    PATTERN_B,
    RESOLVER,
    SESSIONS,
    cpu_pressure,
    load_average,
    machine,
    percentile_ms,
    profile_tables,
)
from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.procfs import free_port, process_tree
from tests.brokers.rabbitmq_server import RabbitMqServer
from tests.brokers.redis_server import RedisServer
from tests.brokers.server import TestServer, tail
from tests.localcluster.processes import start_process

COMMAND = "make bench  (python -m tests.bench backends)"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The session node of the benchmark's participants: the engine routes their messages with it.
NODE_ID = "bench-node"
OUT_QUEUE = "bench-node-message-queue"
MESSAGE_EXCHANGE = "message-exchange"
EVENT_EXCHANGE = "event-exchange"
EVENT_ROUTING_KEY = "org.wt.event"
RELAY_EXCHANGE = "relay-event-exchange"
RELAY_QUEUE = "relay-event-queue"
WINDOWS = (1, 32)
PROCESS_COUNTS = (1, 3)
MEASURE_SECONDS = 4.0
PROFILE_SECONDS = 10.0
OPEN_LOOP_SECONDS = 5.0
OPEN_LOOP_SHARE = 0.5
CONCURRENT_THREDS = 1000
ENGINE_PREFETCH = 32
ROUND_TRIP_EVENTS = 200
ANSWER_TIMEOUT = 30.0
READY_TIMEOUT = 60.0
# Targets of issue 7.
RELAY_SHARE_TARGET = 0.70
SCALING_TARGET = 0.90
ROUND_TRIP_TARGET = 3.0
RSS_TARGET_MB = 100.0
ORIGINAL_EVENTS_PER_SECOND = 150
ORIGINAL_CPU_MS = "6-7"
PROFILE_TOP_FOCUS = ("srvthreds_engine", "aio_pika", "aiormq", "pamqp", "redis", "json")
# Imports first; SIGUSR1 starts the profiler and SIGUSR2 stops it and writes the statistics,
# so that they cover serving only. CPU time, so that waiting costs nothing.
PROFILED_ENGINE = """
import cProfile, signal, sys, time
import srvthreds_engine.apps.cli, srvthreds_engine.apps.embedded, srvthreds_engine.apps.node
import srvthreds_engine.adapters.rabbitmq, srvthreds_engine.adapters.redis
profiler = cProfile.Profile(time.process_time)
def start(*_):
    profiler.enable()
def dump(*_):
    profiler.disable()
    profiler.dump_stats(sys.argv[1])
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, dump)
sys.exit(srvthreds_engine.apps.cli.main(sys.argv[2:]))
"""

# (a) publishes to the participants only: both have a session on NODE_ID, so each event
# gives exactly one routable message, as the relay does (the original also names `sink`, a
# service no benchmark queue is bound for).
PATTERN_A_ROUTABLE: dict[str, Any] = copy.deepcopy(PATTERN_A)
PATTERN_A_ROUTABLE["reactions"][0]["condition"]["publish"] = {"to": ["$bench"]}
PROFILE_SESSIONS = [
    {"participantId": participant["participantId"], "nodeId": NODE_ID}
    for participant in SESSIONS["groups"][0]["participants"]
]


# --- events ----------------------------------------------------------------------------------

_NUMBERS = itertools.count()


def unique_id(kind: str) -> str:
    """An event id no earlier event of the run used (the id is the engine's work key)."""
    return f"{kind}{next(_NUMBERS)}"


def bench_event(kind: str, *, thred_id: str | None = None) -> dict[str, Any]:
    """An event of kind `a` (pattern a), `start`, `step` or `finish` (pattern b)."""
    event: dict[str, Any] = {
        "id": unique_id(kind),
        "type": f"bench.{kind}",
        "source": {"id": "client"},
        "data": {"content": {"values": {"n": 1}}},
    }
    if thred_id is not None:
        event["thredId"] = thred_id
    return event


def answer_key(event: dict[str, Any]) -> str:
    """The title of the message the benchmark patterns answer this event with."""
    return f"{event['type'].removeprefix('bench.')} {event['id']}"


def key_of(body: dict[str, Any]) -> tuple[str, str | None]:
    """(answer key, thred id) of a consumed message: an engine message or a relayed event."""
    event = body.get("event")
    if isinstance(event, dict):
        return str(event["data"]["title"]), event.get("thredId")
    return str(body["id"]), None


# --- processes -------------------------------------------------------------------------------


def process_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (0 for one that is gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Brokers:
    """Redis and RabbitMQ (FerretDB on demand) from the broker test harness, in one folder."""

    root: Path
    redis: RedisServer = field(init=False)
    rabbitmq: RabbitMqServer = field(init=False)
    ferretdb: FerretDbServer | None = None
    started: list[TestServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis = RedisServer(root=self.root / "redis")
        self.rabbitmq = RabbitMqServer(root=self.root / "rabbitmq")

    def start(self) -> None:
        for server in (self.redis, self.rabbitmq):
            server.start()
            self.started.append(server)

    def start_ferretdb(self) -> FerretDbServer:
        self.ferretdb = FerretDbServer(root=self.root / "ferretdb")
        self.ferretdb.start()
        self.started.append(self.ferretdb)
        return self.ferretdb

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()

    def cpu_seconds(self) -> float:
        """CPU time of every broker process so far (RabbitMQ's VM, epmd, Redis, FerretDB)."""
        roots = [pid for server in self.started for pid in server.pids]
        return process_cpu_seconds([member.pid for member in process_tree(roots)])


class Children:
    """Child processes (engine replicas or the relay) with their logs; stopped by pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *, argv: Sequence[str], env: dict[str, str]) -> None:
        log = self.root / f"{name}.log"
        process = start_process(name, argv, log=log, tie_to_parent=True, env=env)
        self.processes.append((name, process, log))

    @property
    def pids(self) -> list[int]:
        return [process.pid for _, process, _ in self.processes]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pids)

    def peak_rss_mb(self) -> float:
        return max((peak_rss_mb(pid) for pid in self.pids), default=float("nan"))

    def check_alive(self) -> None:
        for name, process, log in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; its log:\n{tail(log, lines=30)}"
                )

    async def stop(self) -> None:
        """SIGTERM (the engine drains and, under cProfile, writes its profile), then SIGKILL."""
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.processes:
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        self.processes.clear()


def engine_environment(
    brokers: Brokers, *, mongodb_url: str = "", profiled: bool = False
) -> dict[str, str]:
    return os.environ | {
        "REDIS_URL": brokers.redis.url,
        "RABBITMQ_URL": brokers.rabbitmq.url,
        "MONGODB_URL": mongodb_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "API_TOKEN": "",
        "EVENT_PREFETCH": str(ENGINE_PREFETCH),
        # cProfile reads the Python frames of asyncio's loop only; uvloop otherwise.
        "EVENT_LOOP": "asyncio" if profiled else os.environ.get("EVENT_LOOP", "auto"),
    }


def write_profile(directory: Path) -> Path:
    (directory / "patterns").mkdir(parents=True)
    (directory / "patterns" / "a.json").write_text(json.dumps(PATTERN_A_ROUTABLE))
    (directory / "patterns" / "b.json").write_text(json.dumps(PATTERN_B))
    (directory / "sessions_model.json").write_text(json.dumps(SESSIONS))
    (directory / "resolver_config.json").write_text(json.dumps(RESOLVER))
    (directory / "sessions.json").write_text(json.dumps(PROFILE_SESSIONS))
    return directory


async def start_engines(
    children: Children,
    *,
    count: int,
    profile: Path,
    env: dict[str, str],
    cprofile_to: Path | None = None,
) -> None:
    """`count` replicas of `srvthreds-engine run` on the same brokers, each answering /ready."""
    ports = []
    for index in range(count):
        port = free_port()
        ports.append(port)
        arguments = ["run", "--profile", str(profile), "--host", "127.0.0.1", "--port", str(port)]
        if cprofile_to is None:
            argv = [str(Path(sys.executable).with_name("srvthreds-engine")), *arguments]
        else:
            argv = [sys.executable, "-c", PROFILED_ENGINE, str(cprofile_to), *arguments]
        children.start(f"engine-{len(children.processes)}-{index}", argv=argv, env=env)
    async with aiohttp.ClientSession() as session:
        for port in ports:
            await _wait_ready(session, port=port, children=children)


async def _wait_ready(session: aiohttp.ClientSession, *, port: int, children: Children) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        children.check_alive()
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the engine on port {port} was not ready within {READY_TIMEOUT} s")


# --- the relay (a separate process) ----------------------------------------------------------


async def relay(url: str, *, prefetch: int, ready_file: Path) -> None:
    """Consume a persistent event, publish it as a persistent message with a confirm, ack.

    Each delivery is handled in a task of its own, as the engine node does, so that
    `prefetch` deliveries are in flight at once.
    """
    connection = await aio_pika.connect(url)
    out_channel = await connection.channel(publisher_confirms=True)
    out_exchange = await out_channel.declare_exchange(
        MESSAGE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    in_channel = await connection.channel(publisher_confirms=False)
    await in_channel.set_qos(prefetch_count=prefetch)
    in_exchange = await in_channel.declare_exchange(
        RELAY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await in_channel.declare_queue(RELAY_QUEUE, durable=True)
    await queue.bind(in_exchange, routing_key="#")
    in_flight: set[asyncio.Task[None]] = set()

    async def relay_one(message: AbstractIncomingMessage) -> None:
        outbound = aio_pika.Message(
            message.body,
            message_id=message.message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await out_exchange.publish(outbound, routing_key=NODE_ID, mandatory=True)
        await message.ack()

    async with queue.iterator() as deliveries:
        await asyncio.to_thread(ready_file.write_text, "ready")
        async for message in deliveries:
            task = asyncio.create_task(relay_one(message))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)


def relay_main(argv: list[str]) -> None:
    """`python -m tests.bench.backends_bench relay URL PREFETCH READY_FILE` (until SIGTERM)."""
    from srvthreds_engine.apps.embedded import event_loop_factory

    url, prefetch, ready_file = argv[0], int(argv[1]), Path(argv[2])
    # The engine's own choice of loop, so that both sides of the comparison run on it.
    with asyncio.Runner(loop_factory=event_loop_factory("auto")) as runner:
        runner.run(relay(url, prefetch=prefetch, ready_file=ready_file))


async def start_relay(children: Children, *, url: str, prefetch: int) -> None:
    ready_file = children.root / f"relay-{prefetch}.ready"
    argv = [sys.executable, "-m", "tests.bench.backends_bench", "relay", url, str(prefetch)]
    children.start(f"relay-{prefetch}", argv=[*argv, str(ready_file)], env=dict(os.environ))
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready_file.exists():
        children.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not start consuming")
        await asyncio.sleep(0.05)


# --- the load client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """When an answer message was consumed, and the thred id it names."""

    arrived: float
    thred_id: str | None


class LoadClient:
    """Publishes events with confirms and consumes the answers from the benchmark's node queue.

    The answers are consumed without acknowledgements: the client observes, it is not part
    of the measured path (the relay and the engine publish to the same durable queue).
    """

    def __init__(self, connection: AbstractConnection, *, exchange: AbstractExchange) -> None:
        self.connection = connection
        self.exchange = exchange
        self.latencies: list[float] = []
        self._waiters: dict[str, asyncio.Future[Answer]] = {}
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, url: str, *, exchange_name: str) -> LoadClient:
        connection = await aio_pika.connect(url)
        publishing = await connection.channel(publisher_confirms=True)
        exchange = await publishing.get_exchange(exchange_name, ensure=True)
        client = cls(connection, exchange=exchange)
        await client._consume(await connection.channel(publisher_confirms=False))
        return client

    async def _consume(self, channel: AbstractChannel) -> None:
        messages = await channel.declare_exchange(
            MESSAGE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(OUT_QUEUE, durable=True)
        await queue.bind(messages, routing_key=NODE_ID)
        await queue.purge()
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        arrived = time.perf_counter()
        key, thred_id = key_of(json.loads(message.body))
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(arrived, thred_id))

    async def publish(self, event: dict[str, Any]) -> None:
        """Publish one event, persistent, and wait for its confirm."""
        message = aio_pika.Message(
            json.dumps(event, separators=(",", ":")).encode(),
            message_id=str(event["id"]),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.exchange.publish(message, routing_key=EVENT_ROUTING_KEY)

    async def send(self, event: dict[str, Any], *, key: str, since: float | None = None) -> Answer:
        """Publish `event` and wait for its answer; its latency (from `since`) is recorded."""
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiters[key] = waiter
        started = time.perf_counter() if since is None else since
        await self.publish(event)
        try:
            answer = await asyncio.wait_for(waiter, ANSWER_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(
                f"no answer to {event['id']} ({key}) in {ANSWER_TIMEOUT} s"
            ) from None
        self.latencies.append(answer.arrived - started)
        return answer

    async def close(self) -> None:
        await self.connection.close()


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Measured:
    """One measurement: how many events in how long, and the CPU each party spent on them."""

    path: str
    processes: int
    workload: str
    window: int | str
    events: int = 0
    seconds: float = 0.0
    engine_cpu: float = 0.0
    broker_cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    # The rows this one is compared with: the relay at its window, one replica (for three).
    relay_row: Measured | None = None
    single_row: Measured | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_event(self) -> float:
        """CPU seconds per event of every party: measured processes, brokers, load client."""
        total = self.engine_cpu + self.broker_cpu + self.client_cpu
        return total / self.events if self.events else float("nan")

    def share_of(self, reference: Measured | None) -> tuple[float, float] | None:
        """(events/s ratio, events per CPU second ratio) to `reference`, or None."""
        if reference is None or not reference.events_per_second or not self.events:
            return None
        return (
            self.events_per_second / reference.events_per_second,
            reference.cpu_per_event / self.cpu_per_event,
        )

    @staticmethod
    def share_cell(share: tuple[float, float] | None) -> str:
        return "" if share is None else f"{100 * share[0]:.0f}% ({100 * share[1]:.0f}%)"

    def per_event_us(self, seconds: float) -> str:
        return f"{1e6 * seconds / self.events:,.0f}" if self.events else "n/a"

    def percentile_ms(self, fraction: float) -> float:
        return percentile_ms(self.latencies, fraction)

    def row(self) -> str:
        relay_share = self.share_cell(self.share_of(self.relay_row))
        scaling = self.share_cell(self.share_of(self.single_row))
        return (
            f"| {self.path} | {self.processes} | {self.workload} | {self.window} | {self.events} "
            f"| {self.events_per_second:,.0f} | {relay_share} | {scaling} "
            f"| {self.per_event_us(self.engine_cpu)} | {self.per_event_us(self.broker_cpu)} "
            f"| {self.per_event_us(self.client_cpu)} "
            f"| {self.percentile_ms(0.5):.1f} | {self.percentile_ms(0.99):.1f} |"
        )


class Meter:
    """CPU of the measured processes, the brokers and the client around one measurement."""

    def __init__(self, brokers: Brokers, *, measured: Children) -> None:
        self.brokers = brokers
        self.measured = measured

    def sample(self) -> tuple[float, float, float]:
        return self.measured.cpu_seconds(), self.brokers.cpu_seconds(), time.process_time()

    def into(self, figures: Measured, *, before: tuple[float, float, float]) -> Measured:
        after = self.sample()
        figures.engine_cpu = after[0] - before[0]
        figures.broker_cpu = after[1] - before[1]
        figures.client_cpu = after[2] - before[2]
        return figures


Unit = Callable[[], Awaitable[int]]


async def closed_loop(window: int, *, unit: Unit, seconds: float) -> tuple[int, float]:
    """`window` workers each repeat `unit` (one event, or one chain) until `seconds` passed.

    A worker finishes the unit it started, so nothing is in flight afterwards; the elapsed
    time runs to the last answer.
    """
    started = time.perf_counter()
    deadline = started + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            events = await unit()
            if not events:
                return
            done += events

    await asyncio.gather(*(worker() for _ in range(window)))
    return done, time.perf_counter() - started


async def measure(
    figures: Measured,
    *,
    meter: Meter,
    client: LoadClient,
    unit: Unit,
    seconds: float = MEASURE_SECONDS,
) -> Measured:
    window = int(figures.window)
    client.latencies.clear()
    before = meter.sample()
    figures.events, figures.seconds = await closed_loop(window, unit=unit, seconds=seconds)
    figures.latencies = list(client.latencies)
    return meter.into(figures, before=before)


def unit_a(client: LoadClient, *, kind: str = "a", relayed: bool = False) -> Unit:
    async def one() -> int:
        event = bench_event(kind)
        await client.send(event, key=str(event["id"]) if relayed else answer_key(event))
        return 1

    return one


def unit_chain(client: LoadClient) -> Unit:
    """Pattern (b): start, step, finish, each sent when the previous answer arrived."""

    async def chain() -> int:
        start = bench_event("start")
        thred_id = (await client.send(start, key=answer_key(start))).thred_id
        for kind in ("step", "finish"):
            event = bench_event(kind, thred_id=thred_id)
            await client.send(event, key=answer_key(event))
        return 3

    return chain


def unit_from(client: LoadClient, *, pending: collections.deque[dict[str, Any]]) -> Unit:
    """The next of a shared list of events (0 when it ran out)."""

    async def one() -> int:
        if not pending:
            return 0
        event = pending.popleft()
        await client.send(event, key=answer_key(event))
        return 1

    return one


async def create_threds(client: LoadClient, *, count: int) -> list[str]:
    """`count` threds of pattern (b), 32 starts in flight; their ids."""
    thred_ids: list[str] = []
    starts = collections.deque(bench_event("start") for _ in range(count))

    async def worker() -> None:
        while starts:
            start = starts.popleft()
            answer = await client.send(start, key=answer_key(start))
            thred_ids.append(str(answer.thred_id))

    await asyncio.gather(*(worker() for _ in range(max(WINDOWS))))
    return thred_ids


async def open_loop(client: LoadClient, *, rate: float, seconds: float) -> list[float]:
    """(a) events published at `rate`, whatever the answers; latency from the scheduled time."""
    client.latencies.clear()
    started = time.perf_counter()
    tasks = []
    for number in range(int(rate * seconds)):
        scheduled = started + number / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event = bench_event("a")
        tasks.append(
            asyncio.create_task(client.send(event, key=answer_key(event), since=scheduled))
        )
    await asyncio.gather(*tasks)
    return list(client.latencies)


# --- the runs --------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything one run of the section measured."""

    rows: list[Measured] = field(default_factory=list)
    relay: dict[int, Measured] = field(default_factory=dict)
    rss_mb: dict[int, float] = field(default_factory=dict)
    open_loop: dict[int, Measured] = field(default_factory=dict)
    round_trips: list[tuple[str, float, float]] = field(default_factory=list)
    mongo_rows: list[Measured] = field(default_factory=list)
    library_costs: list[tuple[str, float]] = field(default_factory=list)
    profile: str = ""
    errors: list[str] = field(default_factory=list)


async def relay_runs(brokers: Brokers, *, scratch: Path, results: Results) -> None:
    """The bare aio-pika relay at each window, its prefetch = the window."""
    for window in WINDOWS:
        children = Children(scratch)
        try:
            await start_relay(children, url=brokers.rabbitmq.url, prefetch=window)
            client = await LoadClient.open(brokers.rabbitmq.url, exchange_name=RELAY_EXCHANGE)
            try:
                meter = Meter(brokers, measured=children)
                await closed_loop(window, unit=unit_a(client, relayed=True), seconds=0.5)
                figures = Measured("aio-pika relay", 1, "consume, publish + confirm, ack", window)
                await measure(
                    figures, meter=meter, client=client, unit=unit_a(client, relayed=True)
                )
                results.rows.append(figures)
                results.relay[window] = figures
            finally:
                await client.close()
        finally:
            await children.stop()


async def warm_up(client: LoadClient) -> int:
    """Imports, caches, script loads and connection pools of every replica; the events.

    At the largest window, so that redis-py's pools have all the connections the runs use:
    a new connection costs its process about 10 ms of CPU (CLIENT SETINFO reads the package
    metadata), which would otherwise be charged to the first run at that window.
    """
    events_a, _ = await closed_loop(max(WINDOWS), unit=unit_a(client), seconds=2.0)
    events_b, _ = await closed_loop(max(WINDOWS), unit=unit_chain(client), seconds=2.0)
    return events_a + events_b


async def workload_runs(
    meter: Meter, *, client: LoadClient, path: str, processes: int
) -> list[Measured]:
    """Workloads (a), (b) and (c) at each window on the running engine replicas."""
    rows: list[Measured] = []
    for window in WINDOWS:
        figures = Measured(path, processes, "(a) one reaction, creates and ends a thred", window)
        rows.append(await measure(figures, meter=meter, client=client, unit=unit_a(client)))
    for window in WINDOWS:
        figures = Measured(path, processes, "(b) chains start → step → finish", window)
        rows.append(await measure(figures, meter=meter, client=client, unit=unit_chain(client)))
    before = meter.sample()
    started = time.perf_counter()
    client.latencies.clear()
    thred_ids = await create_threds(client, count=CONCURRENT_THREDS)
    creation = Measured(path, processes, f"(c) creating {CONCURRENT_THREDS:,} threds", 32)
    creation.events, creation.seconds = len(thred_ids), time.perf_counter() - started
    creation.latencies = list(client.latencies)
    rows.append(meter.into(creation, before=before))
    # Each thred takes one step, then one finish: the list is shared by the windows, so
    # about 1,000 threds stay live throughout.
    bound = collections.deque(
        bench_event(kind, thred_id=thred_id)
        for kind in ("step", "finish")
        for thred_id in thred_ids
    )
    for window in WINDOWS:
        figures = Measured(
            path, processes, f"(c) {CONCURRENT_THREDS:,} live threds, bound events", window
        )
        rows.append(
            await measure(
                figures, meter=meter, client=client, unit=unit_from(client, pending=bound)
            )
        )
    return rows


async def engine_runs(brokers: Brokers, *, scratch: Path, profile: Path, results: Results) -> None:
    """Every workload on one replica, then on three; the open-loop latency on each."""
    for processes in PROCESS_COUNTS:
        await flush_redis(brokers)
        children = Children(scratch)
        try:
            await start_engines(
                children, count=processes, profile=profile, env=engine_environment(brokers)
            )
            client = await LoadClient.open(brokers.rabbitmq.url, exchange_name=EVENT_EXCHANGE)
            try:
                meter = Meter(brokers, measured=children)
                await warm_up(client)
                path = "engine: Redis + RabbitMQ"
                rows = await workload_runs(meter, client=client, path=path, processes=processes)
                results.rows.extend(rows)
                results.open_loop[processes] = await latency_run(
                    meter, client=client, rows=rows, processes=processes
                )
                children.check_alive()
                results.rss_mb[processes] = children.peak_rss_mb()
            finally:
                await client.close()
        finally:
            await children.stop()


async def latency_run(
    meter: Meter, *, client: LoadClient, rows: list[Measured], processes: int
) -> Measured:
    """(a) offered open loop at half the best (a) rate just measured."""
    best = max(row.events_per_second for row in rows if row.workload.startswith("(a)"))
    rate = OPEN_LOOP_SHARE * best
    figures = Measured(
        "engine: Redis + RabbitMQ",
        processes,
        f"(a) open loop at {rate:,.0f} events/s",
        "open",
    )
    before = meter.sample()
    started = time.perf_counter()
    figures.latencies = await open_loop(client, rate=rate, seconds=OPEN_LOOP_SECONDS)
    figures.events, figures.seconds = len(figures.latencies), time.perf_counter() - started
    return meter.into(figures, before=before)


async def flush_redis(brokers: Brokers) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(brokers.redis.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def mongo_runs(brokers: Brokers, *, scratch: Path, profile: Path, results: Results) -> None:
    """One replica with MongoDB (FerretDB on SQLite) for its records: (a) and (b) at 32."""
    # Servers start from the main thread (PR_SET_PDEATHSIG); no client is connected meanwhile.
    ferretdb = brokers.start_ferretdb()
    await flush_redis(brokers)
    children = Children(scratch)
    try:
        env = engine_environment(brokers, mongodb_url=ferretdb.url + "bench")
        await start_engines(children, count=1, profile=profile, env=env)
        client = await LoadClient.open(brokers.rabbitmq.url, exchange_name=EVENT_EXCHANGE)
        try:
            meter = Meter(brokers, measured=children)
            await warm_up(client)
            path = "engine: Redis + RabbitMQ + MongoDB"
            window = max(WINDOWS)
            figures = Measured(path, 1, "(a) one reaction, creates and ends a thred", window)
            results.mongo_rows.append(
                await measure(figures, meter=meter, client=client, unit=unit_a(client))
            )
            figures = Measured(path, 1, "(b) chains start → step → finish", window)
            results.mongo_rows.append(
                await measure(figures, meter=meter, client=client, unit=unit_chain(client))
            )
        finally:
            await client.close()
    finally:
        await children.stop()


async def profile_run(brokers: Brokers, *, scratch: Path, profile: Path, results: Results) -> None:
    """One replica under cProfile (CPU-time timer) while it serves (a) at window 32."""
    stats_file = scratch / "engine.pstats"
    await flush_redis(brokers)
    children = Children(scratch)
    try:
        env = engine_environment(brokers, profiled=True)
        await start_engines(children, count=1, profile=profile, env=env, cprofile_to=stats_file)
        client = await LoadClient.open(brokers.rabbitmq.url, exchange_name=EVENT_EXCHANGE)
        try:
            await warm_up(client)
            os.kill(children.pids[0], signal.SIGUSR1)
            cpu_before = children.cpu_seconds()
            events, _ = await closed_loop(
                max(WINDOWS), unit=unit_a(client), seconds=PROFILE_SECONDS
            )
            cpu = children.cpu_seconds() - cpu_before
            os.kill(children.pids[0], signal.SIGUSR2)
            await _wait_for_file(stats_file, children=children)
        finally:
            await client.close()
    finally:
        await children.stop()
    stats = pstats.Stats(str(stats_file), stream=io.StringIO())
    results.profile = "\n".join(
        [
            profile_tables(
                stats,
                events=events,
                title=f"cProfile of one engine replica serving {events:,} events of (a) at "
                f"window {max(WINDOWS)} (profiler on after the warm-up, off before the "
                f"shutdown; the replica used {1e6 * cpu / events:,.0f} µs CPU/event under the "
                "profiler)",
                focus=PROFILE_TOP_FOCUS,
                timer="CPU-time timer (time.process_time), so waiting costs nothing; asyncio's "
                "loop",
            ),
            "",
            by_package(stats, events=events),
        ]
    )


async def _wait_for_file(path: Path, *, children: Children) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not path.exists() or not path.stat().st_size:  # noqa: ASYNC240 - a cheap stat
        children.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the profiled engine wrote no {path.name}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # dump_stats may still be writing


PACKAGES = (
    ("redis-py", ("site-packages/redis/",)),
    ("aio-pika, aiormq, pamqp", ("aio_pika/", "aiormq/", "pamqp/")),
    ("engine: service, core", ("srvthreds_engine/service/", "srvthreds_engine/core/")),
    ("engine: adapters, apps", ("srvthreds_engine/adapters/", "srvthreds_engine/apps/")),
    ("jsonata", ("jsonata",)),
    ("pydantic", ("pydantic",)),
    ("prometheus_client", ("prometheus_client",)),
    ("asyncio", ("asyncio/",)),
    ("json", ("/json/",)),
)


def by_package(stats: pstats.Stats, *, events: int) -> str:
    """Own CPU time per event, summed by the package of each function."""
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _, _), (_, _, own, _, _) in entries.items():
        package = next(
            (name for name, marks in PACKAGES if any(mark in filename for mark in marks)),
            "built-ins (sockets, dict, str...) and the rest",
        )
        totals[package] += own
    total = sum(totals.values())
    rows = [
        f"| {package} | {1e6 * own / events:,.0f} | {100 * own / total:.0f}% |"
        for package, own in totals.most_common()
    ]
    return "\n".join(
        [
            "Own time by package (µs CPU per event, under the profiler):",
            "",
            "| package | µs/event | share |",
            "| --- | ---: | ---: |",
            *rows,
        ]
    )


# --- Redis round trips (in process) ----------------------------------------------------------


class _RecordingPublisher:
    """Stands in for RabbitMQ: keeps the routed messages (routing itself is the real one)."""

    def __init__(self) -> None:
        self.routed: list[Any] = []

    async def publish(self, messages: Sequence[Any]) -> list[Any]:
        self.routed.extend(messages)
        return []


async def round_trip_runs(brokers: Brokers, *, results: Results) -> None:
    """Redis requests per event of each kind: the node's store, sessions, routing, observer."""
    import redis.asyncio

    from srvthreds_engine.adapters.memory import BoundedMemoryPersistence
    from srvthreds_engine.adapters.prometheus import EngineMetrics, PrometheusObserver
    from srvthreds_engine.adapters.redis import RedisSessionStore, RedisThredStore, RoundTrips
    from srvthreds_engine.apps.node import QueueDispatcher
    from srvthreds_engine.core.addresses import AddressBook, ResolverConfig, SessionsModel
    from srvthreds_engine.core.clock import SystemClock
    from srvthreds_engine.core.events import Event
    from srvthreds_engine.core.patterns import parse_pattern
    from srvthreds_engine.ports import Session
    from srvthreds_engine.service.processing import Engine

    await flush_redis(brokers)
    client = redis.asyncio.Redis.from_url(brokers.redis.url)
    trips = RoundTrips()
    clock = SystemClock()
    # As the node builds it (apps/node.py): the commit also reads the recipients' sessions.
    store = RedisThredStore(client, clock=clock, round_trips=trips, read_recipient_sessions=True)
    sessions = RedisSessionStore(client, round_trips=trips)
    for declared in PROFILE_SESSIONS:
        await sessions.add_session(Session(declared["participantId"], node_id=NODE_ID))
    addresses = AddressBook(
        SessionsModel.model_validate(SESSIONS),
        resolver_config=ResolverConfig.model_validate(RESOLVER),
    )
    metrics = EngineMetrics()
    publisher = _RecordingPublisher()
    engine = Engine(
        patterns=[
            parse_pattern(PATTERN_A_ROUTABLE, file="bench:a"),
            parse_pattern(PATTERN_B, file="bench:b"),
        ],
        store=store,
        sessions=sessions,
        persistence=BoundedMemoryPersistence(keep=1000),
        dispatcher=QueueDispatcher(
            publisher, sessions=sessions, addresses=addresses, metrics=metrics, keep=0
        ),
        clock=clock,
        observer=PrometheusObserver(metrics),
        address_book=addresses,
    )

    async def per_event(kind: str, thred_ids: list[str] | None) -> tuple[list[str], float, float]:
        """Process ROUND_TRIP_EVENTS events; (thred ids answered, trips/event, CPU µs/event)."""
        events = [
            Event.model_validate(bench_event(kind, thred_id=thred_ids[n] if thred_ids else None))
            for n in range(ROUND_TRIP_EVENTS)
        ]
        publisher.routed.clear()
        trips.count = 0
        cpu = time.process_time()
        for event in events:
            await engine.process(event)
        cpu = time.process_time() - cpu
        answered = [str(routed.body["event"]["thredId"]) for routed in publisher.routed]
        return answered, trips.count / len(events), 1e6 * cpu / len(events)

    try:
        # Warm-up: the first call of each script on a fresh server loads it (SCRIPT LOAD).
        warm = (await per_event("start", None))[0]
        await per_event("step", warm)
        await per_event("finish", warm)
        await per_event("a", None)
        thred_ids = (await per_event("start", None))[0]
        results.round_trips.append(("a", *(await per_event("a", None))[1:]))
        results.round_trips.append(("start", *(await per_event("start", None))[1:]))
        results.round_trips.append(("step", *(await per_event("step", thred_ids))[1:]))
        results.round_trips.append(("finish", *(await per_event("finish", thred_ids))[1:]))
    finally:
        await client.aclose()


# --- client library costs (in process) -------------------------------------------------------

LIBRARY_REQUESTS = 1000
COST_QUEUE = "bench-cost-queue"


def _cost(results: Results, *, what: str, since: float) -> None:
    """Record the µs of CPU per request since `since` (a `time.process_time()`)."""
    results.library_costs.append((what, 1e6 * (time.process_time() - since) / LIBRARY_REQUESTS))


async def library_cost_runs(brokers: Brokers, *, results: Results) -> None:
    """CPU per request of the two client libraries the node's every event goes through."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(brokers.redis.url)
    try:
        await client.ping()
        cpu = time.process_time()
        for _ in range(LIBRARY_REQUESTS):
            await client.ping()
        _cost(results, what="redis-py asyncio: one request (PING), awaited", since=cpu)
        cpu = time.process_time()
        for _ in range(LIBRARY_REQUESTS // 32):
            await asyncio.gather(*(client.ping() for _ in range(32)))
        _cost(results, what="redis-py asyncio: 32 concurrent requests", since=cpu)
        cpu = time.process_time()
        for _ in range(LIBRARY_REQUESTS // 32):
            pipeline = client.pipeline(transaction=False)
            for _ in range(32):
                pipeline.ping()
            await pipeline.execute()
        _cost(results, what="redis-py asyncio: pipelines of 32 requests", since=cpu)
    finally:
        await client.aclose()
    connection = await aio_pika.connect(brokers.rabbitmq.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(COST_QUEUE, durable=True)
        cpu = time.process_time()
        for number in range(LIBRARY_REQUESTS):
            message = aio_pika.Message(
                b'{"id":"%d"}' % number, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await channel.default_exchange.publish(message, routing_key=COST_QUEUE)
        _cost(results, what="aio-pika: one persistent publish, confirmed", since=cpu)
        cpu = time.process_time()
        async with queue.iterator() as deliveries:
            received = 0
            async for delivery in deliveries:
                await delivery.ack()
                received += 1
                if received == LIBRARY_REQUESTS:
                    break
        _cost(results, what="aio-pika: one delivery consumed and acked", since=cpu)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


# --- the section -----------------------------------------------------------------------------


async def all_runs(brokers: Brokers, *, scratch: Path) -> Results:
    results = Results()
    profile = write_profile(scratch / "profile")
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("relay", lambda: relay_runs(brokers, scratch=scratch, results=results)),
        ("round trips", lambda: round_trip_runs(brokers, results=results)),
        ("client libraries", lambda: library_cost_runs(brokers, results=results)),
        ("engine", lambda: engine_runs(brokers, scratch=scratch, profile=profile, results=results)),
        (
            "cProfile",
            lambda: profile_run(brokers, scratch=scratch, profile=profile, results=results),
        ),
        ("MongoDB", lambda: mongo_runs(brokers, scratch=scratch, profile=profile, results=results)),
    ]
    for name, step in steps:
        print(f"[bench] backends: {name}", file=sys.stderr, flush=True)
        try:
            await step()
        except Exception as exc:
            # The report says what failed rather than losing the other figures.
            results.errors.append(f"{name}: {exc!r}")
    return results


def run_backends_benchmarks() -> str:
    """Run the backends benchmark and return its BENCHMARKS.md section."""
    from srvthreds_engine.apps.embedded import event_loop_factory

    header = machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backends-bench-") as folder:
        scratch = Path(folder)
        brokers = Brokers(scratch / "brokers")
        try:
            brokers.start()
            with asyncio.Runner(loop_factory=event_loop_factory("auto")) as runner:
                results = runner.run(all_runs(brokers, scratch=scratch))
        finally:
            brokers.stop()
    return report(results, header=header, seconds=time.monotonic() - started)


def report(results: Results, *, header: str, seconds: float) -> str:
    one = {(row.workload, row.window): row for row in results.rows if row.processes == 1}
    for row in results.rows:
        if row.path.startswith("engine") and isinstance(row.window, int):
            row.relay_row = results.relay.get(row.window)
            if row.processes > 1:
                row.single_row = one.get((row.workload, row.window))
    rows = [*results.rows, *results.open_loop.values(), *results.mongo_rows]
    errors = "".join(f"\n**Failed:** `{error}`\n" for error in results.errors)
    return "\n".join(
        [
            "## Backends",
            "",
            header,
            "",
            f"Command: `{COMMAND}`; took {seconds:.0f} s; load average (1, 5, 15 min) at the "
            f"end {load_average()}, {cpu_pressure() or 'no PSI'}. "
            "Redis 7 and RabbitMQ 3.10 (and FerretDB for the MongoDB rows) run on loopback "
            "ports, started by the broker test harness (tests/brokers). "
            "The load client (in the benchmark process) publishes each event persistent, with "
            "a publisher confirm, to `event-exchange` (the relay: its own exchange and queue) "
            f"and sees it done when its answer arrives on a durable queue bound to "
            f"`message-exchange` with the routing key `{NODE_ID}`: the participants p1 and p2 "
            f"have a session on that node (the profile's sessions.json), so every answer is "
            "routable. Window = events in flight (closed loop: the next is published when an "
            f"answer arrives); each closed-loop figure runs {MEASURE_SECONDS:.0f} s. The engine "
            f"replicas run with EVENT_PREFETCH={ENGINE_PREFETCH}, uvloop, LOG_LEVEL=INFO, no "
            "MongoDB (records in bounded memory) unless the row says so. Latency = from "
            "publish (open loop: from the scheduled time) to the answer consumed. CPU µs/event: "
            "CPU time per event of the engine replicas together (the relay's process for the "
            "relay), of the brokers (RabbitMQ's VM, Redis) and of the load client: on a "
            "shared machine, the figures other load disturbs least. The ratio columns give "
            "events/s over the reference's events/s, and in brackets *by CPU*: the "
            "reference's CPU per event (all parties) over this row's, the ratio the two would "
            "have if both were bound by the same CPUs.",
            "",
            loaded_note(),
            "",
            f"For scale: the original engine with RabbitMQ and Redis does about "
            f"{ORIGINAL_EVENTS_PER_SECOND} events/s here at {ORIGINAL_CPU_MS} ms CPU per event.",
            "",
            "| path | processes | workload | window | events | events/s "
            "| of relay: events/s (by CPU) | of 1 process: events/s (by CPU) "
            "| engine CPU µs/event | brokers CPU µs/event | client CPU µs/event "
            "| p50 ms | p99 ms |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: |",
            *(row.row() for row in rows),
            errors,
            mongo_text(results),
            "",
            round_trip_text(results),
            "",
            library_text(results),
            "",
            budget_text(results),
            "",
            targets_text(results),
            "",
            "### Where the engine replica's time goes",
            "",
            results.profile or "(no profile: its run failed)",
            "",
        ]
    )


def mongo_text(results: Results) -> str:
    """Whether MongoDB dominates: the MongoDB rows against the same rows without it."""
    lines = []
    for row in results.mongo_rows:
        plain = _find(results, processes=1, workload=row.workload[:3], window=int(row.window))
        if plain is None or not row.events or not plain.events:
            continue
        lines.append(
            f"{row.workload[:3]} at window {row.window}: {row.events_per_second:,.0f} events/s "
            f"with MongoDB against {plain.events_per_second:,.0f} without; the backends' CPU "
            f"per event {1e6 * row.broker_cpu / row.events:,.0f} µs against "
            f"{1e6 * plain.broker_cpu / plain.events:,.0f} µs"
        )
    if not lines:
        return ""
    return (
        "MongoDB: FerretDB 1.24 on SQLite stands in for it (the harness's MongoDB server). "
        + "; ".join(lines)
        + ". It dominates every other cost, so the other engine rows keep the records in "
        "memory (MONGODB_URL unset); these two rows say nothing about a real MongoDB."
    )


def loaded_note() -> str:
    """A warning when other work loaded the machine during the run ('' otherwise)."""
    load = os.getloadavg()[1]
    cores = os.cpu_count() or 1
    if load <= cores:
        return ""
    return (
        f"**The machine was loaded by other work during this run** (5-minute load average "
        f"{load:.1f} on {cores} CPUs, {cpu_pressure() or 'no PSI'}): the processes measured "
        "here got a fraction of a CPU each, so the events/s and latencies are low and noisy. "
        "The CPU µs/event figures, and the ratios *by CPU*, are the ones to compare."
    )


def round_trip_text(results: Results) -> str:
    lines = [
        "Redis round trips per event, in process: `service.processing.Engine` on "
        "`RedisThredStore` + `RedisSessionStore` sharing one `RoundTrips` counter, routed by "
        "the node's `QueueDispatcher` (its session look-ups count) with a recording publisher "
        "instead of RabbitMQ, the node's Prometheus observer, records in memory; "
        f"{ROUND_TRIP_EVENTS} events of each kind after a warm-up. A *simple event* is `step`: "
        "a bound event (thredId set) that the live thred's current reaction matches, with one "
        "transform and one publish to `$thred`, no spawn, no role check, the thred neither "
        "created nor ended.",
        "",
        "| event | what it does | Redis requests/event | CPU µs/event (engine + redis-py) |",
        "| --- | --- | ---: | ---: |",
    ]
    what = {
        "a": "unbound; creates a thred of (a), publishes, ends it",
        "start": "unbound; creates a thred of (b), publishes",
        "step": "**simple event**: bound, matched, publishes to `$thred`",
        "finish": "bound, matched, publishes, ends the thred",
    }
    for kind, trips, cpu in results.round_trips:
        lines.append(f"| `{kind}` | {what[kind]} | {trips:.2f} | {cpu:,.0f} |")
    return "\n".join(lines)


def library_text(results: Results) -> str:
    rows = [f"| {what} | {cpu:,.0f} |" for what, cpu in results.library_costs]
    return "\n".join(
        [
            f"Client library costs, in the benchmark process ({LIBRARY_REQUESTS:,} requests "
            "each, uvloop): what one Redis request and one AMQP publish or delivery cost the "
            "process that makes it.",
            "",
            "| request | CPU µs/request |",
            "| --- | ---: |",
            *rows,
        ]
    )


def budget_text(results: Results) -> str:
    """The (a) event's CPU in one replica against what its client-library requests cost."""
    row = _find(results, processes=1, workload="(a)", window=max(WINDOWS))
    trips = next((trips for kind, trips, _ in results.round_trips if kind == "a"), None)
    costs = dict(results.library_costs)
    redis_cost = costs.get("redis-py asyncio: one request (PING), awaited")
    publish = costs.get("aio-pika: one persistent publish, confirmed")
    consume = costs.get("aio-pika: one delivery consumed and acked")
    if row is None or trips is None or redis_cost is None or publish is None or consume is None:
        return ""
    engine_us = 1e6 * row.engine_cpu / row.events if row.events else float("nan")
    redis_us = trips * redis_cost
    amqp_us = publish + consume
    return (
        f"Budget of an (a) event in one replica at window {max(WINDOWS)}: "
        f"{engine_us:,.0f} µs CPU, of which about {redis_us:,.0f} µs are its {trips:.0f} Redis "
        f"requests ({trips:.0f} x {redis_cost:,.0f} µs, the redis-py cost above) and about "
        f"{amqp_us:,.0f} µs its AMQP traffic (one delivery consumed and acked, one message "
        f"published with a confirm: {consume:,.0f} + {publish:,.0f} µs, the aio-pika costs "
        f"above, which are also the whole relay's); the remaining "
        f"{engine_us - redis_us - amqp_us:,.0f} µs "
        "are the engine's own processing (in process, without I/O, well under 0.1 ms per event: "
        "the `engine core` rows of the Engine section) and the event-loop tasks, futures and "
        "connection-pool bookkeeping around the I/O (see the profile below)."
    )


def _find(results: Results, *, processes: int, workload: str, window: int) -> Measured | None:
    return next(
        (
            row
            for row in results.rows
            if row.path.startswith("engine")
            and row.processes == processes
            and row.workload.startswith(workload)
            and row.window == window
        ),
        None,
    )


def targets_text(results: Results) -> str:
    lines = ["Targets of issue 7:", ""]
    lines += relay_targets(results)
    lines += scaling_targets(results)
    simple = next((trips for kind, trips, _ in results.round_trips if kind == "step"), None)
    if simple is not None:
        verdict = "met" if simple <= ROUND_TRIP_TARGET else "NOT met"
        lines.append(
            f"- Redis round trips per simple event <= {ROUND_TRIP_TARGET:.0f}: {simple:.2f}: "
            f"**{verdict}**."
        )
    for processes, rss in sorted(results.rss_mb.items()):
        verdict = "met" if rss <= RSS_TARGET_MB else "NOT met"
        lines.append(
            f"- Engine RSS <= {RSS_TARGET_MB:.0f} MB ({processes} process(es), peak VmHWM of "
            f"the largest after the run): {rss:.0f} MB: **{verdict}**."
        )
    for processes, figures in sorted(results.open_loop.items()):
        lines.append(
            f"- p99 latency at {100 * OPEN_LOOP_SHARE:.0f}% of the maximum (a) rate, "
            f"{processes} process(es) ({figures.workload.split(' at ')[1]}): "
            f"p50 {figures.percentile_ms(0.5):.1f} ms, p99 {figures.percentile_ms(0.99):.1f} ms "
            "(no target number given)."
        )
    return "\n".join(lines)


def relay_targets(results: Results) -> list[str]:
    lines = []
    for workload in ("(a)", "(b)", "(c) 1,000 live"):
        for window in WINDOWS:
            row = _find(results, processes=1, workload=workload, window=window)
            relay_row = results.relay.get(window)
            share = None if row is None else row.share_of(relay_row)
            if row is None or relay_row is None or share is None:
                continue
            lines.append(
                f"- One process >= {100 * RELAY_SHARE_TARGET:.0f}% of the relay, {workload} at "
                f"window {window}: {row.events_per_second:,.0f} / "
                f"{relay_row.events_per_second:,.0f} events/s = {100 * share[0]:.0f}%, by CPU "
                f"{100 * share[1]:.0f}%: **{_verdict(share, target=RELAY_SHARE_TARGET)}**."
            )
    return lines


def _verdict(share: tuple[float, float], *, target: float) -> str:
    """Met, or not, by events/s and by CPU per event (the latter is what load disturbs least)."""
    by_rate, by_cpu = (value >= target for value in share)
    if by_rate and by_cpu:
        return "met"
    if by_rate or by_cpu:
        return f"met by {'events/s' if by_rate else 'CPU'} only"
    return "NOT met"


def scaling_targets(results: Results) -> list[str]:
    lines = []
    for workload in ("(a)", "(b)", "(c) 1,000 live"):
        for window in WINDOWS:
            single = _find(results, processes=1, workload=workload, window=window)
            triple = _find(results, processes=3, workload=workload, window=window)
            share = None if triple is None else triple.share_of(single)
            if single is None or triple is None or share is None:
                continue
            lines.append(
                f"- Three processes >= {100 * SCALING_TARGET:.0f}% of one, {workload} at window "
                f"{window}: {triple.events_per_second:,.0f} / {single.events_per_second:,.0f} "
                f"events/s = {100 * share[0]:.0f}%, by CPU {100 * share[1]:.0f}%: "
                f"**{_verdict(share, target=SCALING_TARGET)}**."
            )
    for processes in PROCESS_COUNTS:
        low = _find(results, processes=processes, workload="(a)", window=min(WINDOWS))
        high = _find(results, processes=processes, workload="(a)", window=max(WINDOWS))
        if low is not None and high is not None:
            verdict = (
                "no collapse" if high.events_per_second >= low.events_per_second else "COLLAPSE"
            )
            lines.append(
                f"- {processes} process(es), (a) at window {max(WINDOWS)} vs {min(WINDOWS)}: "
                f"{high.events_per_second:,.0f} vs {low.events_per_second:,.0f} events/s: "
                f"**{verdict}**."
            )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["relay"]:
        relay_main(sys.argv[2:])
    else:
        print(run_backends_benchmarks())
