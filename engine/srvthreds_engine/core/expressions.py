"""JSONata expressions compiled once, evaluated with the engine's bindings (spec section 9)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import jsonatapy
from jsonata import jsonata as jsonata_reference

_log = logging.getLogger("srvthreds_engine.core.expressions")


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
    # The engine's clock reading for `$millis()` and `$now()` (None: the host's clock).
    now_ms: int | None = None
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
            now_ms=self.now_ms,
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


def value_named(event: dict[str, Any], *, name: str) -> Any:
    """`$valueNamed(name, event)`: the first non-null `name` in the event's `content.values`."""
    data = event.get("data") or {}
    content = data.get("content") or {} if isinstance(data, dict) else {}
    return find_value_named(content.get("values") if isinstance(content, dict) else None, name=name)


def _value_named(name: str, event: Any = None) -> dict[str, Any]:
    source = event if isinstance(event, dict) else _current().event
    found = value_named(source, name=name)
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


def _engine_millis() -> int:
    now_ms = _current().now_ms
    return now_ms if now_ms is not None else time.time_ns() // 1_000_000


# `$now(picture?, timezone?)` is `$fromMillis($millis(), picture, timezone)` in JSONata.
_FROM_MILLIS = jsonatapy.compile("$fromMillis($ms, $picture, $timezone)")


def _engine_now(picture: Any = None, timezone: Any = None) -> Any:
    variables: dict[str, Any] = {"ms": _engine_millis()}
    if picture is not None:
        variables["picture"] = picture
    if timezone is not None:
        variables["timezone"] = timezone
    return _FROM_MILLIS.evaluate(None, variables)


# Built-ins replaced so that expressions read the engine's clock (virtual under `replay`).
CLOCK_FUNCTIONS: dict[str, Callable[..., Any]] = {"millis": _engine_millis, "now": _engine_now}


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
    return any(f"${name}" in compiled_text for name in (*HOST_FUNCTIONS, *CLOCK_FUNCTIONS))


class Expression:
    """One compiled JSONata expression with the engine's host functions registered."""

    __slots__ = (
        "_calls_host",
        "_compiled",
        "_evaluate",
        "_field_equals",
        "_joined",
        "_looked_up",
        "_variables",
        "may_write_scope",
        "reads_event_content_only",
        "text",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        # Parse the text alone first so errors point into what the author wrote.
        try:
            jsonatapy.compile(text)
            rewritten, self._looked_up = _lookups_as_variables(text)
            self._compiled = jsonatapy.compile(_with_wrappers(rewritten))
        except ValueError as exc:
            raise ExpressionError(text, problem=str(exc)) from exc
        for name, function in HOST_FUNCTIONS.items():
            self._compiled.register(name, function)
        for name, function in CLOCK_FUNCTIONS.items():
            self._compiled.register_override(name, function)
        # The native evaluate, past jsonatapy's pure-Python forwarding wrapper (one call per
        # evaluation saved); the public method where a version has no such inner object.
        self._evaluate = getattr(self._compiled, "_expr", self._compiled).evaluate
        # Handing the evaluator every variable costs a conversion of each value per call;
        # a variable the text does not name cannot be read, so it is left out.
        self._variables = _named_variables(text)
        self.may_write_scope = "setLocal" in text or "$eval" in text
        # Only an expression that can reach a host function needs the bindings pushed for it.
        self._calls_host = _may_call_host(_with_wrappers(rewritten))
        self.reads_event_content_only = reads_event_content_only(text)
        self._field_equals = _field_equals_literal(text)
        self._joined = _joined_parts(text)

    def evaluate(self, bindings: Bindings) -> Any:
        """Evaluate against the bindings; `$setLocal` writes into `bindings.scope`."""
        if self._field_equals is not None:
            # The commonest filter, `$event.type = 'x'`, answered without the evaluator
            # when the field is a string or absent (the only cases whose answer is plain).
            name, literal = self._field_equals
            value = bindings.event.get(name, _ABSENT)
            if type(value) is str:
                return value == literal
            if value is _ABSENT:
                return False
        if self._joined is not None:
            joined = _join_strings(self._joined, event=bindings.event)
            if joined is not None:
                return joined
        variables = bindings.variables_named(self._variables)
        if self._looked_up:
            variables = _with_looked_up(variables, bindings=bindings, looked_up=self._looked_up)
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


_ABSENT = object()
# `$event.<field> = '<literal>'`, the whole text.
_FIELD_EQUALS_LITERAL = re.compile(
    r"""\s*\$event\.([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*"""
)


def _field_equals_literal(text: str) -> tuple[str, str] | None:
    """`(field, literal)` when the whole text is `$event.<field> = '<literal>'`, else None."""
    match = _FIELD_EQUALS_LITERAL.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2) if match.group(2) is not None else match.group(3)


