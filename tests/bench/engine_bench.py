"""The engine benchmark: events/s and p50/p99 latency through `replay` and the embedded server."""

from __future__ import annotations

import asyncio
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
from typing import Any

import aiohttp

from srvthreds_engine.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.events import Event
from srvthreds_engine.patterns import Pattern, parse_pattern
from srvthreds_engine.replay import Replay, run_replay

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
    "import cProfile, sys; import aiohttp.web, srvthreds_engine.app, srvthreds_engine.cli; "
    "cProfile.run('srvthreds_engine.cli.main(sys.argv[2:])', sys.argv[1])"
)
PROFILE_TOP = 15

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
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def row(self) -> str:
        return (
            f"| {self.path} | {self.scenario} | {self.events} | {self.events_per_second:,.0f} | "
            f"{self.cpu_text()} | "
            f"{self.percentile_ms(0.5):.2f} | {self.percentile_ms(0.99):.2f} | "
            f"{self.percentile_ms(1.0):.2f} | {self.note}{self.client_text()} |"
        )


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

    def __init__(self, profile: Path, *, cprofile_to: Path | None = None) -> None:
        self.profile = profile
        self.cprofile_to = cprofile_to
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.completions: Completions | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EngineServer:
        environment = os.environ | {
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
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


async def warm_up(poster: Poster) -> None:
    loop = asyncio.get_running_loop()
    for number in range(200):  # imports, caches and the connection pool
        await poster.send(event_a(-1 - number), since=loop.time())


async def server_a_saturated(poster: Poster) -> Figures:
    loop = asyncio.get_running_loop()
    events = [event_a(number) for number in range(SERVER_THROUGHPUT_EVENTS)]
    waiters = [poster.completions.expect(title_of(event)) for event in events]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for i in range(0, len(events), SERVER_BATCH):
        queue.put_nowait(events[i : i + SERVER_BATCH])

    async def post_batches() -> None:
        while not queue.empty():
            await poster.post(queue.get_nowait())

    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    started = loop.time()
    await asyncio.gather(*(post_batches() for _ in range(SERVER_POSTERS)))
    done = await asyncio.wait_for(asyncio.gather(*waiters), COMPLETION_TIMEOUT)
    return Figures(
        "embedded server",
        "(a) one reaction, saturated",
        events=len(events),
        seconds=max(arrived for arrived, _ in done) - started,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        note=f"closed loop: batches of {SERVER_BATCH} events per POST, {SERVER_POSTERS} "
        "posters; no latency",
    )


async def server_a_offered(poster: Poster, *, first: int = SERVER_THROUGHPUT_EVENTS) -> Figures:
    async def send(number: int, scheduled: float) -> float:
        return (await poster.send(event_a(first + number), since=scheduled))[0]

    count = int(OFFERED_RATE * OPEN_LOOP_SECONDS)
    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    latencies, elapsed = await open_loop(count, rate=OFFERED_RATE, send=send)
    return Figures(
        "embedded server",
        f"(a) one reaction, {OFFERED_RATE:,.0f} events/s offered",
        events=count,
        seconds=elapsed,
        latencies=latencies,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        client_lag=list(CLIENT_LAG),
        note="open loop, one event per POST; latency = scheduled send to answer dispatched",
    )


async def server_a(poster: Poster) -> list[Figures]:
    await warm_up(poster)
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
            "when the previous answer arrived; latency = POST to answer",
        )
    ]


async def server_c(poster: Poster) -> list[Figures]:
    await warm_up(poster)
    loop = asyncio.get_running_loop()
    starts = [event_b("start", 100_000 + n) for n in range(CONCURRENT_THREDS)]
    waiters = [poster.completions.expect(title_of(event)) for event in starts]
    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    started = loop.time()
    for i in range(0, len(starts), SERVER_BATCH):
        await poster.post(starts[i : i + SERVER_BATCH])
    created = await asyncio.wait_for(asyncio.gather(*waiters), COMPLETION_TIMEOUT)
    creation = Figures(
        "embedded server",
        f"(c) creating {CONCURRENT_THREDS:,} threds",
        events=len(starts),
        seconds=max(arrived for arrived, _ in created) - started,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        note=f"closed loop: batches of {SERVER_BATCH}",
    )
    thred_ids = [thred_id for _, thred_id in created]
    bound = [
        event_b(kind, 100_000 + n, thred_id=thred_id)
        for kind in ("step", "finish")
        for n, thred_id in enumerate(thred_ids)
    ]

    async def send(number: int, scheduled: float) -> float:
        return (await poster.send(bound[number], since=scheduled))[0]

    cpu_before, client_before = poster.server.cpu_seconds(), time.process_time()
    latencies, elapsed = await open_loop(len(bound), rate=OFFERED_RATE, send=send)
    offered = Figures(
        "embedded server",
        f"(c) {CONCURRENT_THREDS:,} live threds, {OFFERED_RATE:,.0f} bound events/s offered",
        events=len(bound),
        seconds=elapsed,
        latencies=latencies,
        cpu_seconds=poster.server.cpu_seconds() - cpu_before,
        client_cpu_seconds=time.process_time() - client_before,
        client_lag=list(CLIENT_LAG),
        note="open loop, round robin over the threds (step, then finish)",
    )
    return [creation, offered]


async def with_server(
    profile: Path,
    run: Callable[[Poster], Coroutine[Any, Any, list[Figures]]],
    *,
    cprofile_to: Path | None = None,
) -> list[Figures]:
    async with (
        EngineServer(profile, cprofile_to=cprofile_to) as server,
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
    for run in (server_a, server_b, server_c):
        figures += await with_server(profile, run)
    stats_file = scratch / "server.pstats"

    async def profiled(poster: Poster) -> list[Figures]:
        await warm_up(poster)
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


def profile_tables(stats: pstats.Stats, *, events: int, title: str, focus: tuple[str, ...]) -> str:
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
            "(wall-clock timer, profiler overhead included). "
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
        f"({platform.python_implementation()}), load average before the run {load} "
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
            f"Command: `{COMMAND}`; took {time.monotonic() - started:.0f} s. "
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
        verdict = "met" if p99 < 5 else "NOT met"
        lines.append(
            f"- p99 < 5 ms at 1,000 events/s offered to the embedded server: "
            f"p99 {p99:.2f} ms: **{verdict}**."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run_engine_benchmarks())
