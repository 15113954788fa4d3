"""hack/sync-crds.sh copies crds/ into the chart and the kustomize base, pruning stale copies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.delivery.support import REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "sync-crds.sh"
TARGETS = ("charts/srvthreds-operator/crds", "manifests/base/crds")


def _fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "hack").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "hack" / "sync-crds.sh")
    (tmp_path / "crds").mkdir()
    return tmp_path


def _sync(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "hack" / "sync-crds.sh")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def test_copies_every_crd_and_removes_stale_ones(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    (repo / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition # a\n")
    stale = repo / TARGETS[0] / "renamed.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("old\n")
    result = _sync(repo)
    assert result.returncode == 0, result.stderr
    for target in TARGETS:
        copies = sorted(p.name for p in (repo / target).iterdir())
        assert copies == ["a.yaml"], target
        assert (repo / target / "a.yaml").read_text() == "kind: CustomResourceDefinition # a\n"


def test_fails_clearly_without_generated_crds(tmp_path: Path) -> None:
    result = _sync(_fake_repo(tmp_path))
    assert result.returncode == 1
    assert "run 'make crds'" in result.stderr
