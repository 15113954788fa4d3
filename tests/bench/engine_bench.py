"""The engine benchmark: events/s and p50/p99 latency through `replay` and the embedded server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from srvthreds_engine.apps.embedded import event_loop_factory
from srvthreds_engine.apps.replay import Replay, run_replay
from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.events import Event
from srvthreds_engine.core.patterns import Pattern, parse_pattern

COMMAND = "make bench  (python -m tests.bench engine)"
REPLAY_EVENTS_A = 5000
REPLAY_CHAINS_B = 1000
CONCURRENT_THREDS = 1000
OFFERED_RATE = 1000.0
OPEN_LOOP_SECONDS = 3.0
SERVER_THROUGHPUT_EVENTS = 5000
SERVER_BATCH = 50
SERVER_POSTERS = 4
COMPLETION_TIMEOUT = 60.0
# Imports first, so that the profile shows serving rather than start-up.
CPROFILED_MAIN = (
    "import cProfile, sys; import aiohttp.web, srvthreds_engine.apps.embedded; "
    "import srvthreds_engine.apps.cli; "
    "cProfile.run('srvthreds_engine.apps.cli.main(sys.argv[2:])', sys.argv[1])"
)
PROFILE_TOP = 15
REPO_ROOT = Path(__file__).resolve().parents[2]

# (a) one reaction that transforms and publishes: every event starts and ends a thred.
PATTERN_A: dict[str, Any] = {
    "name": "Bench A",
    "id": "bench_a",
    "reactions": [
        {
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'bench.a'",
                "transform": {
                    "eventDataTemplate": {
                        "title": "$xpr('a ' & $event.id)",
                        "content": {
                            "values": {
                                "n": "$xpr($valueNamed('n') + 1)",
                                "from": "$xpr($event.source.id)",
                            }
                        },
                    }
                },
                "publish": {"to": ["$bench", "sink"]},
            }
        }
    ],
}
# (b) and (c): three reactions; the second and third are driven by events bound to the thred.
PATTERN_B: dict[str, Any] = {
    "name": "Bench B",
    "id": "bench_b",
    "reactions": [
        {
            "name": "opened",
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'bench.start'",
                "onTrue": {"xpr": "$setLocal('n', $valueNamed('n'))"},
                "transform": {"eventDataTemplate": {"title": "$xpr('start ' & $event.id)"}},
                "publish": {"to": ["$bench"]},
            },
        },
        {
            "name": "working",
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'bench.step'",
                "onTrue": {"xpr": "$setLocal('n', $local('n') + 1)"},
                "transform": {
                    "eventDataTemplate": {
                        "title": "$xpr('step ' & $event.id)",
                        "content": {"values": {"n": "$xpr($local('n'))"}},
                    }
                },
                "publish": {"to": "$thred"},
            },
        },
        {
            "name": "closing",
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'bench.finish'",
                "transform": {"eventDataTemplate": {"title": "$xpr('finish ' & $event.id)"}},
                "publish": {"to": "$thred"},
            },
        },
    ],
}
SESSIONS: dict[str, Any] = {
    "groups": [
        {"name": "bench", "participants": [{"participantId": "p1"}, {"participantId": "p2"}]}
    ]
}
RESOLVER: dict[str, Any] = {
    "agents": [{"name": "Sink", "nodeType": "org.bench.sink", "nodeId": "sink", "configName": "s"}]
}


# --- events ----------------------------------------------------------------------------------


def event_a(number: int) -> dict[str, Any]:
    """An unbound event for pattern (a)."""
    return {
        "id": f"a{number}",
        "type": "bench.a",
        "source": {"id": "client"},
        "data": {"content": {"values": {"n": number}}},
    }


def event_b(kind: str, number: int, *, thred_id: str | None = None) -> dict[str, Any]:
    """A start (unbound), step or finish (bound) event for pattern (b)."""
    event: dict[str, Any] = {
        "id": f"{kind[0]}{number}",
        "type": f"bench.{kind}",
        "source": {"id": "client"},
        "data": {"content": {"values": {"n": number}}},
    }
    if thred_id is not None:
        event["thredId"] = thred_id
    return event


def title_of(event: dict[str, Any]) -> str:
    """The title of the message the benchmark patterns answer this event with."""
    prefix = {"bench.a": "a", "bench.start": "start", "bench.step": "step"}.get(event["type"])
    return f"{prefix or 'finish'} {event['id']}"


# --- figures ---------------------------------------------------------------------------------


def percentile_ms(latencies: list[float], fraction: float) -> float:
    """The `fraction` percentile of latencies in seconds, in ms (nan when there are none)."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Figures:
    """One measured run: how many events, in how long, and each event's latency."""

    path: str
    scenario: str
    events: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    note: str = ""
    cpu_seconds: float | None = None
    client_cpu_seconds: float | None = None
    client_lag: list[float] = field(default_factory=list)
    server_p99: float | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def cpu_text(self) -> str:
        if self.cpu_seconds is None or not self.events:
            return "n/a"
        per_event = self.cpu_seconds / self.events
        return f"{1e6 * per_event:,.0f} ({1 / per_event:,.0f}/s)"

    def client_text(self) -> str:
        if self.client_cpu_seconds is None or not self.events:
            return ""
        text = f"; load client: {1e6 * self.client_cpu_seconds / self.events:,.0f} µs CPU/event"
        if self.client_lag:
            lag = sorted(self.client_lag)[int(0.99 * (len(self.client_lag) - 1))]
            text += f", sends started up to {1000 * lag:.1f} ms late (p99)"
        return text

    def percentile_ms(self, fraction: float) -> float:
        return percentile_ms(self.latencies, fraction)

    def row(self) -> str:
        return (
            f"| {self.path} | {self.scenario} | {self.events} | {self.events_per_second:,.0f} | "
            f"{self.cpu_text()} | "
            f"{self._cell(0.5)} | {self._cell(0.99)} | {self._cell(1.0)} | "
            f"{self.note}{self.client_text()} |"
        )

    def _cell(self, fraction: float) -> str:
        """A latency cell; closed-loop runs measure no per-event latency, shown as a dash."""
        return f"{self.percentile_ms(fraction):.2f}" if self.latencies else "n/a"


