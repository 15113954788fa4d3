"""The operator guide covers every spec field and keeps the heading the runtime docs extend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from srvthreds_operator import crdgen
from tests.srvthreds_operator.helpers import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "operator" / "guide.md"


def _field_names(node: Mapping[str, Any]) -> Iterator[str]:
    for name, child in node.get("properties", {}).items():
        yield name
        target = child.get("items", child) if child.get("type") == "array" else child
        if not target.get("x-kubernetes-preserve-unknown-fields"):
            yield from _field_names(target)


def test_every_spec_field_appears_in_the_guide():
    guide = GUIDE.read_text(encoding="utf-8")
    missing = sorted({name for name in _field_names(crdgen.spec_schema()) if name not in guide})
    assert missing == [], f"fields without an example in the guide: {missing}"


def test_the_guide_keeps_the_operating_heading_and_names_every_condition():
    guide = GUIDE.read_text(encoding="utf-8")
    assert "## Operating the operator" in guide
    for condition in ("Ready", "Progressing", "Degraded", "BrokersReady", "ReconcileSucceeded"):
        assert f"`{condition}`" in guide, condition
