"""Limits on what the engine accepts as input, and the checks that name where one is exceeded."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pydantic

# Containers (objects and arrays) nested in one event, the event itself being level 1.
# pydantic-core stops serialising at about 255 levels and parsing JSON at about 200, and the
# engine nests events a few levels deeper in messages and stored threds: 64 leaves room for both.
MAX_EVENT_DEPTH = 64
SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
# A path shown in an error is cut here: its keys come from the client and may be long.
MAX_PATH_TEXT = 120


def too_deep_message(*, limit: int = MAX_EVENT_DEPTH) -> str:
    """The problem text for a value nested deeper than the limit (where unknown)."""
    return f"nested deeper than {limit} levels"


def may_be_too_deep(text: str | bytes, *, limit: int = MAX_EVENT_DEPTH) -> bool:
    """False when the JSON `text` has too few brackets to nest deeper than `limit`.

    A bound, not a measure (brackets in strings count too), and far cheaper than a walk: most
    inputs skip `depth_problem` with it.
    """
    if isinstance(text, bytes):
        return text.count(b"{") + text.count(b"[") > limit
    return text.count("{") + text.count("[") > limit


def depth_problem(value: Any, *, limit: int = MAX_EVENT_DEPTH) -> str | None:
    """None when `value` nests at most `limit` containers, else the problem naming where.

    `value` is decoded JSON or a pydantic model of it (an event); the walk stops at the limit, so
    it costs no more than the part of the value within the limit.
    """
    path = _path_below(value, room=limit)
    if path is None:
        return None
    path.reverse()
    return f"{too_deep_message(limit=limit)} at {_path_text(path)}"


def _children(value: Any) -> Iterable[tuple[str | int, Any]] | None:
    if isinstance(value, dict):
        return value.items()
    if isinstance(value, list):
        return enumerate(value)
    if isinstance(value, pydantic.BaseModel):
        # Its fields and, with extra="allow", the unknown keys (not `iter(model)`: slower).
        extra = value.__pydantic_extra__
        fields = value.__dict__.items()
        return fields if not extra else itertools.chain(fields, extra.items())
    return None


def _path_below(value: Any, *, room: int) -> list[str | int] | None:
    """The reversed path to the first container that does not fit in `room` levels, or None."""
    children = _children(value)
    if children is None:
        return None
    if room == 0:
        return []
    for key, child in children:
        # Most values are scalars: an exact type test is the cheapest way past them.
        if type(child) in SCALAR_TYPES:
            continue
        found = _path_below(child, room=room - 1)
        if found is not None:
            found.append(key)
            return found
    return None


def _path_text(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        if len(text) > MAX_PATH_TEXT:
            return text[:MAX_PATH_TEXT] + "..."
    return text or "$"
