"""The published JSON Schema of a pattern, generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from srvthreds_engine.core.patterns import Pattern

SCHEMA_ID = "https://srvthreds.dev/schemas/pattern.schema.json"


def pattern_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one pattern object."""
    schema = Pattern.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
