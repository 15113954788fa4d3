"""Translation of dataControl tasks (spec §11) to MongoDB queries, and of results back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from srvthreds_engine.core.errors import TASK_ERROR, EngineError
from srvthreds_engine.core.tasks import (
    TaskPlan,
    plan_task,
    plan_tasks,
    put_result,
    shape_document,
    to_json,
    translate_collector,
    translate_matcher,
    translate_selector,
    translate_update,
)


def fixed_id() -> str:
    return "new-id"


def task(op: str, **params: Any) -> dict[str, Any]:
    return {"op": op, "params": {"type": "Things", **params}}


def plan(op: str, **params: Any) -> TaskPlan:
    return plan_task(task(op, **params), where="tasks[0]", new_id=fixed_id)


def refusal(call: Any) -> EngineError:
    with pytest.raises(EngineError) as caught:
        call()
    assert caught.value.code == TASK_ERROR
    return caught.value


# --- matchers --------------------------------------------------------------------------------


def test_matcher_id_becomes_mongo_id() -> None:
    assert translate_matcher({"id": "a", "id.part": 1}) == {"_id": "a", "_id.part": 1}


def test_matcher_keeps_id_for_records_that_store_it() -> None:
    assert translate_matcher({"id": "a"}, map_id=False) == {"id": "a"}


def test_matcher_re_becomes_case_insensitive_regex() -> None:
    assert translate_matcher({"name": {"$re": "^ab"}}) == {
        "name": {"$regex": "^ab", "$options": "i"}
    }


def test_matcher_comparison_and_membership_operators_pass_through() -> None:
    matcher = {
        "n": {"$gte": 1, "$lt": 5},
        "m": {"$gt": 0, "$lte": 9, "$ne": 3},
        "tag": {"$in": ["a"], "$nin": ["b"]},
    }
    assert translate_matcher(matcher) == matcher


def test_matcher_or_branches_are_translated() -> None:
    matcher = {"$or": [{"id": "a"}, {"name": {"$re": "x"}}]}
    assert translate_matcher(matcher) == {
        "$or": [{"_id": "a"}, {"name": {"$regex": "x", "$options": "i"}}]
    }


def test_matcher_not_is_translated_inside() -> None:
    assert translate_matcher({"name": {"$not": {"$re": "x"}}}) == {
        "name": {"$not": {"$regex": "x", "$options": "i"}}
    }


def test_matcher_literal_object_is_equality_untouched() -> None:
    assert translate_matcher({"meta": {"id": "x", "re": 1}}) == {"meta": {"id": "x", "re": 1}}


def test_no_matcher_matches_everything() -> None:
    assert translate_matcher(None) == {}


def test_invalid_matcher_is_a_task_error_naming_the_path() -> None:
    error = refusal(lambda: plan("get", matcher={"n": {"$where": "1"}}))
    assert "tasks[0].params.matcher.n.$where" in error.message
    assert "unknown operator $where" in error.message


# --- updates ---------------------------------------------------------------------------------


def test_plain_fields_are_set_with_id_as_mongo_id() -> None:
    assert translate_update({"name": "n", "a.b": 2}) == {"$set": {"name": "n", "a.b": 2}}
    assert translate_update({"id": "x"}) == {"$set": {"_id": "x"}}


def test_update_operators_are_mapped() -> None:
    update = translate_update(
        {
            "$add": {"tags": "t"},
            "$push": {"log": "l"},
            "$remove": {"tags": "old"},
            "$now": "modified",
            "$inc": {"n": 1},
            "$min": {"low": 0},
            "$max": {"high": 9},
            "$mul": {"price": 2},
            "title": "x",
        }
    )
    assert update == {
        "$addToSet": {"tags": "t"},
        "$push": {"log": "l"},
        "$pull": {"tags": "old"},
        "$currentDate": {"modified": True},
        "$inc": {"n": 1},
        "$min": {"low": 0},
        "$max": {"high": 9},
        "$mul": {"price": 2},
        "$set": {"title": "x"},
    }


def test_list_values_add_push_and_remove_each_element() -> None:
    update = translate_update({"$add": {"a": [1, 2]}, "$push": {"b": [3]}, "$remove": {"c": [4]}})
    assert update == {
        "$addToSet": {"a": {"$each": [1, 2]}},
        "$push": {"b": {"$each": [3]}},
        "$pull": {"c": {"$in": [4]}},
    }


@pytest.mark.parametrize(
    ("now", "fields"),
    [("at", ["at"]), (["at", "seen"], ["at", "seen"]), ({"at": True}, ["at"])],
)
def test_now_takes_a_field_a_list_or_an_object(now: Any, fields: list[str]) -> None:
    assert translate_update({"$now": now}) == {"$currentDate": dict.fromkeys(fields, True)}


def test_unknown_update_operator_is_refused_with_the_supported_list() -> None:
    error = refusal(lambda: plan("update", values={"$rename": {"a": "b"}}))
    assert "tasks[0].params.values: unknown update operator $rename" in error.message
    assert "$add" in error.message


def test_update_needs_values() -> None:
    error = refusal(lambda: plan("update", matcher={"id": "a"}))
    assert "tasks[0].params.values" in error.message


def test_update_operator_needs_an_object() -> None:
    error = refusal(lambda: translate_update({"$inc": 1}))
    assert "values.$inc: needs an object" in error.message


# --- selectors and collectors ----------------------------------------------------------------


def test_selector_include_and_exclude_become_a_projection() -> None:
    assert translate_selector({"include": ["name", "id"]}) == {"name": 1, "_id": 1}
    assert translate_selector({"exclude": ["secret"]}) == {"secret": 0}
    assert translate_selector({"include": ["name"], "exclude": ["id"]}) == {"name": 1, "_id": 0}
    assert translate_selector(None) is None


def test_selector_cannot_mix_include_and_exclude() -> None:
    error = refusal(lambda: translate_selector({"include": ["a"], "exclude": ["b"]}))
    assert "cannot be combined" in error.message


def test_collector_sort_skip_limit() -> None:
    collector = {"sort": [{"field": "n", "desc": True}, {"field": "id"}], "skip": 2, "limit": 3}
    assert translate_collector(collector) == ([("n", -1), ("_id", 1)], 2, 3)
    assert translate_collector(None) == ([], 0, 0)


@pytest.mark.parametrize("bad", [-1, True, "2", 1.5])
def test_collector_rejects_counts_that_are_not_whole_numbers(bad: Any) -> None:
    error = refusal(lambda: translate_collector({"limit": bad}))
    assert "collector.limit: needs a whole number >= 0" in error.message


def test_collector_sort_needs_field_names() -> None:
    error = refusal(lambda: translate_collector({"sort": [{"desc": True}]}))
    assert "collector.sort[0]" in error.message


# --- plans per op ----------------------------------------------------------------------------


def test_put_maps_id_and_answers_it() -> None:
    put = plan("put", values={"id": "a", "name": "n"})
    assert put.documents == [{"_id": "a", "name": "n"}]
    assert put_result(put) == "a"


def test_put_without_id_gets_a_new_one() -> None:
    put = plan("put", values={"name": "n"})
    assert put.documents == [{"_id": "new-id", "name": "n"}]
    assert put_result(put) == "new-id"


def test_put_of_a_list_answers_every_id() -> None:
    put = plan("put", values=[{"id": "a"}, {"id": "b"}])
    assert put.many
    assert put_result(put) == ["a", "b"]


def test_put_needs_objects() -> None:
    error = refusal(lambda: plan("put", values=[1]))
    assert "tasks[0].params.values: put needs an object" in error.message


def test_get_plan_carries_filter_projection_sort_skip_limit() -> None:
    get = plan(
        "get",
        matcher={"n": {"$gt": 1}},
        selector={"include": ["n"]},
        collector={"sort": [{"field": "n", "desc": True}], "skip": 1, "limit": 2},
    )
    assert (get.collection, get.filter, get.projection) == ("Things", {"n": {"$gt": 1}}, {"n": 1})
    assert (get.sort, get.skip, get.limit) == ([("n", -1)], 1, 2)


def test_upsert_plan_carries_filter_and_update() -> None:
    upsert = plan("upsert", matcher={"id": "a"}, values={"n": 1})
    assert (upsert.filter, upsert.update) == ({"_id": "a"}, {"$set": {"n": 1}})


def test_replace_plan_carries_the_new_document_without_inventing_an_id() -> None:
    replace = plan("replace", matcher={"id": "a"}, values={"n": 2})
    assert replace.documents == [{"n": 2}]


def test_delete_and_count_plans_carry_only_the_filter() -> None:
    assert plan("delete", matcher={"id": "a"}).filter == {"_id": "a"}
    assert plan("count").filter == {}


def test_task_name_is_kept() -> None:
    named = plan_task({"op": "count", "name": "n1", "params": {"type": "T"}}, where="tasks[0]")
    assert named.name == "n1"


def test_options_dbname_selects_the_database() -> None:
    chosen = plan_task(
        {"op": "count", "params": {"type": "T"}, "options": {"dbname": "other"}}, where="tasks[0]"
    )
    assert chosen.database == "other"
    assert plan("count").database is None


@pytest.mark.parametrize("options", [{"dbname": ""}, {"dbname": "a.b"}, {"dbname": 3}, "x"])
def test_options_need_a_usable_database_name(options: Any) -> None:
    error = refusal(
        lambda: plan_task({"op": "count", "params": {"type": "T"}, "options": options}, where="t")
    )
    assert error.message.startswith("t.options")


def test_run_is_refused_clearly() -> None:
    error = refusal(lambda: plan("run"))
    assert "task op 'run' is not supported" in error.message


def test_unknown_op_is_refused_with_the_supported_list() -> None:
    error = refusal(lambda: plan("drop"))
    assert "tasks[0].op: unknown op 'drop'" in error.message
    assert "getOne" in error.message


@pytest.mark.parametrize("name", [None, "", "system.users", "a$b"])
def test_type_must_be_a_usable_collection_name(name: Any) -> None:
    error = refusal(lambda: plan_task({"op": "get", "params": {"type": name}}, where="tasks[0]"))
    assert "tasks[0].params.type" in error.message


def test_task_needs_params() -> None:
    error = refusal(lambda: plan_task({"op": "get"}, where="tasks[3]"))
    assert "tasks[3].params" in error.message


def test_inner_list_is_one_transaction_of_plans() -> None:
    plans = plan_tasks([task("count"), [task("count"), task("delete")]])
    assert isinstance(plans[0], TaskPlan)
    assert isinstance(plans[1], list)
    assert [(inner.op, inner.where) for inner in plans[1]] == [
        ("count", "tasks[1][0]"),
        ("delete", "tasks[1][1]"),
    ]


def test_transactions_do_not_nest_and_are_not_empty() -> None:
    assert "do not nest" in refusal(lambda: plan_tasks([[[task("count")]]])).message
    assert "at least one task" in refusal(lambda: plan_tasks([[]])).message


def test_tasks_must_be_a_list() -> None:
    assert "tasks: must be a list" in refusal(lambda: plan_tasks({"op": "get"})).message


def test_one_bad_task_stops_the_whole_list_before_any_runs() -> None:
    error = refusal(lambda: plan_tasks([task("count"), task("run")]))
    assert error.message.startswith("tasks[1]:")


# --- results ---------------------------------------------------------------------------------


def test_shape_document_maps_mongo_id_back_to_id() -> None:
    assert shape_document({"_id": "a", "n": 1}) == {"id": "a", "n": 1}


def test_shape_document_keeps_a_stored_id_field() -> None:
    assert shape_document({"_id": "a", "id": "a", "n": 1}) == {"id": "a", "n": 1}


def test_dates_become_iso_strings_in_utc() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=1)))
    assert to_json(moment) == "2026-01-02T02:04:05.006Z"
    assert to_json(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000Z"
    # A naive datetime is how PyMongo hands back BSON dates (UTC) unless tz_aware.
    assert to_json(datetime(2026, 1, 2)) == "2026-01-02T00:00:00.000Z"


def test_nested_values_and_driver_types_become_json() -> None:
    class ObjectIdLike:
        def __str__(self) -> str:
            return "65f0"

    document = {"_id": ObjectIdLike(), "a": [{"at": datetime(2026, 1, 1, tzinfo=UTC)}], "t": (1,)}
    assert shape_document(document) == {
        "id": "65f0",
        "a": [{"at": "2026-01-01T00:00:00.000Z"}],
        "t": [1],
    }
