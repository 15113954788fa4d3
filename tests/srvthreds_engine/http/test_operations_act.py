"""In the real `srvthreds-engine run` process, every operation acts or answers why it cannot.

Each test starts the command on a copy of the demo profile (which declares the participant
`admin` with the role `admin` in sessions.json), POSTs events to /events and reads the replies
from GET /messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.srvthreds_engine.http.test_embedded_e2e import (
    ALERT,
    DEADLINE_SECONDS,
    DEMO_PROFILE,
    REPO_ROOT,
    Api,
    eventually,
    free_port,
)

# Settings that the developer's environment might set and that would change what is tested.
CLEARED_VARIABLES = ("API_TOKEN", "HOST", "PORT", "PROFILE_DIR", "SYNCHRONOUS_MODE")


@dataclass
class EngineProcess:
    """A running `srvthreds-engine run` child process and a client of its API."""

    process: asyncio.subprocess.Process
    api: Api
    log_file: Path

    async def post(self, event: dict[str, Any]) -> None:
        status, body = await self.api.post_events(event)
        assert (status, body) == (202, {"ids": [event["id"]]})

    async def reply_to(self, event_id: str) -> dict[str, Any]:
        """The event answering `event_id` (a system reply or an error notification)."""

        async def probe() -> dict[str, Any] | None:
            return next(
                (m for m in await self.api.messages() if m["event"].get("re") == event_id), None
            )

        message: dict[str, Any] = await eventually(probe, what=f"the reply to {event_id}")
        return message

    async def values_of_reply_to(self, event_id: str) -> dict[str, Any]:
        message = await self.reply_to(event_id)
        assert message["event"]["data"]["title"] == (
            f"System Event -> Thred: SYSTEM -> Re: Event: {event_id}"
        ), message
        values: dict[str, Any] = message["event"]["data"]["content"]["values"]
        return values

    async def error_of_reply_to(self, event_id: str) -> dict[str, Any]:
        message = await self.reply_to(event_id)
        assert message["event"]["data"]["title"].startswith(
            f"Failure processing Event {event_id} : "
        ), message
        error: dict[str, Any] = message["event"]["data"]["content"]["error"]
        return error

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]


def control(
    event_id: str, kind: str = "sysControl", *, source: str = "admin", **values: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": f"org.wt.control.{kind}",
        "source": {"id": source},
        "thredId": "SYSTEM",
        "data": {"content": {"values": values}},
    }


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A copy of the demo profile that a test may edit."""
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_PROFILE, copy)
    return copy


