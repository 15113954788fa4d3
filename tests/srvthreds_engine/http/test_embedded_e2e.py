"""End to end: the real embedded app on a free 127.0.0.1 port, driven over HTTP with the demo."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from srvthreds_engine.apps.embedded import EmbeddedServer
from srvthreds_engine.apps.profiles import load_profile
from srvthreds_engine.apps.settings import Settings
from srvthreds_engine.core.events import Event
from tests.srvthreds_engine import polling

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_PROFILE = REPO_ROOT / "engine" / "profiles" / "demo"
DEADLINE_SECONDS = 10.0

ALERT = {
    "id": "alert-1",
    "type": "org.demo.alert",
    "source": {"id": "monitoring"},
    "data": {
        "title": "db-1 disk",
        "content": {
            "values": {"service": "db-1", "severity": "critical", "summary": "Disk 95% full"}
        },
    },
}


async def eventually(probe: Callable[[], Awaitable[Any]], *, what: str) -> Any:
    """Poll `probe` until it answers, within this module's deadline."""
    return await polling.eventually(probe, what=what, seconds=DEADLINE_SECONDS, every=0.02)


class Api:
    """A tiny client of the engine API."""

    def __init__(self, session: aiohttp.ClientSession, *, base: str) -> None:
        self.session = session
        self.base = base

    async def post_events(self, body: Any) -> tuple[int, Any]:
        async with self.session.post(f"{self.base}/events", json=body) as response:
            return response.status, await response.json()

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.base}{path}") as response:
            return response.status, await response.json()

    async def threds(self) -> Any:
        return (await self.get_json("/threds"))[1]["threds"]

    async def messages(self) -> Any:
        return (await self.get_json("/messages"))[1]["messages"]

    async def metrics(self) -> str:
        async with self.session.get(f"{self.base}/metrics") as response:
            return await response.text()

    async def metrics_show(self, sample: str) -> str:
        async def probe() -> str | None:
            text = await self.metrics()
            return text if sample in text else None

        return str(await eventually(probe, what=f"the metrics to show {sample!r}"))

    async def reaction_becomes(self, thred_id: str, reaction: str) -> Any:
        async def probe() -> Any:
            status, view = await self.get_json(f"/threds/{thred_id}")
            if status == 200 and view["currentReaction"]["reactionName"] == reaction:
                return view
            return None

        return await eventually(probe, what=f"thred {thred_id} to reach {reaction}")

    async def message_titled(self, prefix: str) -> Any:
        async def probe() -> Any:
            return next(
                (
                    m
                    for m in await self.messages()
                    if m["event"]["data"]["title"].startswith(prefix)
                ),
                None,
            )

        return await eventually(probe, what=f"a message titled {prefix!r}")


async def start_api(profile_dir: Path, *, settings: Settings) -> tuple[EmbeddedServer, Api]:
    server = EmbeddedServer(load_profile(profile_dir), settings=settings)
    await server.start(host="127.0.0.1", port=0)
    session = aiohttp.ClientSession()
    return server, Api(session, base=f"http://127.0.0.1:{server.port}")


@pytest.fixture
async def demo() -> AsyncIterator[tuple[EmbeddedServer, Api]]:
    server, api = await start_api(DEMO_PROFILE, settings=Settings())
    yield server, api
    await api.session.close()
    await server.stop(drain_seconds=5)


@pytest.fixture
def quick_expiry_profile(tmp_path: Path) -> Path:
    """The demo profile with a 200 ms acknowledgement window instead of 30 s."""
    profile = tmp_path / "demo"
    shutil.copytree(DEMO_PROFILE, profile)
    pattern_file = profile / "patterns" / "incident.json"
    pattern = json.loads(pattern_file.read_text())
    [waiting] = [r for r in pattern["reactions"] if r["name"] == "awaitingAck"]
    waiting["expiry"]["interval"] = 200
    pattern_file.write_text(json.dumps(pattern))
    return profile


async def open_incident(api: Api) -> str:
    status, body = await api.post_events(ALERT)
    assert (status, body) == (202, {"ids": ["alert-1"]})
    threds = await eventually(api.threds, what="the alert to start a thred")
    [thred] = threds
    assert thred["patternId"] == "incident"
    return str(thred["id"])


