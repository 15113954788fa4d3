"""The Dockerfile's targets, the dev compose stack and the CI workflows hold what they promise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.delivery.support import REPO_ROOT, WORKFLOWS_DIR

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
ROLE_TARGETS = ("operator", "engine", "session-agent", "persistence-agent")
STAGE = re.compile(
    r"^FROM\s+(?P<base>\S+)(?:\s+AS\s+(?P<name>\S+))?\s*$", re.MULTILINE | re.IGNORECASE
)
BROKERS = ("redis", "rabbitmq", "mongodb")
APPS = ("engine", "session-agent", "persistence-agent")


def _stages() -> dict[str, str]:
    """Stage name -> the Dockerfile text of that stage."""
    matches = list(STAGE.finditer(DOCKERFILE))
    stages = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(DOCKERFILE)
        stages[match["name"] or f"stage-{index}"] = DOCKERFILE[match.start() : end]
    return stages


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _workflow(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _run_scripts(workflow: dict[str, Any]) -> str:
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return "\n".join(step.get("run", "") for step in steps)


@pytest.mark.parametrize("target", ROLE_TARGETS)
def test_dockerfile_has_a_target_per_role(target: str) -> None:
    assert target in _stages(), f"Dockerfile has no stage named {target!r}"


def _effective_user(stage: str, stages: dict[str, str]) -> str | None:
    """The last USER of a stage, following its FROM chain through earlier stages."""
    text = stages[stage]
    users: list[str] = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    if users:
        return users[-1]
    base = STAGE.match(text.strip())
    assert base is not None
    return _effective_user(base["base"], stages) if base["base"] in stages else None


@pytest.mark.parametrize("target", ROLE_TARGETS)
def test_runtime_images_run_as_a_numeric_non_root_user(target: str) -> None:
    user = _effective_user(target, _stages())
    assert user is not None, f"{target} runs as root (no USER)"
    uid = user.split(":")[0]
    assert uid.isdigit(), f"{target}: USER {user} is not numeric (runAsNonRoot cannot verify it)"
    assert int(uid) != 0


def test_agent_targets_are_the_engine_image_with_their_component() -> None:
    stages = _stages()
    for agent in ("session-agent", "persistence-agent"):
        assert stages[agent].startswith("FROM engine")
        assert f"SRVTHREDS_COMPONENT={agent}" in stages[agent]
        assert "ENTRYPOINT" not in stages[agent], (
            "agents must keep the engine's dispatching entrypoint"
        )


def _entrypoint_script() -> str:
    match = re.search(
        r"^COPY --chmod=0755 <<'EOF' (\S+)\n(.*?)^EOF$", DOCKERFILE, re.MULTILINE | re.DOTALL
    )
    assert match is not None, "the engine stage writes no entrypoint script"
    assert f'ENTRYPOINT ["{match[1]}"]' in _stages()["engine"]
    return match[2]


@pytest.mark.parametrize(
    ("component", "argv"),
    [
        ("", "run --profile /opt/srvthreds/profiles/demo"),
        ("engine", "run --profile /opt/srvthreds/profiles/demo"),
        ("session-agent", "agent session"),
        ("persistence-agent", "agent persistence"),
    ],
)
def test_engine_entrypoint_starts_the_component_named_in_the_environment(
    component: str, argv: str, tmp_path: Path
) -> None:
    result = _run_entrypoint(tmp_path, env={"SRVTHREDS_COMPONENT": component})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"srvthreds-engine {argv}"


def test_engine_entrypoint_passes_explicit_arguments_and_refuses_unknown_components(
    tmp_path: Path,
) -> None:
    explicit = _run_entrypoint(tmp_path, env={}, args=["replay", "script.jsonl"])
    assert explicit.stdout.strip() == "srvthreds-engine replay script.jsonl"
    unknown = _run_entrypoint(tmp_path, env={"SRVTHREDS_COMPONENT": "robot"})
    assert unknown.returncode == 64
    assert "unknown SRVTHREDS_COMPONENT 'robot'" in unknown.stderr
    profile = _run_entrypoint(tmp_path, env={"PROFILE_DIR": "/etc/srvthreds/run-config"})
    assert profile.stdout.strip() == "srvthreds-engine run --profile /etc/srvthreds/run-config"


def _run_entrypoint(
    tmp_path: Path, *, env: dict[str, str], args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the image's entrypoint with /bin/sh, a stub srvthreds-engine echoing its argv."""
    script = tmp_path / "entrypoint"
    script.write_text(_entrypoint_script(), encoding="utf-8")
    stub = tmp_path / "bin" / "srvthreds-engine"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "srvthreds-engine $*"\n', encoding="utf-8")
    stub.chmod(0o755)
    environment = {"PATH": f"{stub.parent}:/usr/bin:/bin", **env}
    return subprocess.run(
        ["/bin/sh", str(script), *(args or [])],
        capture_output=True, text=True, check=False, env=environment, timeout=30,
    )  # fmt: skip