@asynccontextmanager
async def running_engine(profile: Path, *, log_file: Path) -> AsyncIterator[EngineProcess]:
    """`srvthreds-engine run --profile <profile> --port <free>`, killed at the end if still up."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if key not in CLEARED_VARIABLES
    } | {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    command = ["-m", "srvthreds_engine", "run", "--profile", str(profile)]
    with log_file.open("w") as log_sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            stderr=log_sink,
            env=environment,
            cwd=REPO_ROOT,
        )
    try:
        async with aiohttp.ClientSession() as session:
            engine = EngineProcess(process, Api(session, base=f"http://127.0.0.1:{port}"), log_file)

            async def healthy() -> bool:
                try:
                    return (await engine.api.get_json("/health"))[0] == 200
                except aiohttp.ClientConnectionError:
                    if process.returncode is not None:
                        pytest.fail(f"the engine exited early, see its log in {log_file}")
                    return False

            await eventually(healthy, what="the engine process to answer /health")
            yield engine
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def engine(profile: Path, tmp_path: Path) -> AsyncIterator[EngineProcess]:
    async with running_engine(profile, log_file=tmp_path / "engine.log") as running:
        yield running


def edit_incident_titles(profile: Path, *, prefix: str) -> None:
    """Make the demo pattern title its page `<prefix><summary>` instead of `Incident: ...`."""
    pattern_file = profile / "patterns" / "incident.json"
    text = pattern_file.read_text()
    assert "'Incident: '" in text
    pattern_file.write_text(text.replace("'Incident: '", f"'{prefix}'"))


BROKEN_PATTERN = {
    "name": "Broken",
    "reactions": [
        {
            "name": "only",
            "condition": {"type": "filter", "xpr": "true", "transition": {"name": "nowhere"}},
        }
    ],
}
HELLO_PATTERN = {
    "name": "Hello",
    "id": "hello",
    "reactions": [
        {
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'org.demo.hello'",
                "transform": {"eventDataTemplate": {"title": "Hello back"}},
                "publish": {"to": "$thred"},
            }
        }
    ],
}


async def test_the_demo_profile_declares_an_admin_session(engine: EngineProcess) -> None:
    await engine.post(control("get-1", op="getThreds"))
    values = await engine.values_of_reply_to("get-1")
    assert values == {"status": "OK", "op": "getThreds", "threds": []}
    serving = next(r for r in engine.log_records() if r["message"] == "engine serving")
    assert serving["sessions"] == ["admin"]


async def test_sys_control_from_a_participant_without_the_admin_role_is_4101(
    engine: EngineProcess,
) -> None:
    await engine.post(control("get-1", op="getThreds", source="alice"))
    assert await engine.error_of_reply_to("get-1") == {
        "message": "Participant alice lacks required role: admin",
        "code": 4101,
    }


async def test_reload_all_patterns_makes_the_next_event_use_the_edited_file(
    engine: EngineProcess, profile: Path
) -> None:
    edit_incident_titles(profile, prefix="RELOADED: ")
    await engine.post(control("reload-1", op="reloadAllPatterns"))
    assert await engine.values_of_reply_to("reload-1") == {
        "status": "OK",
        "op": "reloadAllPatterns",
        "patternIds": ["incident"],
    }
    await engine.post(ALERT)
    page = await engine.api.message_titled("RELOADED: Disk 95% full")
    assert set(page["to"]) == {"alice", "bob", "pager"}
    await engine.api.metrics_show(
        'srvthreds_pattern_reloads_total{op="reloadAllPatterns",result="ok"} 1.0'
    )
    reloaded = next(r for r in engine.log_records() if r["message"] == "patterns reloaded")
    assert (reloaded["op"], reloaded["patterns"]) == ("reloadAllPatterns", ["incident"])


async def test_an_invalid_pattern_file_is_named_and_the_old_patterns_keep_working(
    engine: EngineProcess, profile: Path
) -> None:
    edit_incident_titles(profile, prefix="NEVER LOADED: ")
    broken = profile / "patterns" / "broken.json"
    broken.write_text(json.dumps(BROKEN_PATTERN))
    await engine.post(control("reload-1", op="reloadAllPatterns"))
    error = await engine.error_of_reply_to("reload-1")
    assert error == {
        "message": "reloadAllPatterns refused, the loaded patterns are unchanged: "
        f"{broken}: reactions[0].condition.transition.name: unknown transition target 'nowhere'",
        "code": 5000,
        "cause": {
            "file": str(broken),
            "jsonPath": "reactions[0].condition.transition.name",
            "problem": "unknown transition target 'nowhere'",
        },
    }
    await engine.post(ALERT)
    await engine.api.message_titled("Incident: Disk 95% full")
    await engine.api.metrics_show(
        'srvthreds_pattern_reloads_total{op="reloadAllPatterns",result="failed"} 1.0'
    )
    failed = next(r for r in engine.log_records() if r["message"] == "pattern reload failed")
    assert str(broken) in failed["reason"]


async def test_reload_pattern_loads_that_one_pattern_only(
    engine: EngineProcess, profile: Path
) -> None:
    edit_incident_titles(profile, prefix="NOT RELOADED: ")
    (profile / "patterns" / "hello.json").write_text(json.dumps(HELLO_PATTERN))
    await engine.post(control("reload-1", op="reloadPattern", patternId="hello"))
    assert await engine.values_of_reply_to("reload-1") == {
        "status": "OK",
        "op": "reloadPattern",
        "patternId": "hello",
    }
    await engine.post({"id": "hello-1", "type": "org.demo.hello", "source": {"id": "alice"}})
    await engine.api.message_titled("Hello back")
    await engine.post(ALERT)
    await engine.api.message_titled("Incident: Disk 95% full")


async def test_reload_pattern_of_an_id_the_folder_lacks_is_5201(engine: EngineProcess) -> None:
    await engine.post(control("reload-1", op="reloadPattern", patternId="nosuch"))
    assert await engine.error_of_reply_to("reload-1") == {
        "message": "Pattern nosuch not found in the pattern folder",
        "code": 5201,
    }
    await engine.api.metrics_show(
        'srvthreds_pattern_reloads_total{op="reloadPattern",result="failed"} 1.0'
    )


async def test_data_control_answers_an_error_naming_the_missing_backend(
    engine: EngineProcess,
) -> None:
    request = control("data-1", "dataControl")
    request["data"] = {"content": {"tasks": [{"op": "get", "params": {"type": "ThredRecord"}}]}}
    await engine.post(request)
    assert await engine.error_of_reply_to("data-1") == {
        "message": "dataControl needs a persistence backend (MongoDB); none is configured: "
        "the embedded mode and replay keep their records in memory only",
        "code": 5200,
    }


async def test_shutdown_from_admin_drains_and_exits_0_after_replying(engine: EngineProcess) -> None:
    await engine.post(ALERT)
    await engine.post(control("stop-1", op="shutdown", delay=0))
    exit_status = await asyncio.wait_for(engine.process.wait(), DEADLINE_SECONDS)
    assert exit_status == 0
    records = engine.log_records()
    messages = [record["message"] for record in records]
    requested = messages.index("shutdown requested")
    assert records[requested]["delayMs"] == 0
    replied = next(
        index
        for index, record in enumerate(records)
        if record["message"] == "message dispatched"
        and record.get("title") == "System Event -> Thred: SYSTEM -> Re: Event: stop-1"
    )
    assert requested < replied < messages.index("engine stopped") == len(messages) - 1
    assert records[-1]["drained"] is True
