"""Where the local control plane keeps its files, and the pinned tool versions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-tools.sh"


def parse_versions(text: str, *, source: str = "versions.env") -> dict[str, str]:
    """Reads `KEY=value` lines (comments and blank lines ignored) as the build script does."""
    versions: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{source}:{number}: expected KEY=value, got {raw!r}")
        versions[key.strip()] = value.strip().strip('"')
    return versions


def load_versions() -> dict[str, str]:
    """The versions pinned in hack/versions.env."""
    return parse_versions(VERSIONS_FILE.read_text(), source=str(VERSIONS_FILE))


def cache_root() -> Path:
    """The build cache shared by every clone on this machine (`SRVTHREDS_CACHE` overrides)."""
    configured = os.environ.get("SRVTHREDS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "srvthreds"


def use_existing_cluster() -> bool:
    """`USE_EXISTING_CLUSTER=true`: run against the current kubeconfig's cluster instead."""
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() in {"1", "true", "yes"}


def existing_kubeconfig() -> Path:
    """The kubeconfig kubectl would use: the first of `$KUBECONFIG`, else ~/.kube/config."""
    configured = os.environ.get("KUBECONFIG", "")
    return Path(configured.split(os.pathsep)[0]) if configured else Path.home() / ".kube/config"


@dataclass(frozen=True)
class ClusterLayout:
    """The files of one local cluster, all under one state directory (default `<repo>/.cluster`)."""

    root: Path

    @classmethod
    def default(cls) -> ClusterLayout:
        configured = os.environ.get("SRVTHREDS_CLUSTER_DIR")
        return cls(Path(configured).resolve() if configured else REPO_ROOT / ".cluster")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.root / "operator.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / f"{name}.kubeconfig"