def load_bench_patterns() -> list[Pattern]:
    return [
        parse_pattern(PATTERN_A, file="bench:a"),
        parse_pattern(PATTERN_B, file="bench:b"),
    ]


def new_replay() -> Replay:
    return Replay(
        load_bench_patterns(),
        sessions_model=SessionsModel.model_validate(SESSIONS),
        resolver_config=ResolverConfig.model_validate(RESOLVER),
    )


# --- replay ----------------------------------------------------------------------------------


class ReplayDriver:
    """Source and sink of `run_replay`: feeds lines that may use ids from earlier answers.

    Latency of a line = from handing it to replay (readline) to its output line being written,
    so the driver's own work is not counted.
    """

    def __init__(self, replay: Replay, script: Iterator[dict[str, Any]]) -> None:
        self.replay = replay
        self._script = script
        self._handed_at = 0.0
        self.latencies: list[float] = []

    def readline(self) -> str:
        line = next(self._script, None)
        if line is None:
            return ""
        text = json.dumps(line) + "\n"
        self._handed_at = time.perf_counter()
        return text

    def write(self, text: str) -> int:
        self.latencies.append(time.perf_counter() - self._handed_at)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def last_thred_id(self) -> str:
        return str(self.replay.dispatcher.messages[-1].event["thredId"])


def script_a(count: int) -> Iterator[dict[str, Any]]:
    for number in range(count):
        yield event_a(number)


def script_b(driver_ref: list[ReplayDriver], chains: int) -> Iterator[dict[str, Any]]:
    for number in range(chains):
        yield event_b("start", number)
        thred_id = driver_ref[0].last_thred_id()
        yield event_b("step", number, thred_id=thred_id)
        yield event_b("finish", number, thred_id=thred_id)


def script_c(driver_ref: list[ReplayDriver], threds: int) -> Iterator[dict[str, Any]]:
    thred_ids = []
    for number in range(threds):
        yield event_b("start", number)
        thred_ids.append(driver_ref[0].last_thred_id())
    for kind in ("step", "finish"):
        for number, thred_id in enumerate(thred_ids):
            yield event_b(kind, number, thred_id=thred_id)


async def replay_run(
    scenario: str, make_script: Callable[[list[ReplayDriver]], Iterator[dict[str, Any]]]
) -> Figures:
    replay = new_replay()
    holder: list[ReplayDriver] = []
    driver = ReplayDriver(replay, make_script(holder))
    holder.append(driver)
    cpu_before = time.process_time()
    await run_replay(replay, source=driver, sink=driver, source_name="bench")  # type: ignore[arg-type]
    return Figures(
        cpu_seconds=time.process_time() - cpu_before,
        path="replay",
        scenario=scenario,
        events=len(driver.latencies),
        seconds=sum(driver.latencies),
        latencies=driver.latencies,
        note="`run_replay` line by line; output line written and flushed",
    )


