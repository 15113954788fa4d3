"""A test driver for `replay`: feed one input line, get its output line back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from srvthreds_engine.apps.config_files import read_resolver_config, read_sessions_model
from srvthreds_engine.apps.replay import Replay
from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.patterns import Pattern, load_patterns, parse_pattern

DATA = Path(__file__).parent / "data"
SOURCE = {"id": "test.dataset"}


class Backend(Protocol):
    """Builds the Replay of a Driver: on memory, or on other adapters sharing its clock."""

    name: str

    def replay(
        self,
        patterns: list[Pattern],
        *,
        sessions_model: SessionsModel,
        resolver_config: ResolverConfig,
    ) -> Replay: ...


class MemoryBackend:
    """Replay as the command runs it: every port in memory."""

    name = "memory"

    def replay(
        self,
        patterns: list[Pattern],
        *,
        sessions_model: SessionsModel,
        resolver_config: ResolverConfig,
    ) -> Replay:
        """A Replay on its default ports."""
        return Replay(patterns, sessions_model=sessions_model, resolver_config=resolver_config)


@dataclass
class _Setting:
    backend: Backend


# Set per test (tests/srvthreds_engine/conftest.py), not passed: Drivers are made in helpers.
_SETTING = _Setting(backend=MemoryBackend())


def current_backend() -> Backend:
    """The backend the next Driver is built on."""
    return _SETTING.backend


@contextmanager
def using_backend(backend: Backend) -> Iterator[Backend]:
    """Drivers made inside the block are built on `backend`."""
    previous, _SETTING.backend = _SETTING.backend, backend
    try:
        yield backend
    finally:
        _SETTING.backend = previous


def std_event(event_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
    """A standard test event (source test.dataset unless overridden)."""
    return {"id": event_id, "type": event_type, "source": dict(SOURCE), **fields}


class Driver:
    """Wraps a Replay; every line goes through a JSON round trip like the command's."""

    def __init__(
        self,
        *patterns: str | dict[str, Any],
        sessions_model: SessionsModel | None = None,
        resolver_config: ResolverConfig | None = None,
    ) -> None:
        loaded = []
        for pattern in patterns:
            if isinstance(pattern, str):
                loaded.extend(load_patterns([DATA / pattern]))
            else:
                loaded.append(parse_pattern(pattern, file="<test>"))
        self.replay = current_backend().replay(
            loaded,
            sessions_model=sessions_model or read_sessions_model(DATA / "sessions_model.json"),
            resolver_config=resolver_config or read_resolver_config(DATA / "resolver_config.json"),
        )
        self.outputs: list[dict[str, Any]] = []

    async def send(self, line: dict[str, Any]) -> dict[str, Any]:
        """Process one input line; returns its output record (as JSON would carry it)."""
        record = await self.replay.step(json.loads(json.dumps(line)))
        output: dict[str, Any] = json.loads(json.dumps(record))
        self.outputs.append(output)
        return output

    async def advance(self, milliseconds: int) -> dict[str, Any]:
        """Move the virtual clock."""
        return await self.send({"$advance_ms": milliseconds})

    async def session(self, participant_id: str, *, roles: list[str] | None = None) -> None:
        """Register a live session."""
        await self.send(
            {"$session": {"participantId": participant_id, "nodeId": "node1", "roles": roles or []}}
        )


def titles(output: dict[str, Any]) -> list[str]:
    """The `data.title` of each message of an output line."""
    return [message["event"]["data"].get("title") for message in output["messages"]]


def recipients(output: dict[str, Any]) -> list[set[str]]:
    """The `to` of each message of an output line, as sets."""
    return [set(message["to"]) for message in output["messages"]]


def only_thred(output: dict[str, Any]) -> dict[str, Any]:
    """The one stored thred after an input."""
    assert len(output["threds"]) == 1, f"expected one stored thred, got {output['threds']}"
    thred: dict[str, Any] = output["threds"][0]
    return thred


def error_of(output: dict[str, Any]) -> dict[str, Any]:
    """The `content.error` of the single error notification of an output line."""
    assert len(output["messages"]) == 1, f"expected one error message: {output['messages']}"
    error: dict[str, Any] = output["messages"][0]["event"]["data"]["content"]["error"]
    return error