def test_dockerfile_copies_no_secrets_and_fetches_nothing_at_build_time() -> None:
    assert not re.search(r"^ADD\s+https?://", DOCKERFILE, flags=re.MULTILINE)
    assert ".env" not in re.findall(r"^COPY\s+(.*)$", DOCKERFILE, flags=re.MULTILINE)
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignored, ".dockerignore must start from an empty context"
    assert "**/.env" in ignored


def test_compose_redis_has_keyspace_notifications() -> None:
    command = _compose()["services"]["redis"]["command"]
    flag = command.index("--notify-keyspace-events")
    assert set(command[flag + 1]) >= {"K", "A"}


def test_compose_mongodb_is_a_replica_set_initiated_once() -> None:
    services = _compose()["services"]
    assert services["mongodb"]["command"][-3:] == ["--replSet", "rs0", "--bind_ip_all"]
    script = services["mongodb-init"]["entrypoint"][-1]
    assert "rs.initiate" in script
    assert "NotYetInitialized" in script, "init must be idempotent"
    for app in APPS:
        assert "replicaSet=rs0" in services[app]["environment"]["MONGODB_URL"]


@pytest.mark.parametrize("service", [*BROKERS, *APPS])
def test_compose_services_have_real_healthchecks(service: str) -> None:
    check = _compose()["services"][service]["healthcheck"]
    command = " ".join(check["test"])
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert not re.search(r"\b(true|echo|console\.log)\b", command), command
    assert check["retries"] >= 3


@pytest.mark.parametrize("app", APPS)
def test_compose_apps_build_their_target_and_wait_for_healthy_brokers(app: str) -> None:
    service = _compose()["services"][app]
    assert service["build"]["target"] in _stages()
    assert service["build"]["target"] == app
    assert service["environment"]["SRVTHREDS_COMPONENT"] == app
    assert "command" not in service, "the entrypoint picks the process, as in a cluster"
    for broker in BROKERS:
        assert service["depends_on"][broker]["condition"] == "service_healthy"
    assert service["depends_on"]["mongodb-init"]["condition"] == "service_completed_successfully"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]


def test_ci_workflow_runs_make_test_with_python_311_go_and_the_tool_cache() -> None:
    workflow = _workflow("ci.yml")
    steps = workflow["jobs"]["test"]["steps"]
    uses = {step.get("uses", "").split("@")[0]: step for step in steps}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert "actions/setup-go" in uses
    assert uses["actions/cache"]["with"]["path"] == "~/.cache/srvthreds"
    assert ".ci/run" in _run_scripts(workflow)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_e2e_workflow_builds_installs_applies_waits_and_dumps() -> None:
    workflow = _workflow("e2e-kind.yml")
    script = _run_scripts(workflow)
    for target in ROLE_TARGETS:
        assert target in script
    assert "kind create cluster" in script
    assert "kind load docker-image" in script
    assert "helm install srvthreds-operator charts/srvthreds-operator" in script
    assert "manifests/samples/minimal.yaml" in script
    assert "--for=condition=Ready" in script
    steps = workflow["jobs"]["e2e"]["steps"]
    dumps = [s for s in steps if s.get("if") == "failure()" and "kubectl" in s.get("run", "")]
    assert dumps, "no step dumps the cluster state on failure"
