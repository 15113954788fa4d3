"""Finds the control plane's binaries: `KUBEBUILDER_ASSETS` first, then the build cache."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.localcluster.layout import BUILD_SCRIPT, cache_root, load_versions

# binary name -> (build-tools component, cache folder, versions.env key)
_SOURCES: dict[str, tuple[str, str, str]] = {
    "etcd": ("etcd", "etcd", "ETCD_VERSION"),
    "kube-apiserver": ("kube", "k8s", "KUBE_VERSION"),
    "kube-controller-manager": ("kube", "k8s", "KUBE_VERSION"),
    "kube-scheduler": ("kube", "k8s", "KUBE_VERSION"),
    "kwok": ("kwok", "kwok", "KWOK_VERSION"),
}

# The kwok v0.8.0 binary has no built-in stages (it exits with "no stages found"); these ship
# as YAML inside the kwok Go module.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


class MissingBinariesError(RuntimeError):
    """The build script ran but a binary is still missing."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary and kwok stage file the control plane runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_stages: tuple[Path, ...]


def _assets_dir() -> Path | None:
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    return Path(configured) if configured else None


def _candidate(binary: str, versions: dict[str, str]) -> Path:
    assets = _assets_dir()
    if assets is not None and os.access(assets / binary, os.X_OK):
        return assets / binary
    _, folder, key = _SOURCES[binary]
    return cache_root() / folder / versions[key] / "bin" / binary


def _stage_dirs(kwok_version: str) -> list[Path]:
    gomodcache = Path(os.environ.get("GOMODCACHE_OVERRIDE", cache_root() / "go" / "mod"))
    dirs = [cache_root() / "kwok" / kwok_version / "stages"]
    dirs.append(gomodcache / "sigs.k8s.io" / f"kwok@v{kwok_version}" / "kustomize" / "stage")
    assets = _assets_dir()
    if assets is not None:
        dirs.insert(0, assets / "kwok-stages")
    return dirs


def _find_stages(kwok_version: str) -> tuple[Path, ...] | None:
    for folder in _stage_dirs(kwok_version):
        stages = tuple(folder / stage for stage in KWOK_STAGES)
        if all(stage.is_file() for stage in stages):
            return stages
    return None


def _missing_components(versions: dict[str, str]) -> list[str]:
    missing = {
        _SOURCES[name][0] for name in _SOURCES if not os.access(_candidate(name, versions), os.X_OK)
    }
    if _find_stages(versions["KWOK_VERSION"]) is None:
        missing.add("kwok")
    return sorted(missing)


def _run_build(components: list[str]) -> None:
    print(
        f"localcluster: building {', '.join(components)} with {BUILD_SCRIPT} "
        "(cold builds take minutes; progress below)",
        file=sys.stderr,
        flush=True,
    )
    result = subprocess.run(["bash", str(BUILD_SCRIPT), *components], check=False)
    if result.returncode != 0:
        raise MissingBinariesError(
            f"{BUILD_SCRIPT} {' '.join(components)} failed (exit {result.returncode}); "
            f"its logs are in {cache_root() / 'logs'}"
        )


def resolve_binaries(*, build_missing: bool = True) -> Binaries:
    """Paths of every binary, running hack/build-tools.sh for what is missing when allowed."""
    versions = load_versions()
    missing = _missing_components(versions)
    if missing and build_missing:
        _run_build(missing)
        missing = _missing_components(versions)
    if missing:
        raise MissingBinariesError(
            f"missing control-plane binaries for {', '.join(missing)}: run "
            f"`{BUILD_SCRIPT} {' '.join(missing)}` or point KUBEBUILDER_ASSETS at prebuilt ones"
        )
    stages = _find_stages(versions["KWOK_VERSION"])
    if stages is None:
        raise MissingBinariesError(
            f"kwok stage files not found in {_stage_dirs(versions['KWOK_VERSION'])}"
        )
    return Binaries(
        etcd=_candidate("etcd", versions),
        kube_apiserver=_candidate("kube-apiserver", versions),
        kube_controller_manager=_candidate("kube-controller-manager", versions),
        kube_scheduler=_candidate("kube-scheduler", versions),
        kwok=_candidate("kwok", versions),
        kwok_stages=stages,
    )
