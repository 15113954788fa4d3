"""The Engine interface other components build on: construction, process, timers."""

from __future__ import annotations

from srvthreds_engine.adapters.memory import (
    ListDispatcher,
    MemoryPersistence,
    MemorySessionStore,
    MemoryThredStore,
)
from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.clock import REPLAY_EPOCH_MS, VirtualClock
from srvthreds_engine.core.events import Event
from srvthreds_engine.core.patterns import parse_pattern
from srvthreds_engine.service.processing import Engine

PATTERN = parse_pattern(
    {
        "name": "Api",
        "reactions": [
            {
                "condition": {
                    "type": "filter",
                    "xpr": "$event.type = 'go'",
                    "transform": {"eventDataTemplate": {"title": "hi"}},
                    "publish": {"to": ["$team"]},
                },
            },
            {"condition": {"type": "filter", "xpr": "true"}, "expiry": {"interval": 100}},
        ],
    },
    file="<test>",
)


async def test_engine_built_from_configs_processes_events_and_fires_timers() -> None:
    clock = VirtualClock()
    storage, dispatcher = MemoryThredStore(clock=clock), ListDispatcher()
    engine = Engine(
        patterns=[PATTERN],
        store=storage,
        sessions=MemorySessionStore(),
        persistence=MemoryPersistence(),
        dispatcher=dispatcher,
        clock=clock,
        sessions_model=SessionsModel.model_validate(
            {"groups": [{"name": "team", "participants": [{"participantId": "ann"}]}]}
        ),
        resolver_config=ResolverConfig(),
    )
    await engine.process(Event.model_validate({"id": "1", "type": "go", "source": {"id": "s"}}))
    assert [message.to for message in dispatcher.messages] == [["ann"]]
    assert dispatcher.messages[0].id.startswith("evt")
    [thred] = await storage.list_threds()
    assert await storage.get_thred(thred.id) == thred
    assert engine.next_timer_due_ms() == REPLAY_EPOCH_MS + 101
    assert await engine.fire_due_timers() == 0
    clock.advance(101)
    assert await engine.fire_due_timers() == 1
    assert await storage.list_threds() == []
    assert engine.next_timer_due_ms() is None
