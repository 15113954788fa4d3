"""Every derived child name and label fits Kubernetes' limits for the longest allowed name."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from srvthreds_operator import model
from srvthreds_operator.specs import (
    Manifest,
    ReconcileInputs,
    build_children,
    placeholder_credentials,
)

from .helpers import SAMPLE_NAMES, sample_cluster

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
REVISION_HASH_LENGTH = 10
"""The StatefulSet controller's revision hash: rand.SafeEncodeString of a uint32, <= 10."""
JOB_SUFFIX_DIGITS = 10
"""The CronJob controller names a Job <cronjob>-<scheduled minute>: 11 characters with the dash."""


def labels_in(node: Any) -> Iterator[tuple[str, str]]:
    """(key, value) of every `labels` and `matchLabels` map anywhere in a manifest."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("labels", "matchLabels") and isinstance(value, Mapping):
                yield from ((str(k), str(v)) for k, v in value.items())
            else:
                yield from labels_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from labels_in(item)


def derived_names(manifest: Manifest) -> Iterator[tuple[str, str, int]]:
    """(what, name, limit) of every name Kubernetes derives from this child, itself included."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    yield f"{kind} name", name, 253
    if kind == "Service":
        yield "Service name (DNS-1035 label)", name, 63
    if kind == "StatefulSet":
        last_ordinal = max(int(manifest["spec"].get("replicas", 1)) - 1, 0)
        yield "pod label statefulset.kubernetes.io/pod-name", f"{name}-{last_ordinal}", 63
        revision = f"{name}-{'x' * REVISION_HASH_LENGTH}"
        yield "pod label controller-revision-hash", revision, 63
    if kind == "CronJob":
        yield "CronJob name", name, 52
        yield "Job name (label job-name)", f"{name}-{'1' * JOB_SUFFIX_DIGITS}", 63
    if kind == "Job":
        yield "Job name (label job-name)", name, 63
    if kind == "Deployment":
        yield "ReplicaSet name", f"{name}-{'x' * REVISION_HASH_LENGTH}", 253


def problems(manifests: list[Manifest]) -> list[str]:
    """Every derived name or label value that breaks a Kubernetes limit."""
    found = []
    for manifest in manifests:
        ref = f"{manifest['kind']} {manifest['metadata']['name']}"
        for what, name, limit in derived_names(manifest):
            if len(name) > limit or not SUBDOMAIN.match(name):
                found.append(f"{ref}: {what} {name!r} ({len(name)} > {limit})")
        if manifest["kind"] == "Service" and not DNS_1035_LABEL.match(manifest["metadata"]["name"]):
            found.append(f"{ref}: not a DNS-1035 label")
        for key, value in labels_in(manifest):
            if len(value) > 63 or not LABEL_VALUE.match(value):
                found.append(f"{ref}: label {key}={value!r} ({len(value)} > 63)")
    return found


def children_named(sample: str, name: str) -> list[Manifest]:
    """The sample's children for a cluster of this name (past the model's own name check)."""
    document = copy.deepcopy(sample_cluster(sample))
    document["metadata"]["name"] = "a"
    cluster = model.parse_cluster(document)
    cluster.metadata.name = name
    inputs = ReconcileInputs(
        owner_uid="uid-1",
        credentials={broker: placeholder_credentials(broker) for broker in model.BROKERS},
    )
    return build_children(cluster, inputs=inputs)


LONGEST = "n" * model.MAX_CLUSTER_NAME_LENGTH


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_every_child_of_a_cluster_with_the_longest_allowed_name_fits(sample: str) -> None:
    children = children_named(sample, LONGEST)
    assert children
    assert problems(children) == []


def test_a_cluster_name_one_longer_breaks_a_child_so_the_limit_is_tight() -> None:
    found = problems(children_named("production", LONGEST + "n"))
    assert any("CronJob name" in problem for problem in found), found


@pytest.mark.parametrize("budget", model.NAME_BUDGETS, ids=lambda budget: budget.kind)
def test_each_budget_holds_the_longest_child_name_of_its_kind(budget: model.NameBudget) -> None:
    every = [child for sample in SAMPLE_NAMES for child in children_named(sample, LONGEST)]
    longest = max(len(c["metadata"]["name"]) for c in every if c["kind"] == budget.kind)
    assert longest == len(LONGEST + budget.suffix)


def test_the_limit_is_the_tightest_budget_and_the_message_names_it() -> None:
    assert model.MAX_CLUSTER_NAME_LENGTH == 37
    assert min(b.max_cluster_name for b in model.NAME_BUDGETS) == model.MAX_CLUSTER_NAME_LENGTH
    assert "at most 37 characters" in model.NAME_LIMIT_MESSAGE
    assert "'<name>-backup-mongodb' must fit 52 characters" in model.NAME_LIMIT_MESSAGE
