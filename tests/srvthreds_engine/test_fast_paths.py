"""The hand-written hot paths give exactly what the general code they replace would give."""

from __future__ import annotations

import json
from typing import Any

import pytest

from srvthreds_engine.apps.config_files import read_resolver_config, read_sessions_model
from srvthreds_engine.core.expressions import Bindings
from srvthreds_engine.core.templates import compile_template, expand
from srvthreds_engine.core.thred import ReactionStore, Thred, ThredContext, ThredMeta
from tests.srvthreds_engine.driver import DATA, Driver, std_event


def test_a_thred_round_trips_through_its_stored_shape_without_sharing() -> None:
    thred = Thred(
        id="p_1",
        patternId="p",
        startTime=1,
        lastUpdateTime=2,
        endTime=3,
        status="f",
        reactionStore=ReactionStore(
            reactionName="r", conditionState={"0": {"operandResults": [True]}}, startTime=1
        ),
        thredContext=ThredContext(thredId="p_1", scope={"k": [{"a": 1}]}, participantIds=["x"]),
        meta=ThredMeta(label="L", displayUri="u"),
        parentThredId="q_1",
        spawnType="child",
        childThredIds=["c_1"],
    )
    stored = thred.stored()
    assert list(stored) == [
        "id",
        "patternId",
        "status",
        "startTime",
        "lastUpdateTime",
        "endTime",
        "reactionStore",
        "thredContext",
        "meta",
        "parentThredId",
        "spawnType",
        "childThredIds",
    ]
    assert stored["meta"] == {"label": "L", "displayUri": "u"}
    again = Thred.from_stored(stored)
    assert again == thred
    again.thredContext.scope["k"][0]["a"] = 2
    again.reactionStore.conditionState["0"]["operandResults"].append(False)
    assert stored["thredContext"]["scope"] == {"k": [{"a": 1}]}
    assert thred.reactionStore.conditionState == {"0": {"operandResults": [True]}}


TEMPLATES: list[Any] = [
    {"title": "$xpr('a ' & $event.id)", "content": {"values": {"n": "$xpr($values.a + 1)"}}},
    {"static": {"x": [1, None, {"y": None}]}, "none": None, "$xpr": {"k": 1}},
    {"$xpr": "$xpr({'spread': $event.id})", "after": "$xpr(\"$xpr('nested ' & $event.id)\")"},
    ["$xpr($event.id)", "$xpr(null)", "plain", ["$xpr($values.a)"]],
    "$xpr($event.source.id)",
    "just text",
    7,
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_compiled_template_gives_what_expand_gives(template: Any) -> None:
    event = {
        "id": "e1",
        "type": "t",
        "source": {"id": "s"},
        "data": {"content": {"values": {"a": 1}}},
    }
    bindings = Bindings(event, thred_id="t1")
    plan = compile_template(template)
    first = plan(bindings)
    assert first == expand(template, bindings=bindings)
    if isinstance(first, dict | list):
        # Each run builds fresh containers: one outbound event never aliases another.
        assert plan(bindings) is not first


def compact(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


async def test_replay_lines_are_the_compact_json_of_their_records() -> None:
    driver = Driver(
        "workflow",
        sessions_model=read_sessions_model(DATA / "workflow_sessions.json"),
        resolver_config=read_resolver_config(DATA / "workflow_resolver.json"),
    )
    lines: list[str] = []
    for number in range(3):
        values = {"item": "café ✓", "amount": 1200 + number}
        lines.append(
            await driver.replay.step_line(
                std_event(
                    f"r{number}",
                    "org.example.purchase.request",
                    source={"id": "alice"},
                    data={"content": {"values": values}},
                )
            )
        )
    lines.append(await driver.replay.step_line({"$advance_ms": 10}))
    for line in lines:
        assert line == compact(json.loads(line))
    threds = json.loads(lines[-1])["threds"]
    assert len(threds) >= 3
    assert [thred["id"] for thred in threds] == sorted(thred["id"] for thred in threds)
    assert all("meta" not in thred for thred in threds)
    assert "café ✓" in lines[0]