class CoreTimer:
    """Feeds events to a bare engine, timing each in wall-clock and CPU time."""

    def __init__(self) -> None:
        self.replay = new_replay()
        self.latencies: list[float] = []
        self.cpu_seconds = 0.0

    async def process(self, event: dict[str, Any]) -> str:
        """Process one event; the thred id of the last dispatched message."""
        parsed = Event.model_validate(event)
        cpu_started = time.process_time()
        started = time.perf_counter()
        await self.replay.engine.process(parsed)
        self.latencies.append(time.perf_counter() - started)
        self.cpu_seconds += time.process_time() - cpu_started
        return str(self.replay.dispatcher.messages[-1].event.get("thredId"))

    def figures(self, scenario: str) -> Figures:
        return Figures(
            path="engine core",
            scenario=scenario,
            events=len(self.latencies),
            seconds=sum(self.latencies),
            latencies=self.latencies,
            cpu_seconds=self.cpu_seconds,
            note="`Engine.process` only (no replay output)",
        )


async def core_run(scenario: str, events: list[dict[str, Any]]) -> Figures:
    """The same engine without replay's per-line output: `Engine.process` only."""
    timer = CoreTimer()
    for event in events:
        await timer.process(event)
    return timer.figures(scenario)


async def core_run_bound(scenario: str, *, threds: int, chained: bool) -> Figures:
    """Pattern (b) on the bare engine, learning thred ids from the dispatched messages."""
    timer = CoreTimer()
    ids: list[str] = []
    for number in range(threds):
        ids.append(await timer.process(event_b("start", number)))
        if chained:
            await timer.process(event_b("step", number, thred_id=ids[-1]))
            await timer.process(event_b("finish", number, thred_id=ids[-1]))
    if not chained:
        for kind in ("step", "finish"):
            for number, thred_id in enumerate(ids):
                await timer.process(event_b(kind, number, thred_id=thred_id))
    return timer.figures(scenario)


# --- embedded server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_profile(directory: Path) -> Path:
    (directory / "patterns").mkdir(parents=True)
    (directory / "patterns" / "a.json").write_text(json.dumps(PATTERN_A))
    (directory / "patterns" / "b.json").write_text(json.dumps(PATTERN_B))
    (directory / "sessions_model.json").write_text(json.dumps(SESSIONS))
    (directory / "resolver_config.json").write_text(json.dumps(RESOLVER))
    (directory / "engine.json").write_text(json.dumps({"synchronousMode": True}))
    return directory


class Completions:
    """Reads the engine's JSON log and notes when each answer message was dispatched."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[str, asyncio.Future[tuple[float, str]]] = {}

    def expect(self, title: str) -> asyncio.Future[tuple[float, str]]:
        return self._waiters.setdefault(title, self._loop.create_future())

    async def read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            if b"message dispatched" not in raw:
                continue
            arrived = self._loop.time()
            record = json.loads(raw)
            waiter = self.expect(str(record.get("title")))
            if not waiter.done():
                waiter.set_result((arrived, str(record.get("thredId"))))


class EngineServer:
    """`srvthreds-engine run` in a child process on a free 127.0.0.1 port."""

    def __init__(
        self, profile: Path, *, cprofile_to: Path | None = None, log_level: str = "INFO"
    ) -> None:
        self.profile = profile
        self.cprofile_to = cprofile_to
        self.log_level = log_level
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.completions: Completions | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EngineServer:
        environment = os.environ | {
            "LOG_FORMAT": "json",
            "LOG_LEVEL": self.log_level,
            # See `timer=` in server_runs: the profile is readable on asyncio's loop only.
            "EVENT_LOOP": "asyncio" if self.cprofile_to else os.environ.get("EVENT_LOOP", "auto"),
            "MESSAGES_KEPT": "0",
            "EVENT_QUEUE_SIZE": "100000",
            "API_TOKEN": "",
        }
        arguments = ["run", "--profile", str(self.profile), "--host", "127.0.0.1"]
        arguments += ["--port", str(self.port)]
        if self.cprofile_to is None:
            command = [str(Path(sys.executable).with_name("srvthreds-engine")), *arguments]
        else:
            # run_embedded returns after SIGTERM, so cProfile gets to write its statistics.
            command = [sys.executable, "-c", CPROFILED_MAIN, str(self.cprofile_to), *arguments]
        self.process = await asyncio.create_subprocess_exec(
            *command, stderr=asyncio.subprocess.PIPE, env=environment
        )
        assert self.process.stderr is not None
        self.completions = Completions()
        self._reader = asyncio.create_task(self.completions.read(self.process.stderr))
        await self._wait_ready()
        return self

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base}/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the engine on port {self.port} was not ready within 30 s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the engine process has used so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def __aexit__(self, *_: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class Poster:
    """Posts events and waits for their answer messages."""

    def __init__(self, server: EngineServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        assert server.completions is not None
        self.completions = server.completions
        self.failures = 0

    async def post(self, events: list[dict[str, Any]]) -> None:
        async with self.session.post(f"{self.server.base}/events", json=events) as response:
            if response.status != 202:
                self.failures += len(events)
            await response.read()

    async def send(self, event: dict[str, Any], *, since: float) -> tuple[float, str]:
        """POST one event; its latency from `since` to its answer, and its thred id."""
        done = self.completions.expect(title_of(event))
        await self.post([event])
        arrived, thred_id = await asyncio.wait_for(done, COMPLETION_TIMEOUT)
        return arrived - since, thred_id


CLIENT_LAG: list[float] = []


async def open_loop(
    count: int, *, rate: float, send: Callable[[int, float], Coroutine[Any, Any, float]]
) -> tuple[list[float], float]:
    """Start send(i, scheduled) at i/rate whatever the answers; latencies and the elapsed time.

    How late each send starts is kept in CLIENT_LAG: a loaded client shows up there.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[float]] = []
    CLIENT_LAG.clear()
    for number in range(count):
        scheduled = start + number / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        CLIENT_LAG.append(loop.time() - scheduled)
        tasks.append(asyncio.create_task(send(number, scheduled)))
    latencies = list(await asyncio.gather(*tasks))
    return latencies, loop.time() - start


