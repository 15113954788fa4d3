"""Bad input gets a clear answer: too-deep replay lines, RE2 allowedSources, validate = loading."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from srvthreds_engine.apps.cli import main
from srvthreds_engine.apps.replay import Replay
from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.limits import MAX_EVENT_DEPTH, depth_problem
from srvthreds_engine.core.patterns import load_patterns, parse_pattern
from srvthreds_engine.core.sources import regex_matches, regex_problem
from tests.srvthreds_engine.driver import DATA

E0 = {"id": "0", "type": "inbound.event0", "source": {"id": "test.dataset"}}
TRUE = {"type": "filter", "xpr": "true"}


def event_nested(levels: int) -> dict[str, Any]:
    """An event nesting exactly `levels` objects: the event, `data`, then `values` objects."""
    inner: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 3):
        inner = {"values": inner}
    return {"id": "deep", "type": "t", "source": {"id": "s"}, "data": {"content": inner}}


def write_lines(path: Path, *lines: object) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def replay(tmp_path: Path, source: Path) -> int:
    return main(
        [
            "replay",
            "--patterns",
            str(DATA / "transition_test.json"),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.jsonl"),
        ]
    )


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# --- replay: nesting depth -------------------------------------------------------------------


def test_a_replay_line_at_the_depth_limit_is_processed(tmp_path, capsys) -> None:
    source = write_lines(tmp_path / "in.jsonl", E0, event_nested(MAX_EVENT_DEPTH))
    assert replay(tmp_path, source) == 0
    assert stderr_lines(capsys) == []
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_a_too_deep_replay_line_exits_2_with_one_line_naming_input_and_line(
    tmp_path, capsys
) -> None:
    source = write_lines(tmp_path / "in.jsonl", E0, event_nested(MAX_EVENT_DEPTH + 1), E0)
    assert replay(tmp_path, source) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(
        f"srvthreds-engine: {source}: line 2: nested deeper than {MAX_EVENT_DEPTH} levels "
        "at data.content.values.values"
    )
    # The line before was processed and written; nothing after the refused line was.
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_a_replay_line_too_deep_to_parse_exits_2_without_a_traceback(tmp_path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(E0) + "\n" + "[" * 10_000 + "]" * 10_000 + "\n")
    command = [sys.executable, "-m", "srvthreds_engine", "replay", "--patterns"]
    result = subprocess.run(
        [*command, str(DATA / "transition_test.json"), "--input", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"srvthreds-engine: {source}: line 2: nested deeper than {MAX_EVENT_DEPTH} levels"
    ]
    assert len(result.stdout.splitlines()) == 1


async def test_the_depth_limit_leaves_room_for_the_engine_to_serialise_the_event() -> None:
    # The whole event is copied into the outbound message and the stored thred context.
    copier = parse_pattern(
        {
            "name": "Copier",
            "reactions": [
                {
                    "condition": TRUE
                    | {
                        "transform": {"eventDataTemplate": {"copy": "$xpr($event)"}},
                        "publish": {"to": "someone"},
                        "onTrue": {"xpr": "$setLocal('kept', $event)"},
                    }
                },
                {"condition": TRUE},
            ],
        },
        file="<test>",
    )
    record = await Replay([copier]).step(event_nested(MAX_EVENT_DEPTH))
    [message] = record["messages"]
    assert message["event"]["data"]["copy"]["data"] == event_nested(MAX_EVENT_DEPTH)["data"]


def test_depth_problem_counts_objects_and_arrays_and_names_the_path() -> None:
    assert depth_problem({"a": [[1]]}, limit=3) is None
    assert depth_problem({"a": [[[1]]]}, limit=3) == "nested deeper than 3 levels at a[0][0]"
    assert depth_problem([{"k": {}}], limit=2) == "nested deeper than 2 levels at [0].k"
    assert depth_problem("text", limit=0) is None


# --- allowedSources under RE2 ----------------------------------------------------------------


def gatekeeper(allowed: object) -> dict[str, Any]:
    # The second reaction keeps a created thred stored, where the test can see it.
    return {
        "name": "Gate",
        "reactions": [{"allowedSources": allowed, "condition": TRUE}, {"condition": TRUE}],
    }


async def test_a_catastrophic_regex_answers_correctly_for_a_long_source_id() -> None:
    pattern = parse_pattern(gatekeeper(["/^(a+)+$/"]), file="<test>")
    refused = await Replay([pattern]).step(
        {"id": "1", "type": "t", "source": {"id": "a" * 40 + "!"}}
    )
    allowed = await Replay([pattern]).step({"id": "2", "type": "t", "source": {"id": "a" * 40}})
    assert refused["log"] == [{"type": "np", "eventId": "1"}]
    assert [thred["patternId"] for thred in allowed["threds"]] == ["gate"]


def test_regexes_are_searched_ignoring_case() -> None:
    assert regex_matches("^OPS-\\d+$", source_id="ops-12")
    assert regex_matches("team", source_id="the-TEAM-bot")
    assert not regex_matches("^ops$", source_id="ops2")


@pytest.mark.parametrize(
    ("allowed", "path"),
    [
        (["ops", "/(?=admin)adm/"], "reactions[0].allowedSources[1]"),
        ("/^(?!guest)/", "reactions[0].allowedSources"),
        (["/(a)\\1/"], "reactions[0].allowedSources[0]"),
    ],
)
def test_a_regex_re2_does_not_compile_is_a_load_error_naming_file_and_path(
    tmp_path, allowed, path
) -> None:
    file = tmp_path / "gate.json"
    file.write_text(json.dumps(gatekeeper(allowed)), encoding="utf-8")
    with pytest.raises(PatternError) as refused:
        load_patterns([file])
    assert (refused.value.file, refused.value.json_path) == (str(file), path)
    assert "does not compile under RE2" in refused.value.problem


def test_regex_problem_is_none_for_supported_syntax() -> None:
    assert regex_problem("^(?:ops|sre)-[a-z0-9]+\\b") is None
    assert regex_problem("(?P<team>\\w+)@example\\.com$") is None


def test_plain_entries_and_group_references_are_not_regexes(tmp_path) -> None:
    file = tmp_path / "gate.json"
    file.write_text(json.dumps(gatekeeper(["(?=x", "$ops", "/"])), encoding="utf-8")
    assert [pattern.name for pattern in load_patterns([file])] == ["Gate"]


# --- validate refuses exactly what loading refuses -------------------------------------------


def pattern(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "reactions": [{"condition": TRUE}], **extra}


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def duplicate_in_two_files(folder: Path) -> list[Path]:
    return [write(folder / "a.json", pattern("A")), write(folder / "b.json", pattern("a"))]


def duplicate_in_a_list_file(folder: Path) -> list[Path]:
    return [write(folder / "l.json", [pattern("A"), pattern("Other", id="a")])]


def duplicate_through_a_folder(folder: Path) -> list[Path]:
    (folder / "dir").mkdir()
    write(folder / "dir" / "1.json", pattern("One"))
    write(folder / "dir" / "2.json", [pattern("Two"), pattern("one")])
    return [folder / "dir"]


def non_utf8_bytes(folder: Path) -> list[Path]:
    good = write(folder / "good.json", pattern("Good"))
    bad = folder / "latin1.json"
    bad.write_bytes(json.dumps(pattern("Café"), ensure_ascii=False).encode("latin-1"))
    return [good, bad]


def bad_json(folder: Path) -> list[Path]:
    (folder / "bad.json").write_text('{"name": "B", "reactions": [', encoding="utf-8")
    return [folder / "bad.json"]


def unknown_transition_target(folder: Path) -> list[Path]:
    condition = TRUE | {"transition": {"name": "nowhere"}}
    return [write(folder / "t.json", {"name": "T", "reactions": [{"condition": condition}]})]


def bad_regex(folder: Path) -> list[Path]:
    return [write(folder / "r.json", gatekeeper(["/(?<=a)b/"]))]


def too_deep_to_parse(folder: Path) -> list[Path]:
    (folder / "deep.json").write_text("[" * 10_000 + "]" * 10_000, encoding="utf-8")
    return [folder / "deep.json"]


def missing_file(folder: Path) -> list[Path]:
    return [folder / "missing.json"]


def problem_in_second_file_only(folder: Path) -> list[Path]:
    return [write(folder / "1.json", pattern("One")), write(folder / "2.json", {"name": "X"})]


def valid_files(folder: Path) -> list[Path]:
    return [write(folder / "a.json", pattern("A")), write(folder / "l.json", [pattern("B")])]


def same_file_twice(folder: Path) -> list[Path]:
    file = write(folder / "a.json", pattern("A"))
    return [file, file]


CASES: list[Callable[[Path], list[Path]]] = [
    duplicate_in_two_files,
    duplicate_in_a_list_file,
    duplicate_through_a_folder,
    non_utf8_bytes,
    bad_json,
    unknown_transition_target,
    bad_regex,
    too_deep_to_parse,
    missing_file,
    problem_in_second_file_only,
    valid_files,
    same_file_twice,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_validate_exits_2_exactly_when_loading_refuses_and_names_the_same_problem(
    tmp_path, capsys, case
) -> None:
    paths = case(tmp_path)
    load_error: PatternError | None = None
    try:
        load_patterns(paths)
    except PatternError as exc:
        load_error = exc
    status = main(["validate", *map(str, paths)])
    errors = stderr_lines(capsys)
    assert (status == 2) == (load_error is not None)
    if load_error is None:
        assert errors == []
    else:
        # validate names every problem; loading stops at the first, which validate names first.
        assert errors[0] == f"srvthreds-engine: {load_error}"
        assert load_error.file in errors[0]


def test_duplicate_ids_are_named_with_file_and_path(tmp_path, capsys) -> None:
    paths = duplicate_in_two_files(tmp_path) + duplicate_in_a_list_file(tmp_path)
    assert main(["validate", *map(str, paths)]) == 2
    assert stderr_lines(capsys) == [
        f"srvthreds-engine: {paths[1]}: name: duplicate pattern id 'a' (also in {paths[0]})",
        f"srvthreds-engine: {paths[2]}: [0].name: duplicate pattern id 'a' (also in {paths[0]})",
        f"srvthreds-engine: {paths[2]}: [1].id: duplicate pattern id 'a' (also in {paths[0]})",
    ]


def test_a_non_utf8_file_is_named_by_validate_and_by_loading(tmp_path, capsys) -> None:
    good, bad = non_utf8_bytes(tmp_path)
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"{good}: OK (1 pattern)\n"
    assert captured.err == f"srvthreds-engine: {bad}: not UTF-8 text: byte 0xe9 at offset 13\n"
    with pytest.raises(PatternError, match="not UTF-8 text"):
        load_patterns([good, bad])


def test_replay_refuses_a_non_utf8_pattern_file_with_one_line(tmp_path, capsys) -> None:
    _, bad = non_utf8_bytes(tmp_path)
    source = write_lines(tmp_path / "in.jsonl", E0)
    status = main(["replay", "--patterns", str(bad), "--input", str(source)])
    assert status == 2
    assert stderr_lines(capsys) == [
        f"srvthreds-engine: {bad}: not UTF-8 text: byte 0xe9 at offset 13"
    ]