async def test_an_incident_is_paged_acknowledged_noted_and_resolved(demo) -> None:
    _, api = demo
    assert (await api.get_json("/ready"))[0] == 200
    thred_id = await open_incident(api)
    await api.reaction_becomes(thred_id, "awaitingAck")
    page = await api.message_titled("Incident: Disk 95% full")
    assert set(page["to"]) == {"alice", "bob", "pager"}
    assert page["event"]["data"]["content"]["values"] == {
        "service": "db-1",
        "severity": "critical",
        "action": "acknowledge",
    }

    # A manager is not on call: before escalation the acknowledgement does not match.
    ack = {"type": "org.demo.ack", "thredId": thred_id}
    await api.post_events([ack | {"id": "ack-carol", "source": {"id": "carol"}}])
    await api.post_events([ack | {"id": "ack-alice", "source": {"id": "alice"}}])
    await api.reaction_becomes(thred_id, "investigating")
    acknowledged = await api.message_titled("Acknowledged by alice")
    assert set(acknowledged["to"]) == {"alice", "bob", "monitoring"}

    note = {
        "id": "note-1",
        "type": "org.demo.note",
        "thredId": thred_id,
        "source": {"id": "bob"},
        "data": {"content": {"values": {"text": "looking at it"}}},
    }
    resolve = note | {
        "id": "resolve-1",
        "type": "org.demo.resolve",
        "source": {"id": "alice"},
        "data": {"content": {"values": {"resolution": "rotated logs"}}},
    }
    assert (await api.post_events([note, resolve]))[0] == 202
    await api.message_titled("Resolved by alice: rotated logs")
    assert (await api.get_json(f"/threds/{thred_id}"))[0] == 404
    assert await api.threds() == []
    titles = [m["event"]["data"]["title"] for m in await api.messages()]
    assert titles == [
        "Incident: Disk 95% full",
        "Acknowledged by alice",
        "Note from bob: looking at it",
        "Resolved by alice: rotated logs",
    ]

    # The answer goes out before the event counts as processed: wait for the last count.
    metrics = await api.metrics_show("srvthreds_event_processing_seconds_count 5.0")
    assert 'srvthreds_events_processed_total{result="matched"} 4.0' in metrics
    assert 'srvthreds_events_processed_total{result="no_match"} 1.0' in metrics
    assert "srvthreds_active_threds 0.0" in metrics
    assert 'srvthreds_queue_depth{queue="events"} 0.0' in metrics


async def test_an_event_for_a_closed_incident_gets_error_5203(demo) -> None:
    _, api = demo
    status, _ = await api.post_events(
        {"id": "late", "type": "org.demo.note", "thredId": "incident_gone", "source": {"id": "bob"}}
    )
    assert status == 202
    error = await api.message_titled("Failure processing Event late")
    assert error["to"] == ["bob"]
    assert error["event"]["data"]["content"]["error"]["code"] == 5203
    await api.metrics_show('srvthreds_events_processed_total{result="no_thred"} 1.0')


async def test_an_unacknowledged_incident_escalates_to_managers(quick_expiry_profile) -> None:
    server, api = await start_api(quick_expiry_profile, settings=Settings())
    try:
        thred_id = await open_incident(api)
        # No event arrives: the expiry timer alone moves the thred on.
        escalation = await api.message_titled("Escalated: Disk 95% full")
        assert escalation["to"] == ["carol"]
        await api.reaction_becomes(thred_id, "awaitingAckEscalated")
        await api.post_events(
            {"id": "ack-1", "type": "org.demo.ack", "thredId": thred_id, "source": {"id": "carol"}}
        )
        await api.reaction_becomes(thred_id, "investigating")
        await api.message_titled("Acknowledged by carol after escalation")
    finally:
        await api.session.close()
        await server.stop(drain_seconds=5)