# One operand of a `&` chain: a string literal or a `$event.<name>.<name>...` path.
_CHAIN_OPERAND = re.compile(
    r"""\s*(?:'([^'\\]*)'|"([^"\\]*)"|\$event((?:\.[A-Za-z_][A-Za-z0-9_]*)+))\s*"""
)
JoinedPart = str | tuple[str, ...]


def _joined_parts(text: str) -> tuple[JoinedPart, ...] | None:
    """The operands when the whole text is string literals and `$event` paths joined by `&`.

    A literal stays a str, a path becomes its tuple of names; None for any other text.
    """
    parts: list[JoinedPart] = []
    position = 0
    while True:
        match = _CHAIN_OPERAND.match(text, position)
        if match is None:
            return None
        literal = match.group(1) if match.group(1) is not None else match.group(2)
        parts.append(literal if literal is not None else tuple(match.group(3)[1:].split(".")))
        position = match.end()
        if position == len(text):
            break
        if text[position] != "&":
            return None
        position += 1
    has_path = any(isinstance(part, tuple) for part in parts)
    return tuple(parts) if has_path else None


def _join_strings(parts: tuple[JoinedPart, ...], *, event: dict[str, Any]) -> str | None:
    """The joined text when every path leads through objects to a string; None otherwise.

    Only then is JSONata's answer plain concatenation; anything else goes to the evaluator.
    """
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        value: Any = event
        for name in part:
            if type(value) is not dict:
                return None
            value = value.get(name)
        if type(value) is not str:
            return None
        pieces.append(value)
    return "".join(pieces)


# `$valueNamed('<literal>')`: the one-argument form reads only the input event.
_LITERAL_VALUE_NAMED = re.compile(r"""\$valueNamed\(\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\)""")


