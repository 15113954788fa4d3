"""Offline rendering: the manifests the operator would apply for a SrvThredsCluster."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from srvthreds_operator import model
from srvthreds_operator.specs import (
    Manifest,
    ReconcileInputs,
    build_children,
    placeholder_credentials,
)

RENDER_NOTE = (
    "Generated credentials are rendered as deterministic placeholders (GENERATED-<BROKER>-...): "
    "the live operator generates random values once and keeps them in "
    "<name>-<broker>-credentials. Children carry an owner reference only when the input has "
    "metadata.uid, and pods' config-hash annotations omit the content of referenced "
    "ConfigMaps and Secrets, which render cannot read."
)


def is_cluster(document: Mapping[str, Any]) -> bool:
    """The document is a SrvThredsCluster (other documents in a stream are skipped)."""
    return document.get("kind") == model.KIND


def _check_type(cr: Mapping[str, Any]) -> None:
    if cr.get("kind", model.KIND) != model.KIND:
        raise model.SpecError("kind", f"expected {model.KIND}, got {cr.get('kind')!r}")
    api_version = cr.get("apiVersion", model.API_VERSION)
    if api_version != model.API_VERSION:
        raise model.SpecError("apiVersion", f"expected {model.API_VERSION}, got {api_version!r}")


def render_manifests(cr: Mapping[str, Any]) -> list[Manifest]:
    """Every child the operator would apply for `cr`, in apply order, or SpecError."""
    _check_type(cr)
    cluster = model.parse_cluster(cr)
    inputs = ReconcileInputs(
        owner_uid=cluster.metadata.uid,
        credentials={broker: placeholder_credentials(broker) for broker in model.BROKERS},
    )
    return build_children(cluster, inputs=inputs)


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, so diffs stay readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_stream(manifests: Iterable[Mapping[str, Any]]) -> str:
    """A `---` separated YAML stream with stable key order."""
    return yaml.dump_all(
        [dict(manifest) for manifest in manifests],
        Dumper=_Dumper,
        sort_keys=False,
        explicit_start=True,
        width=100,
        allow_unicode=True,
    )
