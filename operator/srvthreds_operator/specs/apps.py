"""Builders of the app workloads: engine, session agent, persistence agent and their satellites."""

from __future__ import annotations

import copy
from typing import Any

from srvthreds_operator import model
from srvthreds_operator.model import ComponentName, ComponentSpec, SrvThredsCluster
from srvthreds_operator.specs import common
from srvthreds_operator.specs.common import APP_PORT, SESSION_PORT, Manifest, metadata
from srvthreds_operator.specs.config import (
    PATTERNS_DIR,
    RUN_CONFIG_DIR,
    URL_ENV,
    app_config_data,
    connection_data,
)
from srvthreds_operator.specs.inputs import ReconcileInputs, hash_key, referenced_objects

APP_ROLE_LABEL = "srvthreds.io/role"
METRICS_COMPONENT = "metrics"


def autoscaled(cluster: SrvThredsCluster, component: ComponentName) -> bool:
    """An HPA owns this component's replica count."""
    return cluster.component(component).autoscaling.enabled and not cluster.spec.hibernate


def desired_replicas(cluster: SrvThredsCluster, component: ComponentName) -> int | None:
    """The replicas field of the workload: 0 in hibernate, None (absent) under an HPA."""
    if cluster.spec.hibernate:
        return 0
    if autoscaled(cluster, component):
        return None
    return cluster.component(component).replicas


def broker_url_env(cluster: SrvThredsCluster) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for broker in model.BROKERS:
        spec = cluster.broker(broker)
        if spec.mode == "External" and spec.external is not None:
            ref = {"name": spec.external.secret_ref.name, "key": spec.external.url_key}
        else:
            ref = {"name": model.connections_secret_name(cluster), "key": URL_ENV[broker]}
        env.append({"name": URL_ENV[broker], "valueFrom": {"secretKeyRef": ref}})
    return env


def _identity_env(cluster: SrvThredsCluster, component: ComponentName) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "SRVTHREDS_COMPONENT", "value": component}]
    if component == "session-agent":
        # The pod-index label (Kubernetes >= 1.28) gives each StatefulSet pod its own node id.
        index_path = "metadata.labels['apps.kubernetes.io/pod-index']"
        env += [
            {"name": "NODE_ID_PREFIX", "value": cluster.spec.session_agent.node_id_prefix},
            {"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": index_path}}},
            {"name": "SESSION_PORT", "value": str(SESSION_PORT)},
        ]
    if component == "persistence-agent":
        env.append({"name": "NODE_ID", "value": cluster.spec.persistence_agent.node_id})
    return env


def _user_env(spec: ComponentSpec) -> list[dict[str, Any]]:
    return [variable.model_dump(by_alias=True, exclude_none=True) for variable in spec.env or []]


def _merged_env(
    base: list[dict[str, Any]], overrides: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_name = {item["name"]: item for item in base}
    for item in overrides:
        by_name[item["name"]] = item
    return list(by_name.values())


def _volumes(cluster: SrvThredsCluster) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    config = cluster.spec.config
    for volume, source, path in (
        ("patterns", config.patterns, PATTERNS_DIR),
        ("run-config", config.run_config, RUN_CONFIG_DIR),
    ):
        if source is not None:
            volumes.append({"name": volume, "configMap": {"name": source.config_map_ref.name}})
            mounts.append({"name": volume, "mountPath": path, "readOnly": True})
    return volumes, mounts


def _probes() -> dict[str, Any]:
    def probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe("/health", period=5, failures=60),
        "livenessProbe": probe("/health", period=10, failures=3),
        "readinessProbe": probe("/ready", period=5, failures=3),
    }


def _container(cluster: SrvThredsCluster, component: ComponentName) -> dict[str, Any]:
    spec = cluster.component(component)
    _, mounts = _volumes(cluster)
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": APP_PORT, "protocol": "TCP"}]
    if component == "session-agent":
        ports.append({"name": "session", "containerPort": SESSION_PORT, "protocol": "TCP"})
    env = _identity_env(cluster, component) + broker_url_env(cluster)
    return {
        "name": component,
        "image": common.app_image(cluster),
        "imagePullPolicy": cluster.spec.image.pull_policy,
        "envFrom": [{"configMapRef": {"name": model.config_map_name(cluster)}}],
        "env": _merged_env(env, _user_env(spec)),
        "ports": ports,
        "resources": common.resources(spec.resources, component=component),
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
        **_probes(),
    }


def apps_config_hash(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> str:
    """Hash of everything the app pods read at start: a change rolls them."""
    referenced = {
        hash_key(kind, name): inputs.content_hashes.get(hash_key(kind, name), "")
        for kind, name in referenced_objects(cluster)
    }
    return common.content_hash(
        app_config_data(cluster), connection_data(cluster, inputs=inputs), referenced
    )


def _pod_annotations(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> dict[str, str]:
    annotations = {model.CONFIG_HASH_ANNOTATION: apps_config_hash(cluster, inputs=inputs)}
    if cluster.spec.monitoring.scrape_annotations:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(APP_PORT),
            "prometheus.io/path": "/metrics",
        }
    return annotations


def pod_template(
    cluster: SrvThredsCluster, component: ComponentName, *, inputs: ReconcileInputs
) -> dict[str, Any]:
    """The pod template of an app workload, the user's podTemplate merged over it."""
    spec = cluster.component(component)
    volumes, _ = _volumes(cluster)
    pod: dict[str, Any] = {
        "serviceAccountName": model.service_account_name(cluster),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": common.pod_security_context(),
        "containers": [_container(cluster, component)],
        "volumes": volumes,
        **common.scheduling(cluster, spec.scheduling, component=component),
    }
    if cluster.spec.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in cluster.spec.image.pull_secrets]
    template: dict[str, Any] = {
        "metadata": {
            "labels": common.labels(cluster, component) | {APP_ROLE_LABEL: "app"},
            "annotations": _pod_annotations(cluster, inputs=inputs),
        },
        "spec": pod,
    }
    if spec.pod_template:
        template = common.strategic_merge(template, copy.deepcopy(spec.pod_template))
    return template


