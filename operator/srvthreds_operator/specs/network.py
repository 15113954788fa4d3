"""Builders of the NetworkPolicies: deny everything, then allow exactly what the instance needs."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

from srvthreds_operator import model
from srvthreds_operator.model import BrokerName, SrvThredsCluster
from srvthreds_operator.specs import common
from srvthreds_operator.specs.apps import APP_ROLE_LABEL
from srvthreds_operator.specs.brokers import INTRA_CLUSTER_PORTS
from srvthreds_operator.specs.common import APP_PORT, SESSION_PORT, Manifest
from srvthreds_operator.specs.inputs import ReconcileInputs

BACKUP_COMPONENT = "backup"
DNS_PORT = 53
HTTPS_PORT = 443


def _policy(
    cluster: SrvThredsCluster,
    *,
    name: str,
    pod_selector: dict[str, Any],
    inputs: ReconcileInputs,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> Manifest:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(
            cluster,
            name=f"{cluster.name}-{name}",
            component="network-policy",
            owner_uid=inputs.owner_uid,
        ),
        "spec": spec,
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _pods(cluster: SrvThredsCluster, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": common.selector_labels(cluster, component)}}


def _apps(cluster: SrvThredsCluster) -> dict[str, Any]:
    return {"matchLabels": common.instance_selector(cluster) | {APP_ROLE_LABEL: "app"}}


def build_default_deny(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-default-deny`: no ingress, no egress for any pod of the instance."""
    selector = {"matchLabels": common.instance_selector(cluster)}
    return _policy(
        cluster, name="default-deny", pod_selector=selector, inputs=inputs, ingress=[], egress=[]
    )


def build_allow_dns(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-allow-dns`: UDP and TCP 53 to the cluster DNS pods (kube-dns/CoreDNS) anywhere."""
    dns_pods = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    ports = [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]
    return _policy(
        cluster,
        name="allow-dns",
        pod_selector={"matchLabels": common.instance_selector(cluster)},
        inputs=inputs,
        egress=[{"to": [dns_pods], "ports": ports}],
    )


def broker_egress_rule(cluster: SrvThredsCluster, broker: BrokerName) -> dict[str, Any]:
    """Egress to one broker: its pods when managed, the configured peers (or anywhere) when not."""
    spec = cluster.broker(broker)
    external = spec.external
    if spec.mode == "External" and external is not None:
        port = external.port or model.BROKER_PORTS[broker]
        rule: dict[str, Any] = {"ports": _tcp(port)}
        if external.egress_to:
            rule["to"] = copy.deepcopy(external.egress_to)
        return rule
    return {"to": [_pods(cluster, broker)], "ports": _tcp(model.BROKER_PORTS[broker])}


def build_allow_apps_egress(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-allow-apps-to-brokers`: the apps reach each broker port, nothing else."""
    return _policy(
        cluster,
        name="allow-apps-to-brokers",
        pod_selector=_apps(cluster),
        inputs=inputs,
        egress=[broker_egress_rule(cluster, broker) for broker in model.BROKERS],
    )


def build_allow_broker(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-allow-<broker>`: apps and backup Jobs in; the broker's own members in and out."""
    clients = [{"podSelector": _apps(cluster)}, _pods(cluster, BACKUP_COMPONENT)]
    ingress = [{"from": clients, "ports": _tcp(model.BROKER_PORTS[broker])}]
    egress: list[dict[str, Any]] = []
    intra = INTRA_CLUSTER_PORTS[broker]
    if intra:
        members = [_pods(cluster, broker)]
        ingress.append({"from": members, "ports": _tcp(*intra)})
        egress.append({"to": members, "ports": _tcp(*intra)})
    return _policy(
        cluster,
        name=f"allow-{broker}",
        pod_selector={"matchLabels": common.selector_labels(cluster, broker)},
        inputs=inputs,
        ingress=ingress,
        egress=egress,
    )


def build_allow_session_ingress(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-allow-session-agent-ingress`: the configured peers reach the session port."""
    peers = copy.deepcopy(cluster.spec.network_policy.ingress_from or [])
    return _policy(
        cluster,
        name="allow-session-agent-ingress",
        pod_selector={"matchLabels": common.selector_labels(cluster, "session-agent")},
        inputs=inputs,
        ingress=[{"from": peers, "ports": _tcp(SESSION_PORT)}],
    )


def build_allow_prometheus(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-allow-prometheus`: scrapes of the apps' metrics port from any namespace."""
    return _policy(
        cluster,
        name="allow-prometheus",
        pod_selector=_apps(cluster),
        inputs=inputs,
        ingress=[{"from": [{"namespaceSelector": {}}], "ports": _tcp(APP_PORT)}],
    )


def s3_port(endpoint: str | None) -> int:
    """The port of the S3 endpoint (443 for AWS or an https URL without a port)."""
    if endpoint is None:
        return HTTPS_PORT
    parts = urlsplit(endpoint)
    return parts.port or (80 if parts.scheme == "http" else HTTPS_PORT)


def build_allow_backup(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-allow-backup`: backup Jobs reach the brokers and the object store."""
    destination = cluster.spec.backup.destination
    endpoint = destination.s3.endpoint if destination is not None else None
    egress = [broker_egress_rule(cluster, broker) for broker in ("mongodb", "redis")]
    egress.append({"ports": _tcp(s3_port(endpoint))})
    return _policy(
        cluster,
        name="allow-backup",
        pod_selector={"matchLabels": common.selector_labels(cluster, BACKUP_COMPONENT)},
        inputs=inputs,
        egress=egress,
    )


def monitoring_on(cluster: SrvThredsCluster) -> bool:
    """Something scrapes the apps: annotations or a ServiceMonitor."""
    monitoring = cluster.spec.monitoring
    return monitoring.scrape_annotations or monitoring.service_monitor.enabled


def build_network_policies(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    """Every NetworkPolicy of the instance (none when disabled)."""
    if not cluster.spec.network_policy.enabled:
        return []
    policies = [
        build_default_deny(cluster, inputs=inputs),
        build_allow_dns(cluster, inputs=inputs),
        build_allow_apps_egress(cluster, inputs=inputs),
    ]
    policies += [
        build_allow_broker(cluster, broker=broker, inputs=inputs)
        for broker in cluster.managed_brokers()
    ]
    if cluster.spec.network_policy.ingress_from:
        policies.append(build_allow_session_ingress(cluster, inputs=inputs))
    if monitoring_on(cluster):
        policies.append(build_allow_prometheus(cluster, inputs=inputs))
    if cluster.spec.backup.enabled:
        policies.append(build_allow_backup(cluster, inputs=inputs))
    return policies