# --- raw load client (a separate process) ----------------------------------------------------

LOAD_CONNECTIONS = 32
REQUEST_HEAD = (
    "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Content-Length: {length}\r\n\r\n"
)


def post_request(event: dict[str, Any]) -> bytes:
    """A pre-serialised keep-alive HTTP/1.1 request posting one event."""
    body = json.dumps(event, separators=(",", ":")).encode()
    return REQUEST_HEAD.format(length=len(body)).encode() + body


class _KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection; parses just enough HTTP/1.1 to find each response's end."""

    def __init__(self, on_response: Callable[[_KeepAliveConnection, int], None]) -> None:
        self._on_response = on_response
        self._buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].decode("latin-1").split("\r\n")
            length = next(
                int(line.split(":", 1)[1])
                for line in head[1:]
                if line.lower().startswith("content-length:")
            )
            end = head_end + 4 + length
            if len(self._buffer) < end:
                return
            self._buffer = self._buffer[end:]
            self._on_response(self, int(head[0].split()[1]))


class OpenLoopClient:
    """Sends pre-serialised requests at their scheduled times over a pool of connections.

    A request's latency runs from its scheduled time (not its send) to its response, so a
    request that waited for a free connection counts that wait (no coordinated omission).
    """

    def __init__(self, requests: list[bytes], *, rate: float) -> None:
        self._requests = requests
        self._rate = rate
        self._loop = asyncio.get_running_loop()
        self._idle: list[_KeepAliveConnection] = []
        self._waiting: collections.deque[int] = collections.deque()
        self._scheduled: dict[_KeepAliveConnection, float] = {}
        self._start = 0.0
        self.latencies: list[float] = []
        self.send_lag: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self._done = self._loop.create_future()

    async def connect(self, *, port: int, connections: int) -> None:
        for _ in range(connections):
            _, protocol = await self._loop.create_connection(
                lambda: _KeepAliveConnection(self._answered), "127.0.0.1", port
            )
            self._idle.append(protocol)

    async def run(self) -> float:
        """Offer every request at the rate; the elapsed seconds until the last response."""
        # perf_counter, not loop.time(): uvloop's clock has millisecond steps.
        self._start = time.perf_counter()
        for number in range(len(self._requests)):
            scheduled = self._start + number / self._rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_lag.append(time.perf_counter() - scheduled)
            if self._idle:
                self._send(self._idle.pop(), number)
            else:
                self._waiting.append(number)
        await self._done
        return time.perf_counter() - self._start

    def _send(self, connection: _KeepAliveConnection, number: int) -> None:
        self._scheduled[connection] = self._start + number / self._rate
        assert connection.transport is not None
        connection.transport.write(self._requests[number])

    def _answered(self, connection: _KeepAliveConnection, status: int) -> None:
        self.latencies.append(time.perf_counter() - self._scheduled.pop(connection))
        self.statuses[status] += 1
        if self._waiting:
            self._send(connection, self._waiting.popleft())
        else:
            self._idle.append(connection)
        if len(self.latencies) == len(self._requests) and not self._done.done():
            self._done.set_result(None)

    def close(self) -> None:
        for connection in [*self._idle, *self._scheduled]:
            if connection.transport is not None:
                connection.transport.close()


