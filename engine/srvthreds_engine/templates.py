"""Transforms: `$xpr(...)` template expansion, outbound events and publish addresses."""

from __future__ import annotations

from typing import Any

from srvthreds_engine import ids
from srvthreds_engine.addresses import flatten
from srvthreds_engine.errors import EngineError
from srvthreds_engine.events import SYSTEM_SOURCE, TELL
from srvthreds_engine.expressions import Bindings, compile_expression
from srvthreds_engine.patterns import XPR_KEY, XPR_PREFIX, Publish, Transform


def _inner_expression(value: str) -> str | None:
    if value.startswith(XPR_PREFIX) and value.endswith(")"):
        return value[len(XPR_PREFIX) : -1]
    return None


def expand(value: Any, *, bindings: Bindings) -> Any:
    """Evaluate every `$xpr(...)` string (recursively); spread `"$xpr"` keys; drop nulls."""
    if isinstance(value, str):
        inner = _inner_expression(value)
        if inner is None:
            return value
        return expand(compile_expression(inner).evaluate(bindings), bindings=bindings)
    if isinstance(value, list):
        items = (expand(item, bindings=bindings) for item in value)
        return [item for item in items if item is not None]
    if isinstance(value, dict):
        return _expand_object(value, bindings=bindings)
    return value


def _expand_object(value: dict[str, Any], *, bindings: Bindings) -> dict[str, Any]:
    expanded: dict[str, Any] = {}
    for key, item in value.items():
        result = expand(item, bindings=bindings)
        if key == XPR_KEY and isinstance(result, dict):
            expanded.update(result)
        elif result is not None:
            expanded[key] = result
    return expanded


def build_event_data(transform: Transform, *, bindings: Bindings) -> Any:
    """The outbound `data`: the template, else the `templateXpr` result."""
    if transform.eventDataTemplate is not None:
        return expand(transform.eventDataTemplate, bindings=bindings)
    if transform.templateXpr is not None:
        return compile_expression(transform.templateXpr).evaluate(bindings)
    raise EngineError("Transform has neither eventDataTemplate nor templateXpr")


def build_event(
    transform: Transform, *, bindings: Bindings, thred_id: str, now_ms: int
) -> dict[str, Any]:
    """An engine event (section 1 defaults) built by a transform."""
    event: dict[str, Any] = {
        "id": ids.event_id(),
        "type": TELL,
        "source": dict(SYSTEM_SOURCE),
        "thredId": thred_id,
        "time": now_ms,
    }
    if transform.meta is not None and transform.meta.reXpr is not None:
        related = compile_expression(transform.meta.reXpr).evaluate(bindings)
        if related:
            event["re"] = related
    event["data"] = build_event_data(transform, bindings=bindings)
    return event


def publish_addresses(publish: Publish, *, bindings: Bindings) -> list[str]:
    """`to` with `$xpr` elements evaluated, flattened fully, as strings."""
    raw = publish.to if isinstance(publish.to, list) else [publish.to]
    expanded = expand(raw, bindings=bindings)
    return [str(address) for address in flatten(expanded) if address is not None]
