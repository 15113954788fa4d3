"""The monitoring assets shipped in the package: engine alert rules and the Grafana dashboard."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml

ALERTS_FILE = "engine-alerts.yaml"
DASHBOARD_FILE = "engine-dashboard.json"


@functools.cache
def _text(file_name: str) -> str:
    return (resources.files("srvthreds_operator") / "assets" / file_name).read_text("utf-8")


def _substitute(text: str, *, namespace: str, instance: str) -> str:
    # Names are DNS labels, so plain replacement cannot break the YAML or JSON around them.
    return text.replace("__NAMESPACE__", namespace).replace("__INSTANCE__", instance)


def alert_rule_groups(*, namespace: str, instance: str) -> list[dict[str, Any]]:
    """PrometheusRule.spec.groups for one SrvThredsCluster."""
    groups = yaml.safe_load(_substitute(_text(ALERTS_FILE), namespace=namespace, instance=instance))
    if not isinstance(groups, list):
        raise ValueError(f"{ALERTS_FILE} must hold a list of rule groups")
    return groups


def dashboard_json(*, namespace: str, instance: str) -> str:
    """The Grafana dashboard JSON for one SrvThredsCluster (validated, compactly re-encoded)."""
    text = _substitute(_text(DASHBOARD_FILE), namespace=namespace, instance=instance)
    return json.dumps(json.loads(text), indent=1, sort_keys=True)
