"""Writes the Grafana dashboards (monitoring/grafana/ and the operator's per-instance asset)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENGINE_ASSET = REPO / "operator/srvthreds_operator/assets/engine-dashboard.json"
ENGINE_DASHBOARD = REPO / "monitoring/grafana/srvthreds-engine.json"
OPERATOR_DASHBOARD = REPO / "monitoring/grafana/srvthreds-operator.json"

Panel = dict[str, Any]

# The `result` label values that mean failure: the engine's events end "matched", "no_match",
# "no_thred", "system" or "error"; the operator's passes end "applied", "paused", "invalid"
# (a spec error, shown as phase Failed), "error" or "crashed".
ENGINE_FAILED = 'result="error"'
OPERATOR_FAILED = 'result=~"error|crashed"'

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    title: str,
    *,
    kind: str,
    unit: str,
    grid: tuple[int, int, int, int],
    targets: list[tuple[str, str]],
) -> Panel:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {},
        "targets": [_target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(targets)],
    }


def _engine_panels(sel: str) -> list[Panel]:
    """Panels of the engine dashboard; `sel` is the label matcher of one cluster's pods."""
    events = f"srvthreds_events_processed_total{{{sel}}}"
    latency = f"srvthreds_event_processing_seconds_bucket{{{sel}}}"
    return [
        _panel(
            "Events/s",
            kind="stat",
            unit="ops",
            grid=(0, 0, 6, 4),
            targets=[(f"sum(rate({events}[5m]))", "events/s")],
        ),
        _panel(
            "Failed events",
            kind="stat",
            unit="percentunit",
            grid=(6, 0, 6, 4),
            targets=[
                (
                    f"sum(rate(srvthreds_events_processed_total{{{sel}, {ENGINE_FAILED}}}[5m]))"
                    f" / sum(rate({events}[5m]))",
                    "failed",
                )
            ],
        ),
        _panel(
            "Active threds",
            kind="stat",
            unit="short",
            grid=(12, 0, 6, 4),
            targets=[(f"sum(srvthreds_active_threds{{{sel}}})", "threds")],
        ),
        _panel(
            "p99 processing",
            kind="stat",
            unit="s",
            grid=(18, 0, 6, 4),
            targets=[(f"histogram_quantile(0.99, sum by (le) (rate({latency}[5m])))", "p99")],
        ),
        _panel(
            "Events by result",
            kind="timeseries",
            unit="ops",
            grid=(0, 4, 12, 8),
            targets=[(f"sum by (result) (rate({events}[5m]))", "{{result}}")],
        ),
        _panel(
            "Processing latency",
            kind="timeseries",
            unit="s",
            grid=(12, 4, 12, 8),
            targets=[
                (f"histogram_quantile({q}, sum by (le) (rate({latency}[5m])))", f"p{p}")
                for q, p in (("0.5", "50"), ("0.9", "90"), ("0.99", "99"))
            ],
        ),
        _panel(
            "Queue depth",
            kind="timeseries",
            unit="short",
            grid=(0, 12, 12, 8),
            targets=[(f"max by (queue) (srvthreds_queue_depth{{{sel}}})", "{{queue}}")],
        ),
        _panel(
            "Active threds by pod",
            kind="timeseries",
            unit="short",
            grid=(12, 12, 12, 8),
            targets=[(f"sum by (pod) (srvthreds_active_threds{{{sel}}})", "{{pod}}")],
        ),
        _panel(
            "Thred creations skipped",
            kind="timeseries",
            unit="ops",
            grid=(0, 20, 24, 8),
            targets=[
                (
                    f"sum by (pattern, reason) "
                    f"(rate(srvthreds_thred_creations_skipped_total{{{sel}}}[5m]))",
                    "{{pattern}} ({{reason}})",
                )
            ],
        ),
    ]


