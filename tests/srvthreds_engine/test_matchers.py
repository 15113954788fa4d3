"""The MongoDB-style matcher evaluator (spec §11 operators) over JSON documents."""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_engine.core.matchers import InvalidMatcherError, compile_matcher

RECORD = {
    "id": "incident_1",
    "thred": {
        "id": "incident_1",
        "patternId": "incident",
        "status": "t",
        "startTime": 1000,
        "meta": {"label": "Disk Full on DB-1"},
        "childThredIds": ["c1", "c2"],
        "participants": [{"id": "alice", "roles": ["oncall"]}, {"id": "bob", "roles": []}],
        "broadcastAllowed": False,
        "endTime": None,
    },
}


def selects(matcher: Any, document: Any = None) -> bool:
    return compile_matcher(matcher)(RECORD if document is None else document)


def test_an_empty_matcher_selects_everything() -> None:
    assert selects({})


def test_plain_values_compare_for_equality_along_dotted_paths() -> None:
    assert selects({"thred.patternId": "incident"})
    assert not selects({"thred.patternId": "other"})
    assert selects({"thred.meta.label": "Disk Full on DB-1", "id": "incident_1"})
    assert not selects({"thred.meta.label": "Disk Full on DB-1", "id": "incident_2"})


def test_an_object_value_compares_the_whole_object() -> None:
    assert selects({"thred.meta": {"label": "Disk Full on DB-1"}})
    assert not selects({"thred.meta": {"label": "Disk Full on DB-1", "x": 1}})


def test_an_array_field_matches_the_whole_array_or_any_element() -> None:
    assert selects({"thred.childThredIds": "c2"})
    assert selects({"thred.childThredIds": ["c1", "c2"]})
    assert not selects({"thred.childThredIds": ["c2", "c1"]})
    assert not selects({"thred.childThredIds": "c3"})


def test_a_path_walks_through_arrays_of_objects_and_numeric_indexes() -> None:
    assert selects({"thred.participants.id": "bob"})
    assert selects({"thred.participants.roles": "oncall"})
    assert selects({"thred.participants.0.id": "alice"})
    assert not selects({"thred.participants.1.id": "alice"})
    assert not selects({"thred.participants.5.id": "alice"})


def test_null_matches_a_missing_field_and_a_null_one() -> None:
    assert selects({"thred.endTime": None})
    assert selects({"thred.parentThredId": None})
    assert not selects({"thred.patternId": None})


def test_booleans_are_not_numbers() -> None:
    assert selects({"thred.broadcastAllowed": False})
    assert not selects({"thred.broadcastAllowed": 0})
    assert not selects({"flag": True}, {"flag": 1})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"$gt": 999}, True),
        ({"$gt": 1000}, False),
        ({"$gte": 1000}, True),
        ({"$lt": 1001}, True),
        ({"$lt": 1000}, False),
        ({"$lte": 1000}, True),
        ({"$gte": 500, "$lt": 2000}, True),
        ({"$gte": 500, "$lt": 900}, False),
        ({"$gt": "a"}, False),
    ],
)
def test_comparisons(condition: dict[str, Any], expected: bool) -> None:
    assert selects({"thred.startTime": condition}) is expected


def test_comparisons_of_strings_and_of_missing_fields() -> None:
    assert selects({"thred.patternId": {"$gt": "a", "$lt": "j"}})
    assert not selects({"thred.nothing": {"$lt": 5}})


def test_ne_in_and_nin() -> None:
    assert selects({"thred.status": {"$ne": "a"}})
    assert not selects({"thred.status": {"$ne": "t"}})
    assert selects({"thred.parentThredId": {"$ne": "x"}})
    assert selects({"thred.status": {"$in": ["a", "t"]}})
    assert not selects({"thred.status": {"$in": ["a", "f"]}})
    assert selects({"thred.childThredIds": {"$in": ["c9", "c2"]}})
    assert selects({"thred.status": {"$nin": ["a", "f"]}})
    assert not selects({"thred.childThredIds": {"$nin": ["c1"]}})


def test_or_selects_when_any_branch_does() -> None:
    assert selects({"$or": [{"thred.status": "a"}, {"thred.patternId": "incident"}]})
    assert not selects({"$or": [{"thred.status": "a"}, {"thred.patternId": "x"}]})


def test_not_negates_a_field_condition() -> None:
    assert selects({"thred.startTime": {"$not": {"$gt": 5000}}})
    assert not selects({"thred.status": {"$not": {"$in": ["t"]}}})


def test_re_is_a_case_insensitive_unanchored_search() -> None:
    assert selects({"thred.meta.label": {"$re": "disk full"}})
    assert selects({"thred.participants.id": {"$re": "^BO"}})
    assert not selects({"thred.meta.label": {"$re": "^full"}})
    assert not selects({"thred.startTime": {"$re": "1"}})


@pytest.mark.parametrize(
    ("matcher", "message"),
    [
        ("x", "m: a matcher must be an object, not a string"),
        ([], "m: a matcher must be an object, not a list"),
        (
            {"$and": []},
            "m: unknown operator $and at the top of a matcher (supported there: $or)",
        ),
        (
            {"a": {"$eq": 1}},
            "m.a.$eq: unknown operator $eq (supported: $gt, $gte, $in, $lt, $lte, $ne, $nin, "
            "$not, $or, $re)",
        ),
        ({"a": {"$in": "x"}}, "m.a.$in: needs a list, not a string"),
        ({"a": {"$nin": None}}, "m.a.$nin: needs a list, not null"),
        ({"$or": []}, "m.$or: needs a non-empty list of matchers"),
        ({"$or": [{"a": 1}, 2]}, "m.$or[1]: a matcher must be an object, not a number"),
        ({"a": {"$re": 5}}, "m.a.$re: needs a regular expression string"),
        ({"a": {"$re": "(unclosed"}}, "m.a.$re: invalid regular expression '(unclosed'"),
        ({"a": {"$not": 5}}, "m.a.$not: needs an object of operators, e.g. {$in: [...]}"),
        ({"a": {"$gt": 1, "b": 2}}, "m.a: mixes operators and field names in one object"),
    ],
)
def test_an_invalid_matcher_is_refused_naming_where(matcher: Any, message: str) -> None:
    with pytest.raises(InvalidMatcherError) as raised:
        compile_matcher(matcher, where="m")
    assert str(raised.value) == message


def test_an_unknown_operator_is_refused_even_in_a_branch_never_evaluated() -> None:
    with pytest.raises(InvalidMatcherError, match=r"unknown operator \$where"):
        compile_matcher({"$or": [{"id": "incident_1"}, {"id": {"$where": "1"}}]})