async def _load_client(port: int, *, rate: float, events: list[Any]) -> dict[str, Any]:
    requests = [post_request(event) for event in events]
    client = OpenLoopClient(requests, rate=rate)
    await client.connect(port=port, connections=LOAD_CONNECTIONS)
    cpu_before = time.process_time()
    try:
        elapsed = await asyncio.wait_for(client.run(), COMPLETION_TIMEOUT)
    finally:
        client.close()
    return {
        "latencies": client.latencies,
        "sendLag": client.send_lag,
        "statuses": {str(status): n for status, n in client.statuses.items()},
        "cpuSeconds": time.process_time() - cpu_before,
        "elapsed": elapsed,
    }


def load_client_main(argv: list[str]) -> None:
    """`python -m tests.bench.engine_bench load PORT RATE OUTPUT < events.json`.

    Writes the figures as JSON to OUTPUT (a file, so that nothing else on stdout can mix in).
    """
    port, rate, output = int(argv[0]), float(argv[1]), Path(argv[2])
    events = json.load(sys.stdin)
    # The engine's own choice of loop: the cheaper the client, the less it disturbs the server.
    with asyncio.Runner(loop_factory=event_loop_factory("auto")) as runner:
        figures = runner.run(_load_client(port, rate=rate, events=events))
    output.write_text(json.dumps(figures))


async def warm_up(poster: Poster) -> None:
    loop = asyncio.get_running_loop()
    for number in range(200):  # imports, caches and the connection pool
        await poster.send(event_a(-1 - number), since=loop.time())


async def server_histogram(poster: Poster) -> dict[float, float]:
    """The engine's `srvthreds_event_latency_seconds` cumulative bucket counts, by bound."""
    async with poster.session.get(f"{poster.server.base}/metrics") as response:
        text = await response.text()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "srvthreds_event_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], fraction: float
) -> float:
    """The `fraction` quantile of the observations between two scrapes, in seconds.

    Interpolated linearly inside the bucket, as Prometheus' histogram_quantile does.
    """
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = fraction * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + share * (bound - lower_bound)
        lower_bound, lower_count = bound, count
    return lower_bound


async def wait_processed(poster: Poster, *, total: float) -> float:
    """Wait until the engine has processed `total` events since start; when it had, loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COMPLETION_TIMEOUT
    while loop.time() < deadline:
        if (await server_histogram(poster)).get(float("inf"), 0.0) >= total:
            return loop.time()
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the engine did not process {total:.0f} events in {COMPLETION_TIMEOUT} s")


async def warm_up_a(poster: Poster) -> None:
    """Imports, caches and the connection pool: 200 events, then wait until processed."""
    for number in range(200):
        await poster.post([event_a(-1 - number)])
    await wait_processed(poster, total=200)


async def server_a_saturated(poster: Poster) -> Figures:
    loop = asyncio.get_running_loop()
    events = [event_a(number) for number in range(SERVER_THROUGHPUT_EVENTS)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for i in range(0, len(events), SERVER_BATCH):
        queue.put_nowait(events[i : i + SERVER_BATCH])

    async def post_batches() -> None:
        while not queue.empty():
            await poster.post(queue.get_nowait())

    before = (await server_histogram(poster)).get(float("inf"), 0.0)
    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    started = loop.time()
    await asyncio.gather(*(post_batches() for _ in range(SERVER_POSTERS)))
    finished = await wait_processed(poster, total=before + len(events))
    return Figures(
        "embedded server",
        "(a) one reaction, saturated",
        events=len(events),
        seconds=finished - started,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        note=f"closed loop: batches of {SERVER_BATCH} events per POST, {SERVER_POSTERS} "
        "posters; completion seen by polling /metrics every 10 ms; no latency",
    )


async def run_load_client(poster: Poster, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The open-loop load client in its own process (so its CPU is not the engine's)."""
    output = poster.server.profile.parent / "load-client.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.engine_bench",
        "load",
        str(poster.server.port),
        str(OFFERED_RATE),
        str(output),
        stdin=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    await asyncio.wait_for(process.communicate(json.dumps(events).encode()), COMPLETION_TIMEOUT * 2)
    if process.returncode != 0:
        raise RuntimeError(f"the load client failed with exit status {process.returncode}")
    figures: dict[str, Any] = json.loads(await asyncio.to_thread(output.read_text))
    return figures