def _lookups_as_variables(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`text` with each `$valueNamed('<name>')` read from a variable bound before evaluation.

    The wrapper function that makes a missing value undefined is defined on every evaluation
    and calls back into Python; an unbound variable is undefined too, and is found in Python
    beforehand. Rewritten only where the parse proves every occurrence is such a call (none
    inside a string, no redefinition, no `$eval`); otherwise the text is kept as is.
    """
    matches = list(_LITERAL_VALUE_NAMED.finditer(text))
    if not matches or "$eval" in text or ":=" in text:
        return text, ()
    if text.count("$valueNamed") != len(matches) or _literal_lookups(text) != len(matches):
        return text, ()
    names = list(dict.fromkeys(match.group(1) or match.group(2) or "" for match in matches))
    looked_up = tuple((f"__valueNamed_{index}", name) for index, name in enumerate(names))
    variable_of = {name: variable for variable, name in looked_up}
    rewritten = _LITERAL_VALUE_NAMED.sub(
        lambda match: "$" + variable_of[match.group(1) or match.group(2) or ""], text
    )
    return rewritten, looked_up


def _literal_lookups(text: str) -> int:
    """How many one-literal-argument `$valueNamed` calls the parse tree holds (-1: no parse)."""
    try:
        tree = jsonata_reference.Jsonata(text).ast
    except Exception:
        return -1
    seen: set[int] = set()
    pending = [tree]
    found = 0
    while pending:
        node = pending.pop()
        if id(node) in seen or not hasattr(node, "type"):
            continue
        seen.add(id(node))
        procedure = getattr(node, "procedure", None)
        arguments = getattr(node, "arguments", None) or []
        if (
            node.type == "function"
            and getattr(procedure, "value", None) == "valueNamed"
            and len(arguments) == 1
            and arguments[0].type == "string"
        ):
            found += 1
        pending.extend(_children(node))
    return found


def _children(node: Any) -> list[Any]:
    children: list[Any] = []
    for value in vars(node).values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            # Object constructors hold `[key, value]` pairs.
            children.extend(item if isinstance(item, list | tuple) else [item])
    return [child for child in children if hasattr(child, "type")]


def _with_looked_up(
    variables: dict[str, Any], *, bindings: Bindings, looked_up: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    extended = dict(variables)
    for variable, name in looked_up:
        found = _value_named(name, bindings.event).get("v")
        if found is not None:
            extended[variable] = found
    return extended


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
    return bool(value)


# Built-ins whose result depends on their arguments alone: no clock, randomness or evaluation.
_PURE_FUNCTIONS = frozenset(
    {
        *("string", "number", "boolean", "not", "exists", "contains", "length", "type"),
        *("substring", "substringBefore", "substringAfter", "uppercase", "lowercase", "trim"),
        *("pad", "split", "join", "match", "replace"),
        *("count", "sum", "max", "min", "average", "abs", "floor", "ceil", "round"),
    }
)
# Variables bound from the event's `data`, which rebinding the event to a thred leaves as is.
_DATA_VARIABLES = frozenset(("data", "advice", "content", "values"))
_PURE_OPERATORS = frozenset(
    ("=", "!=", "<", "<=", ">", ">=", "and", "or", "in", "&", "+", "-", "*", "/", "%")
)


def reads_event_content_only(text: str) -> bool:
    """Whether `text` provably has no side effect and reads only the event, never its thred id.

    Such an expression gives the same result before and after an event is rebound to a new
    thred (in another scope), so routing's `test` result may stand in for the apply step's
    evaluation. Anything the check does not recognise (or cannot parse) counts as dependent.
    """
    try:
        tree = jsonata_reference.Jsonata(text).ast
    except Exception:
        # A text this parser rejects is simply not provable; jsonatapy already accepted it.
        return False
    return _independent(tree)


def _independent(node: Any) -> bool:
    check = _NODE_CHECKS.get(node.type)
    return check is not None and check(node)


def _independent_binary(node: Any) -> bool:
    return node.value in _PURE_OPERATORS and _independent(node.lhs) and _independent(node.rhs)


def _independent_unary(node: Any) -> bool:
    parts = [node.expression] if node.value == "-" else list(node.expressions or ())
    return node.value in ("-", "[") and all(_independent(part) for part in parts)


def _independent_condition(node: Any) -> bool:
    branches = [node.condition, node.then, node._else]
    return all(branch is None or _independent(branch) for branch in branches)


def _independent_call(node: Any) -> bool:
    procedure = node.procedure
    return (
        procedure.type == "variable"
        and procedure.value in _PURE_FUNCTIONS
        and all(_independent(argument) for argument in node.arguments or ())
    )


def _independent_path(node: Any) -> bool:
    head, rest = node.steps[0], node.steps[1:]
    if head.type != "variable" or head.stages or head.predicate:
        return False
    if any(not _plain_step(step) for step in rest):
        return False
    if head.value == "event":
        # The whole event (or its thredId) changes when routing rebinds it to the new thred.
        return bool(rest) and rest[0].value != "thredId"
    return head.value in _DATA_VARIABLES


def _plain_step(step: Any) -> bool:
    return (
        step.type == "name"
        and not step.stages
        and not step.predicate
        and step.group is None
        and step.focus is None
        and step.index is None
        and not step.tuple
    )


_NODE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda _: True,
    "number": lambda _: True,
    "value": lambda _: True,
    "regex": lambda _: True,
    "variable": lambda node: node.value in _DATA_VARIABLES,
    "path": _independent_path,
    "binary": _independent_binary,
    "unary": _independent_unary,
    "condition": _independent_condition,
    "function": _independent_call,
}
