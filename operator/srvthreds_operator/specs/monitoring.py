"""Builders of the opt-in monitoring objects: ServiceMonitor, PrometheusRule, dashboard."""

from __future__ import annotations

from typing import Any

from srvthreds_operator import assets, model
from srvthreds_operator.model import SrvThredsCluster
from srvthreds_operator.specs import common
from srvthreds_operator.specs.apps import METRICS_COMPONENT, build_metrics_service
from srvthreds_operator.specs.common import Manifest
from srvthreds_operator.specs.inputs import ReconcileInputs

# The alert rules and dashboard select series by these labels (see assets/engine-alerts.yaml).
_RELABELINGS = [
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "srvthreds_instance",
    },
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        "targetLabel": "srvthreds_component",
    },
]


def _meta(
    cluster: SrvThredsCluster,
    *,
    name: str,
    inputs: ReconcileInputs,
    extra_labels: dict[str, str] | None,
) -> dict[str, Any]:
    return common.metadata(
        cluster,
        name=name,
        component="monitoring",
        owner_uid=inputs.owner_uid,
        extra_labels=extra_labels,
    )


def build_service_monitor(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-srvthreds` ServiceMonitor over the metrics Service."""
    monitor = cluster.spec.monitoring.service_monitor
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(
            cluster,
            name=model.component_name(cluster, "srvthreds"),
            inputs=inputs,
            extra_labels=monitor.labels,
        ),
        "spec": {
            "selector": {"matchLabels": common.selector_labels(cluster, METRICS_COMPONENT)},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": monitor.interval,
                    "relabelings": [dict(item) for item in _RELABELINGS],
                }
            ],
        },
    }


def build_prometheus_rule(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-srvthreds` PrometheusRule with the engine alerts."""
    rule = cluster.spec.monitoring.prometheus_rule
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(
            cluster,
            name=model.component_name(cluster, "srvthreds"),
            inputs=inputs,
            extra_labels=rule.labels,
        ),
        "spec": {
            "groups": assets.alert_rule_groups(namespace=cluster.namespace, instance=cluster.name)
        },
    }


def build_dashboard_config_map(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-dashboard`: a ConfigMap the Grafana sidecar picks up by its label."""
    dashboard = cluster.spec.monitoring.grafana_dashboard
    labels = {"grafana_dashboard": "1"} | dict(dashboard.labels or {})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            cluster,
            name=model.component_name(cluster, "dashboard"),
            inputs=inputs,
            extra_labels=labels,
        ),
        "data": {
            f"srvthreds-{cluster.name}.json": assets.dashboard_json(
                namespace=cluster.namespace, instance=cluster.name
            )
        },
    }


def build_monitoring(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    """The opt-in monitoring objects that are enabled."""
    monitoring = cluster.spec.monitoring
    children: list[Manifest] = []
    if monitoring.service_monitor.enabled:
        children += [
            build_metrics_service(cluster, inputs=inputs),
            build_service_monitor(cluster, inputs=inputs),
        ]
    if monitoring.prometheus_rule.enabled:
        children.append(build_prometheus_rule(cluster, inputs=inputs))
    if monitoring.grafana_dashboard.enabled:
        children.append(build_dashboard_config_map(cluster, inputs=inputs))
    return children
