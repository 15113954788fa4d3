"""Loading a profile folder, and the errors that name the faulty file and place."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from srvthreds_engine.apps.embedded import run_embedded
from srvthreds_engine.apps.logging import flush_logging
from srvthreds_engine.apps.profiles import ProfileError, load_profile

DEMO_PROFILE = Path(__file__).resolve().parents[3] / "engine" / "profiles" / "demo"


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    copy = tmp_path / "profile"
    shutil.copytree(DEMO_PROFILE, copy)
    return copy


def test_the_demo_profile_loads() -> None:
    loaded = load_profile(DEMO_PROFILE)
    assert [p.pattern_id for p in loaded.patterns] == ["incident"]
    assert [g.name for g in loaded.sessions_model.groups] == ["oncall", "managers"]
    assert [a.nodeId for a in loaded.resolver_config.agents] == ["pager"]
    assert loaded.engine_config.synchronousMode is True


def test_optional_files_default_when_missing(profile: Path) -> None:
    for name in ("engine.json", "sessions_model.json", "resolver_config.json"):
        (profile / name).unlink()
    loaded = load_profile(profile)
    assert loaded.engine_config.synchronousMode is True
    assert loaded.sessions_model.groups == []


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a profile folder"):
        load_profile(tmp_path / "nowhere")


def test_a_profile_without_patterns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "patterns").mkdir()
    with pytest.raises(ProfileError, match=r"no \*\.json pattern files"):
        load_profile(tmp_path)


def test_a_bad_sessions_model_names_the_file_and_path(profile: Path) -> None:
    (profile / "sessions_model.json").write_text(json.dumps({"groups": [{"name": "g"}, {}]}))
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert "sessions_model.json: groups[1].name: Field required" in str(caught.value)


def test_a_config_that_is_not_json_names_the_file(profile: Path) -> None:
    (profile / "engine.json").write_text("{synchronousMode: yes}")
    with pytest.raises(ProfileError, match=r"engine\.json: not JSON"):
        load_profile(profile)


def test_an_invalid_pattern_names_the_file_and_path(profile: Path) -> None:
    pattern_file = profile / "patterns" / "incident.json"
    pattern = json.loads(pattern_file.read_text())
    pattern["reactions"][1]["condition"]["transition"]["name"] = "nowhere"
    pattern_file.write_text(json.dumps(pattern))
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert "incident.json" in str(caught.value)
    assert "nowhere" in str(caught.value)


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    flush_logging()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_run_without_a_profile_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.delenv("PROFILE_DIR", raising=False)
    assert run_embedded(None) == 2
    assert "pass --profile DIR or set PROFILE_DIR" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_root_logger")
def test_run_with_a_bad_profile_dir_exits_2_naming_it(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("PROFILE_DIR", str(tmp_path / "missing"))
    assert run_embedded(None) == 2
    assert f"{tmp_path / 'missing'}: not a profile folder" in capsys.readouterr().err