def _operator_panels() -> list[Panel]:
    sel = 'namespace=~"$namespace"'
    reconciles = f"srvthreds_operator_reconciles_total{{{sel}}}"
    duration = f"srvthreds_operator_reconcile_duration_seconds_bucket{{{sel}}}"
    return [
        _panel(
            "Clusters by phase",
            kind="stat",
            unit="short",
            grid=(0, 0, 9, 4),
            targets=[(f"sum by (phase) (srvthreds_operator_clusters{{{sel}}})", "{{phase}}")],
        ),
        _panel(
            "Leading replicas",
            kind="stat",
            unit="short",
            grid=(9, 0, 3, 4),
            targets=[(f"sum(srvthreds_operator_leader{{{sel}}})", "leaders")],
        ),
        _panel(
            "Reconcile errors (1h)",
            kind="stat",
            unit="short",
            grid=(12, 0, 6, 4),
            targets=[
                (
                    f"sum(increase(srvthreds_operator_reconciles_total"
                    f"{{{sel}, {OPERATOR_FAILED}}}[1h]))",
                    "errors",
                )
            ],
        ),
        _panel(
            "Max watch staleness",
            kind="stat",
            unit="s",
            grid=(18, 0, 6, 4),
            targets=[(f"max(srvthreds_operator_watch_staleness_seconds{{{sel}}})", "stale")],
        ),
        _panel(
            "Reconciles by result",
            kind="timeseries",
            unit="ops",
            grid=(0, 4, 12, 8),
            targets=[(f"sum by (result) (rate({reconciles}[5m]))", "{{result}}")],
        ),
        _panel(
            "Reconcile duration",
            kind="timeseries",
            unit="s",
            grid=(12, 4, 12, 8),
            targets=[
                (f"histogram_quantile({q}, sum by (le) (rate({duration}[5m])))", f"p{p}")
                for q, p in (("0.5", "50"), ("0.99", "99"))
            ],
        ),
        _panel(
            "Watch staleness by kind",
            kind="timeseries",
            unit="s",
            grid=(0, 12, 12, 8),
            targets=[
                (f"max by (kind) (srvthreds_operator_watch_staleness_seconds{{{sel}}})", "{{kind}}")
            ],
        ),
        _panel(
            "API writes by kind and verb",
            kind="timeseries",
            unit="ops",
            grid=(12, 12, 12, 8),
            targets=[
                (
                    f"sum by (kind, verb) (rate(srvthreds_operator_api_writes_total{{{sel}}}[5m]))",
                    "{{verb}} {{kind}}",
                )
            ],
        ),
    ]


def _variable(name: str, query: str, *, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": False,
        "multi": False,
        "sort": 1,
    }


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
    }


def _dashboard(
    title: str,
    *,
    uid: str | None,
    description: str,
    panels: list[Panel],
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    board: dict[str, Any] = {
        "title": title,
        "description": description,
        "tags": ["srvthreds"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [_datasource_variable(), *variables]},
        "panels": [{**p, "id": i + 1} for i, p in enumerate(panels)],
    }
    if uid is not None:
        board["uid"] = uid
    return board


def dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard this repository ships, by the file it is written to."""
    cluster_sel = 'namespace=~"$namespace", srvthreds_instance=~"$instance"'
    asset_sel = 'namespace="__NAMESPACE__", srvthreds_instance="__INSTANCE__"'
    return {
        ENGINE_DASHBOARD: _dashboard(
            "SrvThreds engine",
            uid="srvthreds-engine",
            description="SrvThreds engine: events, latency, threds, queues.",
            panels=_engine_panels(cluster_sel),
            variables=[
                _variable(
                    "namespace",
                    "label_values(srvthreds_active_threds, namespace)",
                    label="Namespace",
                ),
                _variable(
                    "instance",
                    'label_values(srvthreds_active_threds{namespace=~"$namespace"}, '
                    "srvthreds_instance)",
                    label="SrvThredsCluster",
                ),
            ],
        ),
        ENGINE_ASSET: _dashboard(
            "SrvThreds engine __NAMESPACE__/__INSTANCE__",
            uid=None,
            description=(
                "Per-cluster engine dashboard shipped by the srvthreds operator. The operator "
                "replaces the literal placeholders __NAMESPACE__ and __INSTANCE__ (the "
                "SrvThredsCluster's namespace and name) before writing the dashboard ConfigMap; "
                "series are selected by the labels namespace and srvthreds_instance."
            ),
            panels=_engine_panels(asset_sel),
            variables=[],
        ),
        OPERATOR_DASHBOARD: _dashboard(
            "SrvThreds operator",
            uid="srvthreds-operator",
            description="SrvThreds operator: reconciles, clusters, watches, API writes.",
            panels=_operator_panels(),
            variables=[
                _variable(
                    "namespace",
                    "label_values(srvthreds_operator_clusters, namespace)",
                    label="Operator namespace",
                )
            ],
        ),
    }


def render(board: dict[str, Any]) -> str:
    """The exact text a dashboard file holds (stable, so a test can detect drift)."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main() -> int:
    for path, board in dashboards().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(board), encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
