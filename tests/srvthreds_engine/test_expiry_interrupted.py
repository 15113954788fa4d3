"""An expiry whose messages could not be sent (a backend down) sends them on the next pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from srvthreds_engine.adapters.memory import (
    BoundedMemoryPersistence,
    MemorySessionStore,
    MemoryThredStore,
)
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.events import Event, OutboundMessage
from srvthreds_engine.core.patterns import parse_pattern
from srvthreds_engine.service.processing import Engine

PATTERN = {
    "name": "Expiring",
    "reactions": [
        {
            "condition": {
                "type": "filter",
                "xpr": "$event.type = 'start'",
                "onTrue": {"xpr": "$setLocal('first', $event)"},
                "transform": {"eventDataTemplate": {"title": "started"}},
                "publish": {"to": ["out"]},
            }
        },
        {
            "name": "waiting",
            "condition": {"type": "filter", "xpr": "$event.type = 'never'"},
            "expiry": {
                "interval": 100,
                "transition": {"name": "late", "input": "local", "localName": "first"},
            },
        },
        {
            "name": "late",
            "condition": {
                "type": "filter",
                "xpr": "true",
                "transform": {"eventDataTemplate": {"title": "expired"}},
                "publish": {"to": ["out"]},
            },
        },
    ],
}


class BrokerDownError(ConnectionError):
    """The transport is away (one of the engine's transient errors)."""


class FlakyDispatcher:
    """Collects messages; raises BrokerDownError while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[OutboundMessage] = []

    async def dispatch(self, messages: Sequence[OutboundMessage], *, sessions: Any = None) -> None:
        if self.down:
            raise BrokerDownError("broker away")
        self.sent.extend(messages)


async def test_an_expiry_interrupted_after_its_commit_sends_its_message_on_the_next_pass() -> None:
    clock = VirtualClock()
    store = MemoryThredStore(clock=clock)
    dispatcher = FlakyDispatcher()
    engine = Engine(
        patterns=[parse_pattern(PATTERN, file="expiring.json")],
        store=store,
        sessions=MemorySessionStore(),
        persistence=BoundedMemoryPersistence(keep=100),
        dispatcher=dispatcher,
        clock=clock,
        transient_errors=(BrokerDownError,),
    )
    start = Event.model_validate({"id": "s", "type": "start", "source": {"id": "client"}})
    await engine.process(start)
    clock.advance(101)
    dispatcher.down = True
    # The expiry commits (the thred ends), then its message cannot be sent.
    with pytest.raises(BrokerDownError):
        await engine.fire_due_timers()
    assert await store.list_threds() == []
    assert engine.next_timer_due_ms() == 0
    dispatcher.down = False
    assert await engine.fire_due_timers() == 0
    assert [message.event["data"]["title"] for message in dispatcher.sent] == [
        "started",
        "expired",
    ]
    assert engine.next_timer_due_ms() is None
