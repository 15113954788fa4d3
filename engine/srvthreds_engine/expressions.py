"""JSONata expressions compiled once, evaluated with the engine's bindings (spec section 9)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import jsonatapy

_log = logging.getLogger("srvthreds_engine.expressions")


class ExpressionError(ValueError):
    """An expression that does not parse or fails while evaluated."""

    def __init__(self, text: str, *, problem: str) -> None:
        super().__init__(f"expression {text!r}: {problem}")
        self.text = text
        self.problem = problem


@dataclass(slots=True)
class Bindings:
    """What one evaluation sees: the input event, the thred and (onPublish) the outbound event.

    NB: treat it as immutable once evaluated with: the variables are built once and reused by
    every expression evaluated with these bindings (the scope is shared by reference, as is).
    """

    event: dict[str, Any]
    _: KW_ONLY
    thred_id: str | None = None
    scope: dict[str, Any] = field(default_factory=dict)
    participant_ids: list[str] = field(default_factory=list)
    outbound_event: dict[str, Any] | None = None
    _variables: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    _document: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    _named: dict[tuple[str, ...], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    def variables(self) -> dict[str, Any]:
        """The `$name` variables of section 9; an absent value stays unbound (undefined)."""
        if self._variables is None:
            self._variables = self._build_variables()
        return self._variables

    def _build_variables(self) -> dict[str, Any]:
        event = self.event
        variables: dict[str, Any] = {"event": event}
        thred_id = event.get("thredId") or self.thred_id
        if thred_id is not None:
            variables["thredId"] = thred_id
        data = event.get("data")
        if isinstance(data, dict):
            variables["data"] = data
            _bind_parts(variables, data)
        if self.outbound_event is not None:
            variables["outboundEvent"] = self.outbound_event
        return variables

    def variables_named(self, names: tuple[str, ...] | None) -> dict[str, Any]:
        """The variables among `names` that are bound (all of them for None), built once."""
        variables = self.variables()
        if names is None:
            return variables
        if self._named is None:
            self._named = {}
        named = self._named.get(names)
        if named is None:
            named = self._named[names] = {
                name: variables[name] for name in names if name in variables
            }
        return named

    def with_scope(self, scope: dict[str, Any]) -> Bindings:
        """The same bindings over another scope (the variables do not depend on it)."""
        return Bindings(
            self.event,
            thred_id=self.thred_id,
            scope=scope,
            participant_ids=self.participant_ids,
            outbound_event=self.outbound_event,
            _variables=self._variables,
            _named=self._named,
        )

    def document(self) -> dict[str, Any]:
        """The input document `{event, context}` (built once; scope and ids by reference)."""
        if self._document is None:
            context = {
                "thredId": self.thred_id,
                "scope": self.scope,
                "participantIds": self.participant_ids,
            }
            self._document = {"event": self.event, "context": context}
        return self._document


def _bind_parts(variables: dict[str, Any], data: dict[str, Any]) -> None:
    advice = data.get("advice")
    if advice is not None:
        variables["advice"] = advice
    content = data.get("content")
    if isinstance(content, dict):
        variables["content"] = content
        values = content.get("values")
        if values is not None:
            variables["values"] = values


# NB: evaluation is synchronous, so the bindings of the evaluation in progress can live in a
# module-level stack that the host functions read; no await happens between push and pop.
_ACTIVE: list[Bindings] = []


def _current() -> Bindings:
    return _ACTIVE[-1]


def find_value_named(values: Any, *, name: str) -> Any:
    """Depth-first search of `content.values`: own key first, then children; first non-null."""
    if isinstance(values, list):
        for element in values:
            found = find_value_named(element, name=name)
            if found is not None:
                return found
        return None
    if not isinstance(values, dict):
        return None
    own = values.get(name)
    if own is not None:
        return own
    for child in values.values():
        if isinstance(child, dict | list):
            found = find_value_named(child, name=name)
            if found is not None:
                return found
    return None


# NB: a host function's None reaches JSONata as null, not undefined. Lookups that may find
# nothing therefore return `{"v": value}` or `{}`, and a JSONata wrapper reads `.v`, which is
# undefined when missing (as `$local('unset')` is in the original).
_WRAPPERS = {
    "local": "$local := function($n) { $__local($n).v }",
    "valueNamed": "$valueNamed := function($n, $e) { $__valueNamed($n, $e).v }",
}


def _value_named(name: str, event: Any = None) -> dict[str, Any]:
    source = event if isinstance(event, dict) else _current().event
    data = source.get("data") or {}
    content = data.get("content") or {} if isinstance(data, dict) else {}
    found = find_value_named(
        content.get("values") if isinstance(content, dict) else None, name=name
    )
    return {} if found is None else {"v": found}


def _local(name: str) -> dict[str, Any]:
    scope = _current().scope
    return {"v": scope[name]} if name in scope else {}


def _set_local(name: str, value: Any) -> Any:
    _current().scope[name] = value
    return value


def _is_response_for(publish_name: str) -> bool:
    bindings = _current()
    expected = bindings.scope.get(f"out_id_{publish_name}")
    return expected is not None and bindings.event.get("re") == expected


def _log_message(message: Any) -> None:
    _log.info("pattern log: %s", message, extra={"thredId": _current().thred_id})


HOST_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "__valueNamed": _value_named,
    "__local": _local,
    "setLocal": _set_local,
    "isResponseFor": _is_response_for,
    "log": _log_message,
}


# Every `$name` variable Bindings may bind; an expression is handed only those it names.
VARIABLE_NAMES = ("event", "thredId", "data", "advice", "content", "values", "outboundEvent")


def _named_variables(text: str) -> tuple[str, ...] | None:
    """The variables `text` names, or None when it may reach any (`$eval` builds names)."""
    if "$eval" in text:
        return None
    return tuple(name for name in VARIABLE_NAMES if re.search(rf"\${name}(?![A-Za-z0-9_])", text))


def _may_call_host(compiled_text: str) -> bool:
    """Whether the text (wrappers included) names a host function, or `$eval` may build a call."""
    if "$eval" in compiled_text:
        return True
    return any(f"${name}" in compiled_text for name in HOST_FUNCTIONS)


class Expression:
    """One compiled JSONata expression with the engine's host functions registered."""

    __slots__ = ("_calls_host", "_compiled", "_evaluate", "_variables", "may_write_scope", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        # Parse the text alone first so errors point into what the author wrote.
        try:
            jsonatapy.compile(text)
            self._compiled = jsonatapy.compile(_with_wrappers(text))
        except ValueError as exc:
            raise ExpressionError(text, problem=str(exc)) from exc
        for name, function in HOST_FUNCTIONS.items():
            self._compiled.register(name, function)
        # The native evaluate, past jsonatapy's pure-Python forwarding wrapper (one call per
        # evaluation saved); the public method where a version has no such inner object.
        self._evaluate = getattr(self._compiled, "_expr", self._compiled).evaluate
        # Handing the evaluator every variable costs a conversion of each value per call;
        # a variable the text does not name cannot be read, so it is left out.
        self._variables = _named_variables(text)
        self.may_write_scope = "setLocal" in text or "$eval" in text
        # Only an expression that can reach a host function needs the bindings pushed for it.
        self._calls_host = _may_call_host(_with_wrappers(text))

    def evaluate(self, bindings: Bindings) -> Any:
        """Evaluate against the bindings; `$setLocal` writes into `bindings.scope`."""
        variables = bindings.variables_named(self._variables)
        if not self._calls_host:
            try:
                return self._evaluate(bindings.document(), variables)
            except ValueError as exc:
                raise ExpressionError(self.text, problem=str(exc)) from exc
        _ACTIVE.append(bindings)
        try:
            return self._evaluate(bindings.document(), variables)
        except ValueError as exc:
            raise ExpressionError(self.text, problem=str(exc)) from exc
        finally:
            _ACTIVE.pop()


def _with_wrappers(text: str) -> str:
    needed = [wrapper for name, wrapper in _WRAPPERS.items() if f"${name}(" in text]
    if not needed:
        return text
    return "(" + "; ".join(needed) + ";\n" + text + "\n)"


_CACHE: dict[str, Expression] = {}


def compile_expression(text: str) -> Expression:
    """Compile (or reuse) the expression for `text`; raises ExpressionError if it does not parse."""
    expression = _CACHE.get(text)
    if expression is None:
        expression = Expression(text)
        _CACHE[text] = expression
    return expression


def is_truthy(value: Any) -> bool:
    """JSONata's boolean cast of a result."""
    if isinstance(value, list):
        return any(is_truthy(item) for item in value)
    if isinstance(value, dict):
        return bool(value)
    return bool(value)
