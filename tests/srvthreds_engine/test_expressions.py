"""JSONata bindings (section 9), template expansion and publish addresses (section 6)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from srvthreds_engine.core.expressions import (
    Bindings,
    ExpressionError,
    compile_expression,
    find_value_named,
    is_truthy,
)
from srvthreds_engine.core.patterns import Publish, Transform
from srvthreds_engine.core.templates import build_event, expand, publish_addresses

EVENT: dict[str, Any] = {
    "id": "e1",
    "type": "t",
    "re": "evtOUT",
    "thredId": "t1",
    "source": {"id": "alice"},
    "data": {
        "title": "Title",
        "advice": {"eventType": "x"},
        "content": {"values": {"a": 1, "list": [{"b": 2}, {"b": 3}]}},
    },
}


def evaluate(text: str, bindings: Bindings | None = None) -> Any:
    return compile_expression(text).evaluate(bindings or Bindings(EVENT, thred_id="thred"))


def test_event_snapshots_are_bound() -> None:
    assert evaluate("$event.id") == "e1"
    assert evaluate("$data.title") == "Title"
    assert evaluate("$advice.eventType") == "x"
    assert evaluate("$content.values.a") == 1
    assert evaluate("$values.a") == 1


def test_variables_an_expression_does_not_name_are_still_reached_through_eval() -> None:
    # Only the named variables are handed to the evaluator, except where `$eval` may name any.
    assert evaluate("$eval('$data.title') & $eval('$values.a')") == "Title1"
    assert evaluate("$exists($content) and $exists($values)") is True
    assert evaluate("$values.a + $count($keys($event))") == 1 + len(EVENT)


def test_host_functions_are_reached_through_eval_too() -> None:
    scope: dict[str, Any] = {}
    bindings = Bindings(EVENT, thred_id="thred", scope=scope)
    assert evaluate("$eval(\"$setLocal('k', 2)\")", bindings) == 2
    assert scope == {"k": 2}
    assert evaluate("$valueNamed('a') + $local('k')", bindings) == 3


def test_bindings_variables_are_built_once_and_shared_by_a_rescoped_copy() -> None:
    bindings = Bindings(EVENT, thred_id="thred", scope={"k": 1})
    first = bindings.variables()
    assert bindings.variables() is first
    probe = bindings.with_scope({"k": 2})
    assert probe.variables() is first
    assert evaluate("$local('k')", probe) == 2
    assert evaluate("$local('k')", bindings) == 1


def test_thred_id_is_the_events_else_the_threds() -> None:
    assert evaluate("$thredId") == "t1"
    unbound = {key: value for key, value in EVENT.items() if key != "thredId"}
    assert evaluate("$thredId", Bindings(unbound, thred_id="thred")) == "thred"


def test_input_document_holds_event_and_context() -> None:
    bindings = Bindings(EVENT, thred_id="thred", scope={"k": 1}, participant_ids=["p"])
    assert evaluate("event.id & context.thredId", bindings) == "e1thred"
    assert evaluate("context.participantIds[0]", bindings) == "p"


def test_set_local_writes_the_thred_scope_and_local_reads_it() -> None:
    scope: dict[str, Any] = {}
    bindings = Bindings(EVENT, thred_id="thred", scope=scope)
    assert evaluate("$setLocal('k', $event.id)", bindings) == "e1"
    assert scope == {"k": "e1"}
    assert evaluate("$local('k') & '!'", bindings) == "e1!"


def test_is_response_for_compares_re_with_the_published_id() -> None:
    yes = Bindings(EVENT, scope={"out_id_ask": "evtOUT"})
    no = Bindings(EVENT, scope={"out_id_ask": "other"})
    assert evaluate("$isResponseFor('ask')", yes) is True
    assert evaluate("$isResponseFor('ask')", no) is False
    assert evaluate("$isResponseFor('never')", yes) is False


def test_value_named_searches_depth_first_and_takes_an_event() -> None:
    assert evaluate("$valueNamed('b')") == 2
    other = {"data": {"content": {"values": [{"z": None}, {"deep": {"z": "found"}}]}}}
    bindings = Bindings(EVENT, scope={"other": other})
    assert evaluate("$valueNamed('z', $local('other'))", bindings) == "found"
    assert evaluate("$valueNamed('missing')") is None


def test_find_value_named_prefers_own_key_before_children() -> None:
    assert find_value_named({"child": {"x": 2}, "x": 1}, name="x") == 1
    assert find_value_named([{"y": 1}, {"x": None}, {"x": 3}], name="x") == 3


def test_log_and_regex_and_construction() -> None:
    assert evaluate("$log('hello')") is None
    assert evaluate("$contains($event.source.id, /ALI/i)") is True
    assert evaluate("{'a': [1, $event.id]}") == {"a": [1, "e1"]}


def test_outbound_event_is_bound_only_for_on_publish() -> None:
    bindings = Bindings(EVENT, outbound_event={"id": "evtX"})
    assert evaluate("$outboundEvent.id", bindings) == "evtX"
    assert evaluate("$outboundEvent") is None


def test_parse_and_evaluation_failures_name_the_expression() -> None:
    with pytest.raises(ExpressionError, match=re.escape("expression '1 +'")):
        compile_expression("1 +")
    with pytest.raises(ExpressionError):
        evaluate("$number('not a number') + $undefinedFunction()")


def test_expressions_are_compiled_once() -> None:
    assert compile_expression("1 + 1") is compile_expression("1 + 1")


def test_truthiness_follows_jsonata() -> None:
    assert not is_truthy(None)
    assert not is_truthy("")
    assert not is_truthy([])
    assert not is_truthy([False, 0])
    assert is_truthy([0, 1])
    assert is_truthy("x")


def test_template_expands_xpr_strings_recursively_and_drops_nulls() -> None:
    bindings = Bindings(EVENT, scope={"next": "$xpr( 'inner ' & $event.id )"})
    template = {
        "title": "$xpr( 'Hi ' & $event.source.id )",
        "plain": "$xpr is only an expression when it ends with a paren",
        "again": "$xpr( $local('next') )",
        "gone": "$xpr( $event.nothing )",
        "list": ["$xpr( 1 + 1 )", "$xpr( $event.nothing )", "x"],
        "$xpr": "$xpr( {'spread': true, 'a': $values.a} )",
    }
    assert expand(template, bindings=bindings) == {
        "title": "Hi alice",
        "plain": "$xpr is only an expression when it ends with a paren",
        "again": "inner e1",
        "list": [2, "x"],
        "spread": True,
        "a": 1,
    }


def test_template_xpr_builds_the_whole_data_and_re_xpr_sets_re() -> None:
    transform = Transform.model_validate(
        {"templateXpr": "{'title': $event.type}", "meta": {"reXpr": "$event.re"}}
    )
    event = build_event(transform, bindings=Bindings(EVENT), thred_id="thred", now_ms=5)
    assert event["data"] == {"title": "t"}
    assert event["re"] == "evtOUT"
    assert event["thredId"] == "thred"
    assert event["time"] == 5


def test_falsy_re_xpr_leaves_re_out() -> None:
    transform = Transform.model_validate({"eventDataTemplate": {}, "meta": {"reXpr": "''"}})
    assert "re" not in build_event(transform, bindings=Bindings(EVENT), thred_id="t", now_ms=0)


def test_publish_to_accepts_a_string_and_flattens_fully() -> None:
    assert publish_addresses(Publish(to="one"), bindings=Bindings(EVENT)) == ["one"]
    publish = Publish.model_validate(
        {"to": ["a", ["b", ["c"]], "$xpr( ['d', ['e']] )", "$xpr( $event.nothing )"]}
    )
    # The original flattened one level only; nested lists are flattened fully here.
    assert publish_addresses(publish, bindings=Bindings(EVENT)) == ["a", "b", "c", "d", "e"]


def test_missing_values_are_undefined_not_null() -> None:
    bindings = Bindings({"id": "e", "type": "t", "source": {"id": "s"}}, scope={"nothing": None})
    assert evaluate("'a' & $local('unset')", bindings) == "a"
    assert evaluate("$exists($local('unset'))", bindings) is False
    assert evaluate("$exists($local('nothing'))", bindings) is True
    assert evaluate("$exists($valueNamed('x'))", bindings) is False
    assert evaluate("$exists($advice) or $exists($values)", bindings) is False
