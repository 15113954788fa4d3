"""Every desired child of a SrvThredsCluster, in apply order, and the kinds that may be pruned."""

from __future__ import annotations

from srvthreds_operator.model import APP_COMPONENTS, SrvThredsCluster
from srvthreds_operator.specs import apps, backup, brokers, config, monitoring, network
from srvthreds_operator.specs.common import Manifest
from srvthreds_operator.specs.inputs import ReconcileInputs

KindRef = tuple[str, str]
"""(apiVersion, kind)."""

PRUNE_KINDS: tuple[KindRef, ...] = (
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("batch/v1", "CronJob"),
    # Optional: these CRDs exist only where prometheus-operator is installed.
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
)


def prune_kinds() -> list[KindRef]:
    """Every kind the operator may create; children of these kinds no longer desired are deleted."""
    return list(PRUNE_KINDS)


def _foundation(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    children = [
        config.build_service_account(cluster, inputs=inputs),
        config.build_config_map(cluster, inputs=inputs),
    ]
    managed = cluster.managed_brokers()
    if "redis" in managed:
        children.append(config.build_redis_config_map(cluster, inputs=inputs))
    children += [
        config.build_credentials_secret(cluster, broker=broker, inputs=inputs) for broker in managed
    ]
    children.append(config.build_connections_secret(cluster, inputs=inputs))
    return children


def _brokers(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    children: list[Manifest] = []
    for broker in cluster.managed_brokers():
        children += [
            brokers.build_broker_headless_service(cluster, broker=broker, inputs=inputs),
            brokers.build_broker_service(cluster, broker=broker, inputs=inputs),
            brokers.build_broker_statefulset(cluster, broker=broker, inputs=inputs),
        ]
    return children


def _apps(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    children = [
        apps.build_session_agent_headless_service(cluster, inputs=inputs),
        apps.build_session_agent_service(cluster, inputs=inputs),
        apps.build_persistence_agent_deployment(cluster, inputs=inputs),
        apps.build_engine_deployment(cluster, inputs=inputs),
        apps.build_session_agent_statefulset(cluster, inputs=inputs),
    ]
    children += [
        apps.build_hpa(cluster, component=component, inputs=inputs)
        for component in APP_COMPONENTS
        if apps.autoscaled(cluster, component)
    ]
    children += [
        apps.build_pdb(cluster, component=component, inputs=inputs)
        for component in APP_COMPONENTS
        if apps.wants_pdb(cluster, component)
    ]
    return children


def build_children(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    """Every desired child in apply order: identity and config, policies, brokers, apps, extras.

    Network policies come before any pod so no pod ever runs unrestricted; brokers before the
    apps that connect to them.
    """
    return [
        *_foundation(cluster, inputs=inputs),
        *network.build_network_policies(cluster, inputs=inputs),
        *_brokers(cluster, inputs=inputs),
        *_apps(cluster, inputs=inputs),
        *backup.build_backup_cronjobs(cluster, inputs=inputs),
        *monitoring.build_monitoring(cluster, inputs=inputs),
    ]
