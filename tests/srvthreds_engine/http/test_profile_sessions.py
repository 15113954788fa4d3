"""A profile's `sessions.json`: sessions (with roles) that exist from the engine's start."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from srvthreds_engine.adapters.prometheus import EngineMetrics
from srvthreds_engine.apps.embedded import EmbeddedRuntime
from srvthreds_engine.apps.profiles import ProfileError, load_profile
from srvthreds_engine.apps.settings import Settings
from srvthreds_engine.ports import Session

DEMO_PROFILE = Path(__file__).resolve().parents[3] / "engine" / "profiles" / "demo"


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    copy = tmp_path / "profile"
    shutil.copytree(DEMO_PROFILE, copy)
    return copy


def test_the_demo_profile_declares_admin_with_the_admin_role() -> None:
    [admin] = load_profile(DEMO_PROFILE).sessions
    assert (admin.participantId, admin.nodeId, admin.roles) == (
        "admin",
        "org.wt.session",
        ["admin"],
    )


def test_without_sessions_json_there_are_no_sessions(profile: Path) -> None:
    (profile / "sessions.json").unlink()
    assert load_profile(profile).sessions == []


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ({"participantId": "admin"}, "$: Input should be a valid list"),
        ([{"roles": ["admin"]}], "[0].participantId: Field required"),
        ([{"participantId": "a"}, {"participantId": "b", "roles": "admin"}], "[1].roles: "),
        ([{"participantId": "a", "role": ["admin"]}], "[0].role: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_sessions_json_names_the_file_and_path(
    profile: Path, content: object, where: str
) -> None:
    path = profile / "sessions.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ProfileError, match="^" + re.escape(f"{path}: {where}")):
        load_profile(profile)


async def test_the_runtime_registers_the_sessions_at_start(profile: Path) -> None:
    (profile / "sessions.json").write_text(
        json.dumps(
            [
                {"participantId": "admin", "roles": ["admin"]},
                {"participantId": "robot", "nodeId": "org.wt.robot", "roles": []},
            ]
        )
    )
    runtime = EmbeddedRuntime(load_profile(profile), settings=Settings(), metrics=EngineMetrics())
    await runtime.start()
    try:
        assert await runtime.engine.sessions.sessions_for("admin") == [
            Session(participant_id="admin", node_id="org.wt.session", roles=["admin"])
        ]
        assert await runtime.engine.sessions.sessions_for("robot") == [
            Session(participant_id="robot", node_id="org.wt.robot", roles=[])
        ]
        assert await runtime.engine.roles_of("admin") == {"admin"}
    finally:
        await runtime.stop(drain_seconds=1)