async def test_the_token_guards_events_and_threds_but_not_probes() -> None:
    server, api = await start_api(DEMO_PROFILE, settings=Settings(api_token="demo-token"))
    try:
        assert (await api.post_events(ALERT))[0] == 401
        assert (await api.get_json("/threds"))[0] == 401
        assert (await api.get_json("/health"))[0] == 200
        api.session.headers["Authorization"] = "Bearer demo-token"
        assert (await api.post_events(ALERT))[0] == 202
        await eventually(api.threds, what="the alert to start a thred")
    finally:
        await api.session.close()
        await server.stop(drain_seconds=5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_embedded_serves_until_sigterm_and_drains(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import sys; from pathlib import Path; "
        "from srvthreds_engine.apps.embedded import run_embedded; "
        f"sys.exit(run_embedded(Path({str(DEMO_PROFILE)!r}), host='127.0.0.1', port={port}))"
    )
    log_file = tmp_path / "engine.log"
    environment = os.environ | {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    with log_file.open("w") as log_sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stderr=log_sink, env=environment, cwd=REPO_ROOT
        )
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, base=f"http://127.0.0.1:{port}")

            async def healthy() -> bool:
                try:
                    return (await api.get_json("/health"))[0] == 200
                except aiohttp.ClientConnectionError:
                    if process.returncode is not None:
                        pytest.fail(f"the engine exited early: {log_file.read_text()}")
                    return False

            await eventually(healthy, what="the engine process to answer /health")
            assert (await api.post_events(ALERT))[0] == 202
            await api.message_titled("Incident: Disk 95% full")
        process.send_signal(signal.SIGTERM)
        exit_status = await asyncio.wait_for(process.wait(), DEADLINE_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert exit_status == 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    messages = [record["message"] for record in records]
    assert "engine serving" in messages
    assert "message dispatched" in messages
    assert messages[-1] == "engine stopped"
    assert records[-1]["drained"] is True


def test_a_bad_environment_exits_2_naming_the_variable(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; "
        "from srvthreds_engine.apps.embedded import run_embedded; "
        f"sys.exit(run_embedded(Path({str(DEMO_PROFILE)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=os.environ | {"PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "PORT='not-a-port'" in result.stderr


async def test_concurrent_mode_processes_every_event() -> None:
    server, api = await start_api(DEMO_PROFILE, settings=Settings(synchronous_mode=False))
    try:
        assert server.runtime.synchronous is False
        alerts = [ALERT | {"id": f"alert-{n}"} for n in range(20)]
        assert (await api.post_events(alerts))[0] == 202

        async def twenty_threds() -> bool:
            return len(await api.threds()) == 20

        await eventually(twenty_threds, what="20 alerts to start 20 threds")
        await api.metrics_show('srvthreds_events_processed_total{result="matched"} 20.0')
    finally:
        await api.session.close()
        await server.stop(drain_seconds=5)


async def test_a_stopped_engine_refuses_events_with_503() -> None:
    server, api = await start_api(DEMO_PROFILE, settings=Settings(event_queue_size=2))
    try:
        # More events than the queue ever holds: 413 (no retry helps), not 503.
        status, body = await api.post_events([ALERT, ALERT, ALERT])
        assert status == 413
        assert body["maxEvents"] == 2
        assert await server.runtime.stop(drain_seconds=5) is True
        status, body = await api.post_events(ALERT)
        assert status == 503
        assert "not accepting events" in body["error"]
        ready_status, readiness = await api.get_json("/ready")
        assert (ready_status, readiness["notReady"]) == (503, ["queue"])
    finally:
        await api.session.close()
        await server.stop(drain_seconds=5)


async def test_a_taken_port_fails_start_cleanly(demo) -> None:
    first, _ = demo
    second = EmbeddedServer(load_profile(DEMO_PROFILE), settings=Settings())
    with pytest.raises(OSError, match="address already in use"):
        await second.start(host="127.0.0.1", port=first.port)
    assert second.runtime.readiness()["queue"] is False


async def test_probes_answer_while_a_backlog_is_processed(monkeypatch) -> None:
    server, api = await start_api(DEMO_PROFILE, settings=Settings())
    real_process = server.runtime.engine.process

    async def slow_process(event: Event) -> None:
        # 5 ms of CPU work that never yields, like the in-memory engine's.
        busy_until = time.perf_counter() + 0.005
        while time.perf_counter() < busy_until:
            pass
        await real_process(event)

    monkeypatch.setattr(server.runtime.engine, "process", slow_process)
    try:
        backlog = [ALERT | {"id": f"alert-{n}"} for n in range(50)]
        assert (await api.post_events(backlog))[0] == 202
        assert (await api.get_json("/health"))[0] == 200
        assert server.runtime.queued() > 25, "/health waited for the backlog"
    finally:
        await api.session.close()
        await server.stop(drain_seconds=10)


async def test_a_backlog_is_processed_and_each_event_latency_recorded() -> None:
    server, api = await start_api(DEMO_PROFILE, settings=Settings())
    try:
        backlog = [ALERT | {"id": f"alert-{n}"} for n in range(30)]
        assert (await api.post_events(backlog))[0] == 202
        await asyncio.wait_for(server.runtime.idle(), DEADLINE_SECONDS)
        await api.metrics_show("srvthreds_event_latency_seconds_count 30.0")
        await api.metrics_show("srvthreds_messages_dispatched_total 30.0")
    finally:
        await api.session.close()
        await server.stop(drain_seconds=5)
