"""Transforms: `$xpr(...)` template expansion, outbound events and publish addresses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from srvthreds_engine.core import ids
from srvthreds_engine.core.addresses import flatten
from srvthreds_engine.core.errors import EngineError
from srvthreds_engine.core.events import SYSTEM_SOURCE, TELL
from srvthreds_engine.core.expressions import Bindings, compile_expression
from srvthreds_engine.core.patterns import (
    XPR_KEY,
    XPR_PREFIX,
    Publish,
    Transform,
    spread_expression,
)
from srvthreds_engine.core.thred import copy_json


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


def _spread(value: Any, *, bindings: Bindings) -> Any:
    text = spread_expression(value)
    if text is None:
        return expand(value, bindings=bindings)
    return expand(compile_expression(text).evaluate(bindings), bindings=bindings)


def _expand_object(value: dict[str, Any], *, bindings: Bindings) -> dict[str, Any]:
    expanded: dict[str, Any] = {}
    for key, item in value.items():
        if key == XPR_KEY:
            # Its object result is merged in place of the key; anything else is dropped.
            result = _spread(item, bindings=bindings)
            if isinstance(result, dict):
                expanded.update(result)
            continue
        result = expand(item, bindings=bindings)
        if result is not None:
            expanded[key] = result
    return expanded


# A template compiled once: a function of the bindings giving what `expand` would give.
Plan = Callable[[Bindings], Any]


def _constant(value: Any) -> Plan:
    if isinstance(value, dict | list):
        # A fresh copy each time, as `expand` builds one: outbound events share nothing.
        return lambda _: copy_json(value)
    return lambda _: value


def _is_static(value: Any) -> bool:
    if isinstance(value, str):
        return _inner_expression(value) is None
    if isinstance(value, list):
        return all(_is_static(item) for item in value)
    if isinstance(value, dict):
        return XPR_KEY not in value and all(_is_static(item) for item in value.values())
    return True


def _expression_plan(text: str) -> Plan:
    expression = compile_expression(text)
    # A result is expanded in turn, as `expand` does (it may hold `$xpr(...)` strings).
    return lambda bindings: expand(expression.evaluate(bindings), bindings=bindings)


def _list_plan(items: list[Any]) -> Plan:
    plans = [compile_template(item) for item in items]

    def run(bindings: Bindings) -> list[Any]:
        results = [plan(bindings) for plan in plans]
        return [item for item in results if item is not None]

    return run


def _spread_plan(value: Any) -> Plan:
    text = spread_expression(value)
    return compile_template(value) if text is None else _expression_plan(text)


def _object_plan(value: dict[str, Any]) -> Plan:
    plans = [
        (key, key == XPR_KEY, _spread_plan(item) if key == XPR_KEY else compile_template(item))
        for key, item in value.items()
    ]

    def run(bindings: Bindings) -> dict[str, Any]:
        expanded: dict[str, Any] = {}
        for key, spreads, plan in plans:
            result = plan(bindings)
            if spreads:
                if isinstance(result, dict):
                    expanded.update(result)
            elif result is not None:
                expanded[key] = result
        return expanded

    return run


def compile_template(value: Any) -> Plan:
    """A template as a function of the bindings, equal to `expand(value, bindings=...)`."""
    if _is_static(value):
        return _constant(_expand_static(value))
    if isinstance(value, str):
        inner = _inner_expression(value)
        if inner is not None:
            return _expression_plan(inner)
    if isinstance(value, list):
        return _list_plan(value)
    if isinstance(value, dict):
        return _object_plan(value)
    return _constant(value)


def _expand_static(value: Any) -> Any:
    # Static parts evaluate nothing, so any bindings do; nulls are dropped as by `expand`.
    return expand(value, bindings=Bindings({}))


# Templates are pattern data that lives as long as the patterns; the entry keeps the template
# itself, so its id cannot be reused while the entry is here.
_PLANS: dict[int, tuple[Any, Plan]] = {}


def template_plan(template: Any) -> Plan:
    """The compiled plan of a template object (compiled on first use, then reused)."""
    entry = _PLANS.get(id(template))
    if entry is None or entry[0] is not template:
        entry = _PLANS[id(template)] = (template, compile_template(template))
    return entry[1]


def build_event_data(transform: Transform, *, bindings: Bindings) -> Any:
    """The outbound `data`: the template, else the `templateXpr` result."""
    if transform.eventDataTemplate is not None:
        return template_plan(transform.eventDataTemplate)(bindings)
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
    plan = template_plan(publish.to)
    raw = plan(bindings)
    expanded = raw if isinstance(publish.to, list) else [raw]
    # `expand` drops null items of the list; a lone `to` that yields nothing gives no address.
    return [str(address) for address in flatten(expanded) if address is not None]