async def offered_run(poster: Poster, events: list[dict[str, Any]], *, scenario: str) -> Figures:
    """Offer `events` at OFFERED_RATE, one per POST, from the raw client in another process."""
    histogram_before = await server_histogram(poster)
    processed_before = histogram_before.get(float("inf"), 0.0)
    cpu_before = poster.server.cpu_seconds()
    load_before = machine_state()
    load = await run_load_client(poster, events)
    await wait_processed(poster, total=processed_before + len(events))
    histogram_after = await server_histogram(poster)
    server_p99 = histogram_quantile(histogram_before, histogram_after, 0.99)
    server_p50 = histogram_quantile(histogram_before, histogram_after, 0.5)
    refused = len(events) - int(load["statuses"].get("202", 0))
    return Figures(
        "embedded server",
        scenario,
        events=len(events),
        seconds=float(load["elapsed"]),
        latencies=[float(latency) for latency in load["latencies"]],
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=float(load["cpuSeconds"]),
        client_lag=[float(lag) for lag in load["sendLag"]],
        server_p99=server_p99,
        note=f"open loop, one event per POST, raw keep-alive client in its own process "
        f"({LOAD_CONNECTIONS} connections); latency = scheduled send to HTTP 202 received. "
        f"Server histogram, POST accepted to processed (messages dispatched): "
        f"p50 {1000 * server_p50:.2f} ms, p99 {1000 * server_p99:.2f} ms; "
        f"1-min load average {load_before} before, {machine_state()} after"
        + (f"; {refused} refused" if refused else ""),
    )


async def server_a_offered(poster: Poster, *, first: int = SERVER_THROUGHPUT_EVENTS) -> Figures:
    """(a) at OFFERED_RATE for OPEN_LOOP_SECONDS."""
    count = int(OFFERED_RATE * OPEN_LOOP_SECONDS)
    events = [event_a(first + number) for number in range(count)]
    scenario = f"(a) one reaction, {OFFERED_RATE:,.0f} events/s offered"
    return await offered_run(poster, events, scenario=scenario)


async def server_a(poster: Poster) -> list[Figures]:
    await warm_up_a(poster)
    return [await server_a_saturated(poster), await server_a_offered(poster)]


async def server_b(poster: Poster) -> list[Figures]:
    """Chains start → step → finish, each step sent when the previous answer arrived."""
    await warm_up(poster)
    loop = asyncio.get_running_loop()
    chain_rate = OFFERED_RATE / 3
    chains = int(chain_rate * OPEN_LOOP_SECONDS)
    latencies: list[float] = []

    async def chain(number: int, scheduled: float) -> float:
        latency, thred_id = await poster.send(event_b("start", number), since=scheduled)
        latencies.append(latency)
        for kind in ("step", "finish"):
            sent = loop.time()
            latency, _ = await poster.send(event_b(kind, number, thred_id=thred_id), since=sent)
            latencies.append(latency)
        return 0.0

    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    _, elapsed = await open_loop(chains, rate=chain_rate, send=chain)
    return [
        Figures(
            "embedded server",
            f"(b) three reactions, bound events, ~{OFFERED_RATE:,.0f} events/s offered",
            events=len(latencies),
            seconds=elapsed,
            latencies=latencies,
            cpu_seconds=poster.server.cpu_seconds() - cpu_before,
            client_cpu_seconds=time.process_time() - client_before,
            client_lag=list(CLIENT_LAG),
            note=f"{chains} chains started at {chain_rate:.0f}/s; each bound event POSTed "
            "when the previous answer arrived; latency = POST to answer seen in the log: the "
            "server runs at LOG_LEVEL=DEBUG so that every message is logged, which costs it "
            "CPU; aiohttp client in the benchmark process",
        )
    ]


async def server_c(poster: Poster) -> list[Figures]:
    """1,000 threds created in batches, then their bound events offered at OFFERED_RATE."""
    await warm_up_a(poster)
    loop = asyncio.get_running_loop()
    starts = [event_b("start", 100_000 + n) for n in range(CONCURRENT_THREDS)]
    processed_before = (await server_histogram(poster)).get(float("inf"), 0.0)
    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    started = loop.time()
    for i in range(0, len(starts), SERVER_BATCH):
        await poster.post(starts[i : i + SERVER_BATCH])
    finished = await wait_processed(poster, total=processed_before + len(starts))
    creation = Figures(
        "embedded server",
        f"(c) creating {CONCURRENT_THREDS:,} threds",
        events=len(starts),
        seconds=finished - started,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        note=f"closed loop: batches of {SERVER_BATCH}; completion seen by polling /metrics",
    )
    async with poster.session.get(f"{poster.server.base}/threds?status=active") as response:
        thred_ids = [view["id"] for view in (await response.json())["threds"]]
    if len(thred_ids) != CONCURRENT_THREDS:
        raise RuntimeError(f"expected {CONCURRENT_THREDS} active threds, found {len(thred_ids)}")
    bound = [
        event_b(kind, 100_000 + n, thred_id=thred_id)
        for kind in ("step", "finish")
        for n, thred_id in enumerate(thred_ids)
    ]
    scenario = f"(c) {CONCURRENT_THREDS:,} live threds, {OFFERED_RATE:,.0f} bound events/s offered"
    offered = await offered_run(poster, bound, scenario=scenario)
    offered.note = "round robin over the threds (step, then finish); " + offered.note
    return [creation, offered]


