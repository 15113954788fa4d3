"""The committed pattern JSON Schema matches the models."""

from __future__ import annotations

import json
from pathlib import Path

from srvthreds_engine.core.schema import pattern_schema

SCHEMA_FILE = Path(__file__).parents[2] / "engine" / "schemas" / "pattern.schema.json"


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == pattern_schema(), (
        "engine/schemas/pattern.schema.json is stale: "
        "run `srvthreds-engine schema --output engine/schemas/pattern.schema.json`"
    )


def test_schema_describes_conditions_as_a_tagged_union() -> None:
    schema = pattern_schema()
    assert schema["required"] == ["name", "reactions"]
    assert {"FilterCondition", "AndCondition", "OrCondition"} <= set(schema["$defs"])
