"""Pattern models, defaults and the validation messages of the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.patterns import load_patterns, parse_pattern
from tests.srvthreds_engine.driver import DATA


def filter_node(xpr: str = "true", **directives: Any) -> dict[str, Any]:
    return {"type": "filter", "xpr": xpr, **directives}


def refused(document: Any) -> PatternError:
    with pytest.raises(PatternError) as caught:
        parse_pattern(document, file="p.json")
    return caught.value


def test_pattern_id_defaults_to_lowercased_name_with_underscores() -> None:
    pattern = parse_pattern(
        {"name": "My Big Pattern", "reactions": [{"condition": filter_node()}]}, file="f"
    )
    assert pattern.pattern_id == "my_big_pattern"
    assert pattern.reaction_names == ["My Big Pattern_0"]


def test_explicit_id_and_reaction_names_are_kept() -> None:
    pattern = parse_pattern(
        {
            "name": "P",
            "id": "pid",
            "reactions": [
                {"name": "start", "condition": filter_node()},
                {"condition": filter_node()},
            ],
        },
        file="f",
    )
    assert pattern.pattern_id == "pid"
    assert pattern.reaction_names == ["start", "P_1"]


def test_extra_keys_are_tolerated_like_the_original() -> None:
    pattern = parse_pattern(
        {"name": "P", "editorHint": 1, "reactions": [{"condition": filter_node(), "ui": {}}]},
        file="f",
    )
    assert pattern.model_extra == {"editorHint": 1}


def test_unknown_transition_target_is_refused_with_file_and_path() -> None:
    error = refused(
        {"name": "P", "reactions": [{"condition": filter_node(transition={"name": "nowhere"})}]}
    )
    assert str(error) == (
        "p.json: reactions[0].condition.transition.name: unknown transition target 'nowhere'"
    )


def test_duplicate_reaction_names_are_refused() -> None:
    error = refused(
        {
            "name": "P",
            "reactions": [
                {"name": "a", "condition": filter_node()},
                {"name": "a", "condition": filter_node()},
            ],
        }
    )
    assert error.json_path == "reactions[1].name"
    assert "duplicate reaction name 'a'" in error.problem


def test_auto_name_colliding_with_explicit_name_is_refused() -> None:
    error = refused(
        {
            "name": "P",
            "reactions": [
                {"condition": filter_node()},
                {"name": "P_0", "condition": filter_node()},
            ],
        }
    )
    assert error.json_path == "reactions[1].name"


def test_expression_that_does_not_parse_is_refused_at_its_path() -> None:
    document = {
        "name": "P",
        "reactions": [
            {"condition": filter_node()},
            {"condition": filter_node()},
            {"condition": {"type": "and", "operands": [filter_node("$event.type = ")]}},
        ],
    }
    error = refused(document)
    assert error.json_path == "reactions[2].condition.operands[0].xpr"
    assert error.problem.startswith("expression does not parse")


@pytest.mark.parametrize(
    ("node", "path"),
    [
        (filter_node(onTrue={"xpr": "(("}), "reactions[0].condition.onTrue.xpr"),
        (
            filter_node(transform={"eventDataTemplate": {"a": {"b": "$xpr( 1 + )"}}}),
            "reactions[0].condition.transform.eventDataTemplate.a.b",
        ),
        (
            filter_node(transform={"templateXpr": "{"}),
            "reactions[0].condition.transform.templateXpr",
        ),
        (
            filter_node(transform={"templateXpr": "1", "meta": {"reXpr": "]"}}),
            "reactions[0].condition.transform.meta.reXpr",
        ),
        (filter_node(publish={"to": ["$xpr( [ )"]}), "reactions[0].condition.publish.to[0]"),
        (
            filter_node(publish={"to": "x", "onPublish": {"xpr": "$$$("}}),
            "reactions[0].condition.publish.onPublish.xpr",
        ),
    ],
)
def test_every_expression_place_is_compiled_on_load(node: dict[str, Any], path: str) -> None:
    assert refused({"name": "P", "reactions": [{"condition": node}]}).json_path == path


def test_missing_required_field_is_named() -> None:
    error = refused(
        {
            "name": "P",
            "reactions": [{"condition": {"type": "or", "operands": [{"type": "filter"}]}}],
        }
    )
    assert error.json_path == "reactions[0].condition.operands[0].xpr"
    assert error.problem == "Field required"


def test_missing_name_and_empty_reactions_are_refused() -> None:
    assert refused({"reactions": [{"condition": filter_node()}]}).json_path == "name"
    assert refused({"name": "P", "reactions": []}).json_path == "reactions"


def test_local_input_without_local_name_is_refused() -> None:
    error = refused(
        {
            "name": "P",
            "reactions": [
                {"condition": filter_node(transition={"name": "$next", "input": "local"})}
            ],
        }
    )
    assert error.json_path == "reactions[0].condition.transition.localName"
    error = refused(
        {
            "name": "P",
            "reactions": [{"condition": filter_node(spawn={"names": ["x"], "input": "local"})}],
        }
    )
    assert error.json_path == "reactions[0].condition.spawn.localName"


def test_unknown_condition_type_is_refused() -> None:
    error = refused({"name": "P", "reactions": [{"condition": {"type": "xor", "xpr": "true"}}]})
    assert error.json_path == "reactions[0].condition"


def test_expiry_transition_target_is_checked() -> None:
    error = refused(
        {
            "name": "P",
            "reactions": [
                {
                    "condition": filter_node(),
                    "expiry": {"interval": 5, "transition": {"name": "gone"}},
                }
            ],
        }
    )
    assert error.json_path == "reactions[0].expiry.transition.name"


def test_folder_loads_sorted_json_files_and_list_files(tmp_path: Path) -> None:
    pattern = {"name": "B", "reactions": [{"condition": filter_node()}]}
    (tmp_path / "2.json").write_text(json.dumps(pattern))
    (tmp_path / "1.json").write_text(
        json.dumps([{**pattern, "name": "A"}, {**pattern, "name": "C"}])
    )
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in load_patterns([tmp_path])] == ["A", "C", "B"]


def test_error_in_list_file_names_the_list_index(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(
        json.dumps([{"name": "A", "reactions": [{"condition": filter_node()}]}, {"name": "B"}])
    )
    with pytest.raises(PatternError) as caught:
        load_patterns([tmp_path / "l.json"])
    assert str(caught.value) == f"{tmp_path / 'l.json'}: [1].reactions: Field required"


def test_unreadable_and_non_json_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PatternError, match=r"missing\.json: cannot read"):
        load_patterns([tmp_path / "missing.json"])
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PatternError, match=r"bad\.json: not JSON"):
        load_patterns([tmp_path / "bad.json"])


def test_duplicate_pattern_ids_are_refused(tmp_path: Path) -> None:
    pattern = {"name": "Same", "reactions": [{"condition": filter_node()}]}
    (tmp_path / "a.json").write_text(json.dumps(pattern))
    (tmp_path / "b.json").write_text(json.dumps(pattern))
    with pytest.raises(PatternError, match="duplicate pattern id 'same'"):
        load_patterns([tmp_path])


def test_the_shipped_pattern_set_is_valid() -> None:
    names = [pattern.name for pattern in load_patterns([DATA / "workflow"])]
    assert names == ["Purchase Request", "Purchase Order", "Heartbeat Monitor"]
