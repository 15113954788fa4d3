"""The Engine interface other components build on: construction, process, timers."""

from __future__ import annotations

from srvthreds_engine.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.clock import REPLAY_EPOCH_MS, VirtualClock
from srvthreds_engine.engine import Engine
from srvthreds_engine.events import Event
from srvthreds_engine.memory import (
    ListDispatcher,
    MemoryPersistence,
    MemoryStorage,
    build_embedded_engine,
)
from srvthreds_engine.patterns import parse_pattern

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
    storage, dispatcher, clock = MemoryStorage(), ListDispatcher(), VirtualClock()
    engine = Engine(
        patterns=[PATTERN],
        storage=storage,
        sessions=storage,
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


async def test_build_embedded_engine_wires_memory_ports() -> None:
    engine, storage, persistence, dispatcher = build_embedded_engine([PATTERN])
    await engine.process(Event.model_validate({"id": "1", "type": "go", "source": {"id": "s"}}))
    assert len(dispatcher.messages) == 1
    assert dispatcher.messages[0].to == []
    assert persistence.events["1"]["thredId"] == (await storage.list_threds())[0].id
    assert engine.patterns == [PATTERN]
    assert engine.pattern("api") is PATTERN