async def with_server(
    profile: Path,
    run: Callable[[Poster], Coroutine[Any, Any, list[Figures]]],
    *,
    cprofile_to: Path | None = None,
    log_level: str = "INFO",
) -> list[Figures]:
    async with (
        EngineServer(profile, cprofile_to=cprofile_to, log_level=log_level) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session,
    ):
        poster = Poster(server, session)
        figures = await run(poster)
        if poster.failures:
            figures[-1].note += f"; {poster.failures} events refused"
    return figures


async def server_runs(scratch: Path) -> tuple[list[Figures], str]:
    """Every embedded-server scenario, then one more (a) run under cProfile for the profile."""
    profile = write_profile(scratch / "profile")
    figures: list[Figures] = []
    figures += await with_server(profile, server_a)
    # (b) learns each chain's thred id from the DEBUG "message dispatched" log lines.
    figures += await with_server(profile, server_b, log_level="DEBUG")
    figures += await with_server(profile, server_c)
    stats_file = scratch / "server.pstats"

    async def profiled(poster: Poster) -> list[Figures]:
        await warm_up_a(poster)
        return [await server_a_offered(poster, first=0)]

    [profiled_run] = await with_server(profile, profiled, cprofile_to=stats_file)
    stats = pstats.Stats(str(stats_file), stream=io.StringIO())
    text = profile_tables(
        stats,
        events=profiled_run.events + 200,
        title="cProfile of the whole engine process (HTTP, queue, engine, logging) while it "
        f"served {profiled_run.events + 200:,} one-event POSTs of pattern (a) at "
        f"{OFFERED_RATE:,.0f} events/s",
        focus=("srvthreds_engine", "aiohttp", "json", "logging"),
        timer="wall-clock timer; on asyncio's loop, not uvloop, so that idle time shows as "
        "`epoll.poll` instead of being charged to the Python frame below uvloop's C loop",
    )
    return figures, text


# --- profile ---------------------------------------------------------------------------------


def profile_core() -> str:
    """Where the time of pattern (a) goes: cProfile of `Engine.process` over 2,000 events."""
    replay = new_replay()
    events = [Event.model_validate(event_a(n)) for n in range(2000)]

    async def process_all() -> None:
        for event in events:
            await replay.engine.process(event)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(process_all())
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    return profile_tables(
        stats,
        events=len(events),
        title="cProfile of `Engine.process` for 2,000 events of pattern (a), in process",
        focus=("srvthreds_engine", "jsonata"),
    )


def profile_tables(
    stats: pstats.Stats,
    *,
    events: int,
    title: str,
    focus: tuple[str, ...],
    timer: str = "wall-clock timer",
) -> str:
    """Top functions by own time, and the `focus` modules' functions by cumulative time."""
    total = stats.total_tt  # type: ignore[attr-defined]
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:PROFILE_TOP]
    own_rows = [
        f"| `{name}` ({_short(filename)}:{line}) | {calls:,} | {1e6 * own / events:.1f} | "
        f"{1e6 * cumulative / events:.1f} | {100 * own / total:.1f}% |"
        for (filename, line, name), (_, calls, own, cumulative, _) in by_own
    ]
    focused = [item for item in entries.items() if any(mark in item[0][0] for mark in focus)]
    by_cumulative = sorted(focused, key=lambda item: item[1][3], reverse=True)[:PROFILE_TOP]
    cumulative_rows = [
        f"| `{name}` ({_short(filename)}:{line}) | {1e6 * cumulative / events:.1f} |"
        for (filename, line, name), (_, _, _, cumulative, _) in by_cumulative
    ]
    return "\n".join(
        [
            f"{title}: {1e6 * total / events:.0f} µs per event under the profiler "
            f"({timer}, profiler overhead included). "
            "Top functions by own time (µs per event):",
            "",
            "| function | calls | own µs/event | cumulative µs/event | share of own time |",
            "| --- | ---: | ---: | ---: | ---: |",
            *own_rows,
            "",
            f"Functions of {', '.join(focus)} by cumulative time (µs per event):",
            "",
            "| function | cumulative µs/event |",
            "| --- | ---: |",
            *cumulative_rows,
        ]
    )


