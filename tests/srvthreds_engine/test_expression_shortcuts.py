"""Shortcuts in expression evaluation give exactly what the general path gives.

Routing's `test` of a creation filter stands in for its apply only when that is provably safe;
`$valueNamed('<literal>')` is read from a variable bound beforehand.
"""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_engine.core import expressions
from srvthreds_engine.core.expressions import (
    Bindings,
    Expression,
    ExpressionError,
    reads_event_content_only,
)
from tests.srvthreds_engine.driver import Driver, titles
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say

INDEPENDENT = [
    "$event.type = 'start'",
    "$data.x > 3 and $contains($event.type, 'a')",
    "$event.type in ['a', 'b'] ? true : false",
    "-$values.n < 0",
    "$data",
]
DEPENDENT = [
    "$event",
    "$event.thredId",
    "$thredId",
    "event.type",
    "$",
    "$$.event.type",
    "$now() > 1",
    "$local('x')",
    "$setLocal('a', 1)",
    "$event.type = 'x' and $log(1)",
    "$valueNamed('n') = 1",
    "$event.data.content.values[n > 1]",
    "$event[0].type",
    "$event.*",
    "$event.**.thredId",
    "($x := 1; $x)",
    "$string($event)",
    "$keys($event.data)",
    "$eval('$thredId')",
    "%.x",
]


@pytest.mark.parametrize("text", INDEPENDENT)
def test_pure_reads_of_the_event_count_as_independent(text: str) -> None:
    assert reads_event_content_only(text), text


@pytest.mark.parametrize("text", DEPENDENT)
def test_anything_that_may_see_the_thred_or_have_effects_counts_as_dependent(text: str) -> None:
    assert not reads_event_content_only(text), text


def count_evaluations(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts: dict[str, int] = {}
    original = expressions.Expression.evaluate

    def counting(self: expressions.Expression, bindings: expressions.Bindings) -> Any:
        counts[self.text] = counts.get(self.text, 0) + 1
        return original(self, bindings)

    monkeypatch.setattr(expressions.Expression, "evaluate", counting)
    return counts


async def test_an_independent_creation_filter_is_evaluated_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = Driver(pattern({"condition": {"type": "filter", "xpr": is_type("go"), **say("ok")}}))
    counts = count_evaluations(monkeypatch)
    output = await driver.send(event("e1", "go"))
    assert titles(output) == ["ok"]
    assert counts[is_type("go")] == 1


async def test_a_filter_reading_the_thred_id_is_applied_again_after_rebinding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unbound, $thredId is undefined, so `test` passes; once rebound the filter fails.
    xpr = "$event.type = 'go' and $not($exists($thredId))"
    driver = Driver(pattern({"condition": {"type": "filter", "xpr": xpr, **say("ok")}}))
    counts = count_evaluations(monkeypatch)
    output = await driver.send(event("e1", "go"))
    assert titles(output) == []
    assert counts[xpr] == 2


LOOKUPS = [
    "$valueNamed('n')",
    "$valueNamed('n') + 1",
    "$valueNamed('n').a",
    "$valueNamed('n')[0]",
    "$type($valueNamed('n'))",
    "[$valueNamed('n'), $valueNamed(\"m\")]",
    "{'k': $valueNamed('n')}",
    "$exists($valueNamed('missing'))",
]
VALUES: list[Any] = [5, [5], [1, 2], [], {"a": 1}, False, 0, "", [[1], [2]], [{"a": 1}], None]


def outcome(expression: Expression, event_: dict[str, Any]) -> tuple[str, Any]:
    """The result, or the evaluator's complaint (the same error either way)."""
    try:
        return "value", expression.evaluate(Bindings(event_))
    except ExpressionError as exc:
        return "error", exc.problem


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("text", LOOKUPS)
def test_a_literal_lookup_read_from_a_variable_gives_what_the_wrapper_gives(
    text: str, value: Any
) -> None:
    values = {"n": value, "nested": {"m": "deep"}}
    event_ = {
        "id": "e",
        "type": "t",
        "source": {"id": "c"},
        "data": {"content": {"values": values}},
    }
    rewritten = Expression(text)
    assert rewritten._looked_up
    # Spelled with the second argument, the same call takes the general (wrapper) path.
    general = Expression(text.replace("')", "', $event)").replace('")', '", $event)'))
    assert not general._looked_up
    assert outcome(rewritten, event_) == outcome(general, event_)


@pytest.mark.parametrize(
    "text",
    [
        "$valueNamed('n') & \"$valueNamed('x')\"",
        "($valueNamed := function($n) { 1 }; $valueNamed('n'))",
        "$eval(\"$valueNamed('n')\")",
        "$valueNamed('n', $event)",
    ],
)
def test_lookups_that_are_not_plainly_literal_calls_are_left_alone(text: str) -> None:
    assert not Expression(text)._looked_up


@pytest.mark.parametrize("text", ["$event.type = 'x'", ' $event.kind="x" ', "$event.type = ''"])
@pytest.mark.parametrize("value", ["x", "y", "", None, ["x"], {"a": 1}, 5, True, "absent"])
def test_a_field_equals_literal_filter_gives_what_the_evaluator_gives(
    text: str, value: Any
) -> None:
    event_: dict[str, Any] = {"id": "e", "source": {"id": "c"}}
    if value != "absent":
        event_["type"] = event_["kind"] = value
    shortcut = Expression(text)
    assert shortcut._field_equals is not None
    # In parentheses the same filter is not recognised, so it goes through the evaluator.
    general = Expression(f"({text})")
    assert general._field_equals is None
    assert outcome(shortcut, event_) == outcome(general, event_)


@pytest.mark.parametrize(
    "text", ["$event.source.id", "'a ' & $event.id", "'x&y' & $event.source.id & \"!\""]
)
@pytest.mark.parametrize(
    "source", [{"id": "c"}, {"id": ""}, {"id": 5}, {"id": None}, {"id": ["c"]}, {}, "c", None]
)
def test_a_join_of_literals_and_event_paths_gives_what_the_evaluator_gives(
    text: str, source: Any
) -> None:
    event_: dict[str, Any] = {"id": "e1", "type": "t"}
    if source is not None:
        event_["source"] = source
    shortcut = Expression(text)
    assert shortcut._joined is not None
    general = Expression(f"({text})")
    assert general._joined is None
    assert outcome(shortcut, event_) == outcome(general, event_)
