"""Every delivery file parses, and the assets, dashboards, compose stack and workflows hold up."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.delivery.support import (
    ASSETS_DIR,
    CHART_DIR,
    ENGINE_METRICS,
    MANIFESTS_BASE,
    MANIFESTS_NAMESPACED,
    MONITORING_DIR,
    OPERATOR_METRICS,
    REPO_ROOT,
    WORKFLOWS_DIR,
    load_documents,
)

OWNED_YAML = sorted([
    REPO_ROOT / "docker-compose.yml",
    *MONITORING_DIR.rglob("*.yaml"),
    *WORKFLOWS_DIR.glob("*.yml"),
    *MANIFESTS_BASE.rglob("*.yaml"),
    *MANIFESTS_NAMESPACED.rglob("*.yaml"),
    CHART_DIR / "Chart.yaml",
    CHART_DIR / "values.yaml",
])  # fmt: skip
OWNED_JSON = sorted([
    ASSETS_DIR / "engine-dashboard.json",
    *MONITORING_DIR.rglob("*.json"),
    CHART_DIR / "values.schema.json",
])  # fmt: skip
DASHBOARDS = sorted([ASSETS_DIR / "engine-dashboard.json", *MONITORING_DIR.rglob("*.json")])
METRIC_NAME = re.compile(r"\bsrvthreds_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GENERATOR = REPO_ROOT / "hack" / "gen_dashboards.py"
PLACEHOLDERS = {"__NAMESPACE__": "team-a", "__INSTANCE__": "orders"}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _metric_names(expressions: list[str]) -> set[str]:
    names = set()
    for expr in expressions:
        for found in METRIC_NAME.findall(expr):
            base = next(
                (found.removesuffix(s) for s in HISTOGRAM_SUFFIXES if found.endswith(s)), found
            )
            names.add(base if base in ENGINE_METRICS | OPERATOR_METRICS else found)
    # Label names that merely start with srvthreds_ are not metrics.
    return names - {"srvthreds_instance", "srvthreds_component"}


def _expressions(path: Path) -> list[str]:
    """The PromQL of an alert file (rule exprs) or a dashboard (target exprs)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        board = json.loads(text)
        return [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    document = yaml.safe_load(text)
    groups = document["groups"] if isinstance(document, dict) else document
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _substituted(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


@pytest.mark.parametrize("path", OWNED_YAML, ids=_relative)
def test_yaml_file_parses(path: Path) -> None:
    assert load_documents(path), f"{_relative(path)} holds no YAML document"


@pytest.mark.parametrize("path", OWNED_JSON, ids=_relative)
def test_json_file_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_engine_alerts_asset_is_a_list_of_rule_groups_after_substitution() -> None:
    path = ASSETS_DIR / "engine-alerts.yaml"
    raw = path.read_text(encoding="utf-8")
    assert "__NAMESPACE__" in raw
    assert "__INSTANCE__" in raw
    groups = yaml.safe_load(_substituted(path))
    assert isinstance(groups, list)
    assert groups
    for group in groups:
        assert set(group) == {"name", "rules"}, group.keys()
        assert "orders" in group["name"], "group names must be unique per instance"
        for rule in group["rules"]:
            _assert_alert_rule(rule)
            assert 'namespace="team-a"' in rule["expr"], rule["alert"]
            assert 'srvthreds_instance="orders"' in rule["expr"], rule["alert"]
    assert "__" not in _substituted(path).replace("__meta_kubernetes", "")


def _assert_alert_rule(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule.keys()
    assert re.fullmatch(r"SrvThreds[A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    assert rule["expr"].count("{") == rule["expr"].count("}"), rule["alert"]


def test_alert_rule_file_has_engine_and_operator_groups() -> None:
    document = yaml.safe_load((MONITORING_DIR / "prometheus" / "srvthreds-alerts.yaml").read_text())
    groups = {group["name"]: group["rules"] for group in document["groups"]}
    assert set(groups) == {"srvthreds-engine", "srvthreds-operator"}
    for rules in groups.values():
        for rule in rules:
            _assert_alert_rule(rule)
    alert_names = [rule["alert"] for rules in groups.values() for rule in rules]
    assert len(alert_names) == len(set(alert_names)), "duplicate alert names"


@pytest.mark.parametrize(
    "path",
    [
        ASSETS_DIR / "engine-alerts.yaml",
        MONITORING_DIR / "prometheus" / "srvthreds-alerts.yaml",
        *DASHBOARDS,
    ],
    ids=_relative,
)
def test_monitoring_uses_only_real_metric_names(path: Path) -> None:
    used = _metric_names(_expressions(path))
    assert used, f"{_relative(path)} queries no srvthreds metric"
    unknown = used - ENGINE_METRICS - OPERATOR_METRICS
    assert not unknown, f"{_relative(path)} uses metrics nobody exports: {sorted(unknown)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=_relative)
def test_dashboard_panels_query_prometheus(path: Path) -> None:
    board = json.loads(path.read_text(encoding="utf-8"))
    assert board["title"]
    assert board["panels"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert METRIC_NAME.search(target["expr"]), (panel["title"], target["expr"])
            assert target["datasource"]["type"] == "prometheus"


def test_dashboard_asset_is_selected_by_the_placeholders() -> None:
    board = json.loads(_substituted(ASSETS_DIR / "engine-dashboard.json"))
    assert board["title"] == "SrvThreds engine team-a/orders"
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert 'namespace="team-a", srvthreds_instance="orders"' in target["expr"]


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_dashboards", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboards_match_their_generator() -> None:
    generator = _load_generator()
    for path, board in generator.dashboards().items():
        assert path.read_text(encoding="utf-8") == generator.render(board), (
            f"{_relative(path)} differs from hack/gen_dashboards.py: "
            "run `python hack/gen_dashboards.py`"
        )


def test_failure_matchers_use_result_values_the_operator_emits() -> None:
    from srvthreds_operator.reconcile import Result

    emitted = {result.value for result in Result} | {"crashed"}
    alerts = (MONITORING_DIR / "prometheus" / "srvthreds-alerts.yaml").read_text(encoding="utf-8")
    matchers = re.findall(r'srvthreds_operator_reconciles_total\{result=~"([^"]+)"\}', alerts)
    assert matchers, "no alert selects failed reconciles"
    for matcher in matchers:
        assert set(matcher.split("|")) <= emitted, matcher
