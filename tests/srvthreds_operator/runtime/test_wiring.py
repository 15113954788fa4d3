"""kopf wiring: only stateless watch handlers (no finalizer), login, tuned settings, heartbeats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import watching

from srvthreds_operator.dispatcher import Dispatcher
from srvthreds_operator.handlers import build_registry, login
from srvthreds_operator.health import WatchHeartbeats
from srvthreds_operator.reconcile import Reconciler
from srvthreds_operator.runner import install_watch_heartbeats
from srvthreds_operator.settings import RuntimeSettings, tune_kopf

from .fakes import FakeBlueprint, FakeKube


def registry() -> kopf.OperatorRegistry:
    blueprint = FakeBlueprint()
    reconciler = Reconciler(kube=FakeKube(), blueprint=blueprint)
    return build_registry(Dispatcher(reconciler=reconciler, blueprint=blueprint))


def test_only_watching_handlers_are_registered_so_no_finalizer_or_annotation_is_written() -> None:
    wired = registry()
    assert wired._changing.get_all_handlers() == []
    assert wired._spawning.get_all_handlers() == []
    ids = {handler.id for handler in wired._watching.get_all_handlers()}
    assert {"cluster", "child-deployments", "child-statefulsets", "configmaps", "secrets"} <= ids
    assert [h.id for h in wired._activities.get_all_handlers()] == ["login"]


def test_kopf_is_tuned_against_the_known_pitfalls() -> None:
    settings = kopf.OperatorSettings()
    tune_kopf(settings)
    assert settings.peering.standalone
    assert settings.posting.level >= 30
    assert settings.watching.inactivity_timeout == 70
    assert isinstance(settings.watching.server_timeout, int)
    assert isinstance(settings.persistence.progress_storage, kopf.StatusProgressStorage)


def test_settings_refuse_nonsense_with_the_option_name() -> None:
    with pytest.raises(ValueError, match="--resync-seconds"):
        RuntimeSettings(resync_seconds=0)
    with pytest.raises(ValueError, match="--log-format"):
        RuntimeSettings(log_format="xml")
    with pytest.raises(ValueError, match="--retry-base-seconds"):
        RuntimeSettings(retry_base_seconds=0)
    with pytest.raises(ValueError, match="--retry-max-seconds"):
        RuntimeSettings(retry_base_seconds=10, retry_max_seconds=5)


def test_login_rereads_the_kubeconfig_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kubeconfig"

    def write(token: str) -> None:
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
            "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
            f"users: [{{name: u, user: {{token: {token}}}}}]\n"
        )

    monkeypatch.setenv("KUBECONFIG", str(config))
    write("first")
    first = login(settings=kopf.OperatorSettings(), logger=None)
    write("second")
    second = login(settings=kopf.OperatorSettings(), logger=None)
    assert first is not None
    assert second is not None
    assert (first.token, second.token) == ("first", "second")


async def test_the_heartbeat_hook_records_every_item_of_a_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Resource:
        plural = "deployments"

    async def fake_watch(**_: Any) -> AsyncIterator[str]:
        for item in ("listed", "bookmark"):
            yield item

    monkeypatch.setattr(watching, "continuous_watch", fake_watch)
    beats: list[str] = []

    class Recorder(WatchHeartbeats):
        def beat(self, kind: str) -> None:
            beats.append(kind)

    install_watch_heartbeats(Recorder())
    wrapped: Any = watching.continuous_watch
    seen = [item async for item in wrapped(resource=Resource())]
    assert seen == ["listed", "bookmark"]
    assert beats == ["deployments", "deployments"]
