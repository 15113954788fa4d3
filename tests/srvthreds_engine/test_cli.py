"""The `srvthreds-engine` command: replay (contract), validate and schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srvthreds_engine.apps.cli import main
from tests.srvthreds_engine.driver import DATA

E0 = {"id": "0", "type": "inbound.event0", "source": {"id": "test.dataset"}}


def write_lines(path: Path, *lines: object) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def replay_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "replay",
        "--patterns",
        str(DATA / "transition_test.json"),
        "--sessions",
        str(DATA / "sessions_model.json"),
        "--resolver",
        str(DATA / "resolver_config.json"),
        "--output",
        str(tmp_path / "out.jsonl"),
        *extra,
    ]


def test_replay_writes_one_line_per_input_line(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        E0,
        {"$advance_ms": 5},
        {"$session": {"participantId": "p", "nodeId": "n", "roles": ["admin"]}},
        {"id": "x", "type": "unknown.event", "source": {"id": "unknown"}},
    )
    assert main([*replay_args(tmp_path), "--input", str(source)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["input"] for line in lines] == [
        json.loads(raw) for raw in source.read_text().splitlines()
    ]
    assert set(lines[0]) == {"input", "messages", "threds", "archived", "log"}
    assert lines[0]["messages"][0]["event"]["data"] == {"title": "outbound.event0"}
    assert lines[0]["threds"][0]["startTime"] == 1767225600000
    assert lines[1]["messages"] == []
    assert lines[2]["threds"] == lines[0]["threds"]
    assert lines[3]["log"] == [{"type": "np", "eventId": "x"}]


def test_replay_folder_of_patterns(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        {"id": "r", "type": "org.example.heartbeat", "source": {"id": "sensor-1"}},
    )
    args = [
        "replay",
        "--patterns",
        str(DATA / "workflow"),
        "--sessions",
        str(DATA / "workflow_sessions.json"),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    [line] = [json.loads(text) for text in (tmp_path / "o").read_text().splitlines()]
    assert line["messages"][0]["event"]["data"]["title"] == "Monitoring sensor-1"
    assert line["messages"][0]["to"] == ["olga"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "in.jsonl: line 2: not JSON"),
        ('{"id": "1", "type": "t"}', "in.jsonl: line 2: source: Field required"),
        ('{"$advance_ms": -1}', "in.jsonl: line 2: $advance_ms: must be a non-negative integer"),
        (
            '{"$session": {"nodeId": "n"}}',
            "in.jsonl: line 2: $session: participantId: Field required",
        ),
    ],
)
def test_replay_bad_input_line_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(E0) + "\n" + line + "\n", encoding="utf-8")
    assert main([*replay_args(tmp_path), "--input", str(source)]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert stderr.count("\n") == 1
    # Lines before the fault were written out.
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_replay_invalid_pattern_or_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_pattern = tmp_path / "bad.json"
    bad_pattern.write_text(
        json.dumps({"name": "P", "reactions": [{"condition": {"type": "filter", "xpr": "(("}}]})
    )
    assert main(["replay", "--patterns", str(bad_pattern), "--input", str(bad_pattern)]) == 2
    assert (
        f"{bad_pattern}: reactions[0].condition.xpr: expression does not parse"
        in capsys.readouterr().err
    )
    bad_sessions = tmp_path / "sessions.json"
    bad_sessions.write_text(json.dumps({"groups": [{"participants": []}]}))
    args = [
        "replay",
        "--patterns",
        str(DATA / "transition_test.json"),
        "--sessions",
        str(bad_sessions),
    ]
    assert main(args) == 2
    assert f"{bad_sessions}: groups[0].name: Field required" in capsys.readouterr().err


def test_replay_answers_each_line_before_reading_the_next() -> None:
    command = [
        sys.executable,
        "-m",
        "srvthreds_engine",
        "replay",
        "--patterns",
        str(DATA / "transition_test.json"),
    ]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(E0) + "\n")
        process.stdin.flush()
        first = json.loads(process.stdout.readline())
        thred_id = first["threds"][0]["id"]
        process.stdin.write(
            json.dumps(
                {"id": "1", "type": "inbound.event1", "source": {"id": "s"}, "thredId": thred_id}
            )
            + "\n"
        )
        process.stdin.flush()
        second = json.loads(process.stdout.readline())
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    assert second["messages"][0]["event"]["thredId"] == thred_id
    assert second["threds"][0]["reactionStore"]["reactionName"] == "Transition Test_2"


def test_validate_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "workflow")]) == 0
    assert "10_purchase_request.json: OK (1 pattern)" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "P",
                "reactions": [
                    {"condition": {"type": "filter", "xpr": "1", "transition": {"name": "x"}}}
                ],
            }
        )
    )
    assert main(["validate", str(DATA / "transition_test.json"), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "transition_test.json: OK" in captured.out
    assert (
        f"{bad}: reactions[0].condition.transition.name: unknown transition target 'x'"
        in captured.err
    )


def test_validate_names_every_problem_of_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "P",
                "reactions": [
                    {"name": "a", "condition": {"type": "filter", "xpr": "$event.type = "}},
                    {"name": "a", "condition": {"type": "filter", "xpr": "true"}},
                ],
            }
        )
    )
    assert main(["validate", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any("reactions[0].condition.xpr: expression does not parse" in line for line in lines)
    assert any("duplicate reaction name" in line for line in lines), lines
    assert len(lines) >= 2


def test_schema_command_prints_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main(["schema", "--output", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == printed
