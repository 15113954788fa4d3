"""Replay output lines are the compact JSON of their records, also when no thred is stored."""

from __future__ import annotations

import json
from typing import Any

from srvthreds_engine.apps.replay import _dumps
from tests.srvthreds_engine.driver import Driver
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say


def compact(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


async def test_a_line_after_the_only_thred_ended_is_one_compact_record() -> None:
    driver = Driver(pattern({"condition": {"type": "filter", "xpr": is_type("go"), **say("é ✓")}}))
    values = {"text": "café ✓", "ratio": 0.1, "big": 10**20, "none": None}
    line = await driver.replay.step_line(
        event("e1", "go", data={"content": {"values": values}}),
    )
    assert line == compact(json.loads(line))
    record = json.loads(line)
    assert list(record) == ["input", "messages", "threds", "archived", "log"]
    assert record["threds"] == []
    assert len(record["archived"]) == 1
    assert record["input"]["data"]["content"]["values"] == values


def test_the_prebuilt_encoder_writes_what_json_dumps_writes() -> None:
    samples: list[Any] = [
        {"a": [1, 2.5, None, True, 'é"\\\n'], "b": {}},
        [],
        {"x": 1e300, "y": -0.0, "z": 10**30, "w": float("nan")},
        "plain",
    ]
    for sample in samples:
        assert _dumps(sample) == compact(sample)
