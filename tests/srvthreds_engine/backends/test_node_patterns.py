"""Engine-node patterns: a changed folder swapped in live; a reload reaching every replica."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.srvthreds_engine.backends.conftest import Report
from tests.srvthreds_engine.backends.nodes import (
    CLIENT,
    NODE_ID,
    Backends,
    EngineGroup,
    connect_client,
    declare_inbox,
    engine_group,
    publish_raw,
    write_profile,
)
from tests.srvthreds_engine.polling import eventually

pytestmark = pytest.mark.backends

ADMIN = "admin"
WAIT_SECONDS = 60.0


def greeting_pattern(title: str) -> dict[str, Any]:
    """A one-reaction pattern that answers `greet` events to the client."""
    return {
        "name": "greeting",
        "reactions": [
            {
                "condition": {
                    "type": "filter",
                    "xpr": "$event.type = 'greet'",
                    "transform": {"eventDataTemplate": {"title": title}},
                    "publish": {"to": [CLIENT]},
                }
            }
        ],
    }


def profile_with_admin(root: Path) -> Path:
    profile = write_profile(root, steps=1)
    sessions = [
        {"participantId": CLIENT, "nodeId": NODE_ID, "roles": []},
        {"participantId": ADMIN, "nodeId": NODE_ID, "roles": ["admin"]},
    ]
    (profile / "sessions.json").write_text(json.dumps(sessions))
    return profile


async def pattern_load(group: EngineGroup, index: int) -> dict[str, Any]:
    _, body = await group.api.get(group.engines[index], "/ready")
    return dict(body["patternLoad"]) if isinstance(body, dict) else {}


async def greet_answers(url: str, *, event_id: str) -> str:
    """Send a `greet` event to the shared queue and return the title of the answer."""
    connection, channel = await connect_client(url)
    try:
        inbox = await declare_inbox(channel)
        await inbox.purge()
        event = {"id": event_id, "type": "greet", "source": {"id": CLIENT}}
        await publish_raw(channel, json.dumps(event).encode(), message_id=event_id)

        async def answer() -> str | None:
            message = await inbox.get(fail=False, no_ack=True)
            return (
                None if message is None else str(json.loads(message.body)["event"]["data"]["title"])
            )

        return str(await eventually(answer, what=f"the answer to {event_id}", seconds=WAIT_SECONDS))
    finally:
        await connection.close()


async def test_a_changed_pattern_folder_is_swapped_in_and_a_broken_one_keeps_the_old_set(
    tmp_path: Path,
    shared_backends: Backends,
    report: Report,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATTERN_POLL_SECONDS", "0.5")
    profile = profile_with_admin(tmp_path / "profile")
    folder = profile / "patterns"
    async with engine_group(
        2, profile=profile, backends=shared_backends, log_dir=tmp_path, report=report
    ) as group:
        (folder / "greeting.json").write_text(json.dumps(greeting_pattern("hello v1")))

        async def both_loaded() -> bool:
            loads = [await pattern_load(group, index) for index in (0, 1)]
            return all("greeting" in load.get("patterns", []) for load in loads)

        await eventually(both_loaded, what="both engines to load greeting.json", seconds=30)
        assert await greet_answers(shared_backends.rabbitmq_url, event_id="g1") == "hello v1"

        (folder / "greeting.json").write_text('{"name": "greeting", "reactions": [')

        async def both_refused() -> bool:
            loads = [await pattern_load(group, index) for index in (0, 1)]
            return all(load.get("ok") is False for load in loads)

        await eventually(both_refused, what="both engines to refuse the broken file", seconds=30)
        load = await pattern_load(group, 0)
        assert "greeting.json" in load["error"]
        assert "not JSON" in load["error"]
        # The old set still runs, and the engines stay ready.
        assert await greet_answers(shared_backends.rabbitmq_url, event_id="g2") == "hello v1"
        assert all([await group.api.ready(engine) for engine in group.engines])
        failed = await group.api.counter(group.engines[0], "srvthreds_pattern_reloads_total")
        assert failed >= 2  # one ok, one failed (labels summed)


async def test_a_reload_on_one_replica_reaches_every_replica(
    tmp_path: Path, shared_backends: Backends, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folder watch must not be what spreads the change: check it hourly.
    monkeypatch.setenv("PATTERN_POLL_SECONDS", "3600")
    profile = profile_with_admin(tmp_path / "profile")
    async with engine_group(
        2, profile=profile, backends=shared_backends, log_dir=tmp_path, report=report
    ) as group:
        (profile / "patterns" / "greeting.json").write_text(
            json.dumps(greeting_pattern("hello v2"))
        )
        connection, channel = await connect_client(shared_backends.rabbitmq_url)
        try:
            inbox = await declare_inbox(channel)
            control = {
                "id": "reload-1",
                "type": "org.wt.control.sysControl",
                "thredId": "SYSTEM",
                "source": {"id": ADMIN},
                "data": {"content": {"values": {"op": "reloadAllPatterns"}}},
            }
            await publish_raw(channel, json.dumps(control).encode(), message_id="reload-1")

            async def reply() -> dict[str, Any] | None:
                message = await inbox.get(fail=False, no_ack=True)
                return None if message is None else json.loads(message.body)

            answer = await eventually(reply, what="the reload reply", seconds=WAIT_SECONDS)
            assert answer["event"]["data"]["content"]["values"]["status"] == "OK"
        finally:
            await connection.close()

        async def both_loaded() -> bool:
            loads = [await pattern_load(group, index) for index in (0, 1)]
            return all("greeting" in load.get("patterns", []) for load in loads)

        # One replica ran the reload; patternChanged on Redis brought the other along.
        await eventually(both_loaded, what="both engines to run greeting", seconds=30)
        for index in range(4):
            answer = await greet_answers(shared_backends.rabbitmq_url, event_id=f"h{index}")
            assert answer == "hello v2"
