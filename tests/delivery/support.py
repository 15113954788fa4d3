"""Shared helpers of the delivery tests: repository paths, YAML loading, helm and kubectl runs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "srvthreds-operator"
MANIFESTS_BASE = REPO_ROOT / "manifests" / "base"
MANIFESTS_NAMESPACED = REPO_ROOT / "manifests" / "overlays" / "namespaced"
CRDS_DIR = REPO_ROOT / "crds"
CRD_FILE = "srvthreds.io_srvthredsclusters.yaml"
ASSETS_DIR = REPO_ROOT / "operator" / "srvthreds_operator" / "assets"
MONITORING_DIR = REPO_ROOT / "monitoring"
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
RELEASE_NAMESPACE = "srvthreds-system"

Manifest = dict[str, Any]

# Every metric the engine and the operator export; dashboards and alerts may use no other.
ENGINE_METRICS = frozenset({
    "srvthreds_events_processed_total",
    "srvthreds_active_threds",
    "srvthreds_queue_depth",
    "srvthreds_event_processing_seconds",
    "srvthreds_thred_creations_skipped_total",
})  # fmt: skip
OPERATOR_METRICS = frozenset({
    "srvthreds_operator_reconciles_total",
    "srvthreds_operator_reconcile_duration_seconds",
    "srvthreds_operator_clusters",
    "srvthreds_operator_watch_staleness_seconds",
    "srvthreds_operator_api_writes_total",
    "srvthreds_operator_leader",
})  # fmt: skip


class ToolMissingError(RuntimeError):
    """A binary the test needs is not installed: the message says how to get it."""


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a file, each required to be a mapping."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise TypeError(f"{path}: document {index} is a {type(doc).__name__}, not a mapping")
    return documents


def parse_stream(text: str, *, source: str) -> list[Manifest]:
    """Mappings of a rendered YAML stream (helm template, kubectl kustomize)."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise TypeError(f"{source}: document {index} is not a Kubernetes object: {doc!r:.200}")
    return documents


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """The manifests of one kind."""
    return [m for m in manifests if m.get("kind") == kind]


def find_helm() -> Path:
    """helm from $HELM, the build cache (hack/build-tools.sh helm), KUBEBUILDER_ASSETS or PATH."""
    candidates: list[Path] = []
    if configured := os.environ.get("HELM"):
        candidates.append(Path(configured))
    cache = Path(os.environ.get("SRVTHREDS_CACHE", Path.home() / ".cache" / "srvthreds"))
    candidates.append(cache / "helm" / _pinned_version("HELM_VERSION") / "bin" / "helm")
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(assets) / "helm")
    if on_path := shutil.which("helm"):
        candidates.append(Path(on_path))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ToolMissingError(
        "helm is not installed; looked in: "
        + ", ".join(str(c) for c in candidates)
        + ". Build it with `hack/build-tools.sh helm` (or `make tools`), or set HELM=/path/to/helm."
    )


def find_kubectl() -> Path:
    """kubectl beside the running Python (the venv's PyPI wheel), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if os.access(beside, os.X_OK):
        return beside
    if on_path := shutil.which("kubectl"):
        return Path(on_path)
    raise ToolMissingError("kubectl not found beside the Python interpreter nor on PATH")


def _pinned_version(key: str) -> str:
    for line in (REPO_ROOT / "hack" / "versions.env").read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip().strip('"')
    raise KeyError(f"hack/versions.env has no {key}")


def run_tool(argv: list[str], *, what: str) -> str:
    """Runs a command and returns its stdout; a failure raises with the command and stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise AssertionError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{result.stderr.strip()}"
        )
    return result.stdout


def helm_template(*, sets: list[str] | None = None) -> str:
    """`helm template` of the chart (with CRDs) in the release namespace, `--set` each item."""
    argv = [str(find_helm()), "template", "srvthreds-operator", str(CHART_DIR)]
    argv += ["--namespace", RELEASE_NAMESPACE, "--include-crds"]
    for item in sets or []:
        argv += ["--set", item]
    return run_tool(argv, what="helm template")


def kustomize(folder: Path) -> list[Manifest]:
    """`kubectl kustomize` of a folder, parsed."""
    text = run_tool([str(find_kubectl()), "kustomize", str(folder)], what="kubectl kustomize")
    return parse_stream(text, source=f"kubectl kustomize {folder}")


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload that carries a pod template."""
    for manifest in manifests:
        kind = manifest.get("kind")
        spec = manifest.get("spec") or {}
        where = f"{kind}/{manifest.get('metadata', {}).get('name')}"
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield where, spec["template"]["spec"]
        elif kind == "CronJob":
            yield where, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield where, spec


def parse_operator_args(args: list[str]) -> argparse.Namespace:
    """The container args as the real `srvthreds-operator` CLI parses them."""
    from srvthreds_operator.cli import build_parser

    try:
        return build_parser().parse_args(args)
    except SystemExit as exit_:  # argparse reports bad arguments by exiting
        raise AssertionError(f"srvthreds-operator refuses the args {args}") from exit_