def _short(filename: str) -> str:
    for marker in ("srvthreds_engine/", "site-packages/", "python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- report ----------------------------------------------------------------------------------


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared with other jobs)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_state() -> str:
    """The 1-minute load average, with the CPU pressure when the kernel reports it."""
    pressure = cpu_pressure()
    return f"{os.getloadavg()[0]:.2f}" + (f" ({pressure})" if pressure else "")


def cpu_pressure() -> str:
    """Share of the last 10 s some runnable task waited for a CPU (Linux PSI), or ''."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return f"CPU pressure {float(some.split()[1].split('=')[1]):.0f}%"
    return ""


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"Machine: {os.cpu_count()} CPUs (`nproc`), {model}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), load average before the run {load}, "
        f"{cpu_pressure() or 'no PSI'} "
        "(the machine is shared)."
    )


async def replay_figures() -> list[Figures]:
    return [
        await replay_run(
            "(a) one reaction, transform + publish", lambda _: script_a(REPLAY_EVENTS_A)
        ),
        await replay_run(
            "(b) three reactions, bound events",
            lambda holder: script_b(holder, REPLAY_CHAINS_B),
        ),
        await replay_run(
            f"(c) {CONCURRENT_THREDS:,} live threds",
            lambda holder: script_c(holder, CONCURRENT_THREDS),
        ),
        await core_run(
            "(a) one reaction, transform + publish",
            [event_a(n) for n in range(REPLAY_EVENTS_A)],
        ),
        await core_run_bound(
            "(b) three reactions, bound events", threds=REPLAY_CHAINS_B, chained=True
        ),
        await core_run_bound(
            f"(c) {CONCURRENT_THREDS:,} live threds", threds=CONCURRENT_THREDS, chained=False
        ),
    ]


def run_engine_benchmarks() -> str:
    """Run every engine benchmark and return the BENCHMARKS.md section."""
    header = machine()
    started = time.monotonic()
    figures = asyncio.run(replay_figures())
    server_profile = ""
    try:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as scratch:
            server_figures, server_profile = asyncio.run(server_runs(Path(scratch)))
        figures += server_figures
        server_error = ""
    except Exception as exc:
        # The report says what failed rather than losing the replay figures.
        server_error = f"\n**The embedded-server runs failed:** `{exc!r}`\n"
    profile = profile_core()
    targets = _targets(figures)
    return "\n".join(
        [
            "## Engine",
            "",
            header,
            "",
            f"Command: `{COMMAND}`; took {time.monotonic() - started:.0f} s; load average "
            f"(1, 5, 15 min) at the end {load_average()}, {cpu_pressure() or 'no PSI'}. "
            "Latencies are per event. events/s: for replay and the core, events divided by "
            "the wall time spent processing them (the driver's own work excluded); for the "
            "server, events divided by the elapsed time. CPU µs/event: CPU time of the "
            "benchmark process (replay, core) or of the engine process (server) per event; on "
            "a shared machine it is the figure other load disturbs least.",
            "",
            "| path | scenario | events | events/s | CPU µs/event (events/CPU s) "
            "| p50 ms | p99 ms | max ms | how |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *(figure.row() for figure in figures),
            server_error,
            targets,
            "",
            "### Where the time goes",
            "",
            profile,
            "",
            server_profile,
            "",
        ]
    )


def _targets(figures: list[Figures]) -> str:
    def find(path: str, prefix: str) -> Figures | None:
        return next((f for f in figures if f.path == path and f.scenario.startswith(prefix)), None)

    replay_a = find("replay", "(a)")
    offered_a = find("embedded server", "(a) one reaction, 1,000")
    lines = ["Targets of issue 4:", ""]
    if replay_a is not None:
        verdict = "met" if replay_a.events_per_second >= 10_000 else "NOT met"
        lines.append(
            f"- >= 10,000 events/s for (a) through replay: "
            f"{replay_a.events_per_second:,.0f} events/s: **{verdict}**."
        )
    if offered_a is not None:
        p99 = offered_a.percentile_ms(0.99)
        server_p99 = 1000 * (offered_a.server_p99 or float("nan"))
        verdict = "met" if p99 < 5 and server_p99 < 5 else "NOT met"
        lines.append(
            f"- p99 < 5 ms at 1,000 events/s offered to the embedded server: "
            f"p99 {p99:.2f} ms from scheduled send to HTTP 202, p99 {server_p99:.2f} ms from "
            f"POST accepted to processed (server histogram): **{verdict}**."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        load_client_main(sys.argv[2:])
    else:
        print(run_engine_benchmarks())