def _replicas_field(cluster: SrvThredsCluster, component: ComponentName) -> dict[str, int]:
    replicas = desired_replicas(cluster, component)
    return {} if replicas is None else {"replicas": replicas}


def build_app_deployment(
    cluster: SrvThredsCluster, *, component: ComponentName, inputs: ReconcileInputs
) -> Manifest:
    """The engine or persistence agent Deployment (no replicas field under an HPA)."""
    strategy = cluster.spec.update_strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            cluster,
            name=model.component_name(cluster, component),
            component=component,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            **_replicas_field(cluster, component),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": common.selector_labels(cluster, component)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": strategy.max_surge,
                    "maxUnavailable": strategy.max_unavailable,
                },
            },
            "template": pod_template(cluster, component, inputs=inputs),
        },
    }


def build_engine_deployment(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-engine`."""
    return build_app_deployment(cluster, component="engine", inputs=inputs)


def build_persistence_agent_deployment(
    cluster: SrvThredsCluster, *, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-persistence-agent`."""
    return build_app_deployment(cluster, component="persistence-agent", inputs=inputs)


def build_session_agent_statefulset(
    cluster: SrvThredsCluster, *, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-session-agent`: a StatefulSet so each pod keeps its node id (prefix + ordinal+1)."""
    component: ComponentName = "session-agent"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(
            cluster,
            name=model.session_agent_name(cluster),
            component=component,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            **_replicas_field(cluster, component),
            "serviceName": model.headless_service_name(cluster, component),
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 5,
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": common.selector_labels(cluster, component)},
            "template": pod_template(cluster, component, inputs=inputs),
        },
    }


def build_session_agent_service(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-session-agent`: the client Service (HTTP and WebSocket)."""
    service = cluster.spec.session_agent.service
    meta = metadata(
        cluster,
        name=model.session_agent_name(cluster),
        component="session-agent",
        owner_uid=inputs.owner_uid,
        annotations=service.annotations,
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": service.type,
            "selector": common.selector_labels(cluster, "session-agent"),
            "ports": [
                {
                    "name": "session",
                    "port": service.port,
                    "targetPort": "session",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_headless_service(
    cluster: SrvThredsCluster,
    *,
    component: str,
    ports: list[tuple[str, int]],
    inputs: ReconcileInputs,
) -> Manifest:
    """`<name>-<component>-headless`: stable per-pod DNS names for a StatefulSet."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            cluster,
            name=model.headless_service_name(cluster, component),
            component=component,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": common.selector_labels(cluster, component),
            "ports": [
                {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
                for name, port in ports
            ],
        },
    }


def build_session_agent_headless_service(
    cluster: SrvThredsCluster, *, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-session-agent-headless`."""
    return build_headless_service(
        cluster, component="session-agent", ports=[("session", SESSION_PORT)], inputs=inputs
    )


def build_metrics_service(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-metrics`: a headless Service over every app pod, the ServiceMonitor's target."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            cluster,
            name=model.component_name(cluster, METRICS_COMPONENT),
            component=METRICS_COMPONENT,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "clusterIP": "None",
            "selector": common.instance_selector(cluster) | {APP_ROLE_LABEL: "app"},
            "ports": [
                {"name": "metrics", "port": APP_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _workload_ref(cluster: SrvThredsCluster, component: ComponentName) -> dict[str, str]:
    kind = "StatefulSet" if component == "session-agent" else "Deployment"
    return {"apiVersion": "apps/v1", "kind": kind, "name": model.component_name(cluster, component)}


def _hpa_metrics(spec: model.AutoscalingSpec) -> list[dict[str, Any]]:
    targets = (
        ("cpu", spec.target_cpu_utilization_percentage),
        ("memory", spec.target_memory_utilization_percentage),
    )
    return [
        {
            "type": "Resource",
            "resource": {
                "name": name,
                "target": {"type": "Utilization", "averageUtilization": value},
            },
        }
        for name, value in targets
        if value is not None
    ]


def build_hpa(
    cluster: SrvThredsCluster, *, component: ComponentName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<component>` HorizontalPodAutoscaler (autoscaling/v2)."""
    autoscaling = cluster.component(component).autoscaling
    spec: dict[str, Any] = {
        "scaleTargetRef": _workload_ref(cluster, component),
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": _hpa_metrics(autoscaling),
    }
    if autoscaling.behavior:
        spec["behavior"] = copy.deepcopy(autoscaling.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(
            cluster,
            name=model.component_name(cluster, component),
            component=component,
            owner_uid=inputs.owner_uid,
        ),
        "spec": spec,
    }


def wants_pdb(cluster: SrvThredsCluster, component: ComponentName) -> bool:
    """A PDB helps only with more than one pod; never in hibernate (it would block drains)."""
    spec = cluster.component(component)
    if cluster.spec.hibernate or not spec.disruption_budget.enabled:
        return False
    if autoscaled(cluster, component):
        return spec.autoscaling.min_replicas > 1
    return spec.replicas > 1


def build_pdb(
    cluster: SrvThredsCluster, *, component: ComponentName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<component>` PodDisruptionBudget."""
    budget = cluster.component(component).disruption_budget
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            cluster,
            name=model.component_name(cluster, component),
            component=component,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": common.selector_labels(cluster, component)},
        },
    }
