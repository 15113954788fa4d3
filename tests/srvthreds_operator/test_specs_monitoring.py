"""The opt-in monitoring objects and the assets they are made of."""

from __future__ import annotations

import json

from srvthreds_operator import assets
from tests.srvthreds_operator.helpers import children, find, names

MONITORING = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
        "grafanaDashboard": {"enabled": True, "labels": {"team": "x"}},
    }
}


def test_nothing_opt_in_is_built_by_default():
    built = children()
    assert names(built, "ServiceMonitor") == []
    assert names(built, "PrometheusRule") == []
    assert "demo-dashboard" not in names(built, "ConfigMap")
    assert "demo-metrics" not in names(built, "Service")


def test_service_monitor_scrapes_the_metrics_service_with_the_alert_labels():
    built = children(MONITORING)
    monitor = find(built, "ServiceMonitor", "demo-srvthreds")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "15s",
    )
    targets = {item["targetLabel"] for item in endpoint["relabelings"]}
    assert targets == {"srvthreds_instance", "srvthreds_component"}
    service = find(built, "Service", "demo-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"]["srvthreds.io/role"] == "app"


def test_prometheus_rule_carries_the_engine_alerts_for_this_instance():
    rule = find(children(MONITORING), "PrometheusRule", "demo-srvthreds")
    groups = rule["spec"]["groups"]
    assert groups
    text = json.dumps(groups)
    assert "__INSTANCE__" not in text
    assert "__NAMESPACE__" not in text
    assert 'srvthreds_instance=\\"demo\\"' in text or 'srvthreds_instance="demo"' in text


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar():
    dashboard = find(children(MONITORING), "ConfigMap", "demo-dashboard")
    labels = dashboard["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"
    assert labels["team"] == "x"
    (content,) = dashboard["data"].values()
    parsed = json.loads(content)
    assert parsed["title"] == "SrvThreds engine ns/demo"


def test_assets_substitute_the_placeholders():
    groups = assets.alert_rule_groups(namespace="a", instance="b")
    assert all("rules" in group for group in groups)
    assert "__INSTANCE__" not in assets.dashboard_json(namespace="a", instance="b")
