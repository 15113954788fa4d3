"""Builders of test clusters and inputs shared by the operator unit tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from srvthreds_operator import model
from srvthreds_operator.specs import (
    Manifest,
    ReconcileInputs,
    build_children,
    placeholder_credentials,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "manifests" / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLE_NAMES = ("minimal", "production", "external-brokers")


def body(
    spec: Mapping[str, Any] | None = None, *, name: str = "demo", **metadata: Any
) -> dict[str, Any]:
    """A raw SrvThredsCluster object with version 1.0.0 and the given spec fields."""
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": name, "namespace": "ns", **metadata},
        "spec": {"version": "1.0.0", **copy.deepcopy(dict(spec or {}))},
    }


def cluster(spec: Mapping[str, Any] | None = None, **metadata: Any) -> model.SrvThredsCluster:
    """A parsed cluster."""
    return model.parse_cluster(body(spec, **metadata))


def inputs(**overrides: Any) -> ReconcileInputs:
    """Inputs with placeholder credentials for every broker and an owner uid."""
    values: dict[str, Any] = {
        "owner_uid": "uid-1",
        "credentials": {broker: placeholder_credentials(broker) for broker in model.BROKERS},
    }
    values.update(overrides)
    return ReconcileInputs(**values)


def children(spec: Mapping[str, Any] | None = None, **overrides: Any) -> list[Manifest]:
    """build_children of a cluster built from spec."""
    return build_children(cluster(spec), inputs=inputs(**overrides))


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The one manifest of that kind and name."""
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def names(manifests: list[Manifest], kind: str) -> list[str]:
    """Names of the manifests of one kind, in order."""
    return [m["metadata"]["name"] for m in manifests if m["kind"] == kind]


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every pod template among the manifests."""
    for manifest in manifests:
        spec = manifest.get("spec", {})
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            yield manifest["metadata"]["name"], spec["template"]["spec"]
        elif manifest["kind"] == "CronJob":
            yield manifest["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def load_sample(name: str) -> list[dict[str, Any]]:
    """The documents of a sample file."""
    text = (SAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def sample_cluster(name: str) -> dict[str, Any]:
    """The SrvThredsCluster document of a sample."""
    (document,) = [doc for doc in load_sample(name) if doc.get("kind") == model.KIND]
    return document
