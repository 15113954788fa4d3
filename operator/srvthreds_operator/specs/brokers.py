"""Builders of the managed brokers: Redis, MongoDB and RabbitMQ StatefulSets and Services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srvthreds_operator import model
from srvthreds_operator.model import BrokerName, ManagedBrokerSpec, SrvThredsCluster
from srvthreds_operator.specs import common
from srvthreds_operator.specs.apps import build_headless_service
from srvthreds_operator.specs.common import Manifest
from srvthreds_operator.specs.config import REDIS_CONF
from srvthreds_operator.specs.inputs import ReconcileInputs

DEFAULT_BROKER_IMAGES: Mapping[BrokerName, str] = {
    "redis": "redis:7.4-alpine",
    "mongodb": "mongo:7.0",
    "rabbitmq": "rabbitmq:3.13-management",
}
# The official images' non-root users (redis:alpine is uid 999 in group 1000).
BROKER_USERS: Mapping[BrokerName, tuple[int, int]] = {
    "redis": (999, 1000),
    "mongodb": (999, 999),
    "rabbitmq": (999, 999),
}
DATA_PATHS: Mapping[BrokerName, str] = {
    "redis": "/data",
    "mongodb": "/data/db",
    "rabbitmq": "/var/lib/rabbitmq",
}
# Ports the broker pods use among themselves (replica set members, Erlang distribution).
INTRA_CLUSTER_PORTS: Mapping[BrokerName, tuple[int, ...]] = {
    "redis": (),
    "mongodb": (27017,),
    "rabbitmq": (4369, 25672),
}
SERVICE_PORTS: Mapping[BrokerName, list[tuple[str, int]]] = {
    "redis": [("redis", 6379)],
    "mongodb": [("mongodb", 27017)],
    "rabbitmq": [("amqp", 5672), ("prometheus", 15692)],
}
KEYFILE_DIR = "/var/run/mongodb-keyfile"


def managed_spec(cluster: SrvThredsCluster, broker: BrokerName) -> ManagedBrokerSpec:
    """The managed block of a broker (the model guarantees it in Managed mode)."""
    managed = cluster.broker(broker).managed
    if managed is None:
        raise model.SpecError(f"spec.brokers.{broker}.managed", "required when mode is Managed")
    return managed


def broker_image(cluster: SrvThredsCluster, broker: BrokerName) -> str:
    """The broker image: the user's or the default."""
    return managed_spec(cluster, broker).image or DEFAULT_BROKER_IMAGES[broker]


def _secret_env(
    cluster: SrvThredsCluster, broker: BrokerName, pairs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    secret = model.broker_credentials_name(cluster, broker)
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for env, key in pairs
    ]


def _tmp() -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108


def _base_container(cluster: SrvThredsCluster, broker: BrokerName) -> dict[str, Any]:
    return {
        "name": broker,
        "image": broker_image(cluster, broker),
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in SERVICE_PORTS[broker]
        ],
        "resources": common.resources(managed_spec(cluster, broker).resources, component=broker),
        "securityContext": common.container_security_context(),
    }


def _redis_pod(
    cluster: SrvThredsCluster,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    tmp_volume, tmp_mount = _tmp()
    container = _base_container(cluster, "redis") | {
        # The password stays in the Secret; the config file in the ConfigMap holds no secret.
        "command": [
            "sh",
            "-c",
            'exec redis-server /etc/redis/redis.conf --requirepass "$REDIS_PASSWORD"',
        ],
        "env": _secret_env(cluster, "redis", [("REDIS_PASSWORD", "password")]),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_PATHS["redis"]},
            {"name": "config", "mountPath": "/etc/redis", "readOnly": True},
            tmp_mount,
        ],
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
        "readinessProbe": {
            "exec": {
                "command": [
                    "sh",
                    "-c",
                    'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping | grep -q PONG',
                ]
            },
            "periodSeconds": 5,
        },
    }
    volumes = [
        {"name": "config", "configMap": {"name": model.redis_config_name(cluster)}},
        tmp_volume,
    ]
    return [], [container], volumes


def _mongo_members(cluster: SrvThredsCluster) -> str:
    managed = cluster.spec.brokers.mongodb.managed
    members = managed.members if managed is not None else 1
    headless = model.service_host(cluster, model.headless_service_name(cluster, "mongodb"))
    return ",".join(
        f"{{_id: {ordinal}, host: '{cluster.name}-mongodb-{ordinal}.{headless}:27017'}}"
        for ordinal in range(members)
    )


def _mongo_init_script(cluster: SrvThredsCluster) -> str:
    managed = cluster.spec.brokers.mongodb.managed
    replica_set = managed.replica_set_name if managed is not None else "rs0"
    auth = (
        '-u "$MONGO_INITDB_ROOT_USERNAME" -p "$MONGO_INITDB_ROOT_PASSWORD" '
        "--authenticationDatabase admin"
    )
    config = f"{{_id: '{replica_set}', members: [{_mongo_members(cluster)}]}}"
    # Only ordinal 0 initiates; the script is idempotent, so restarts are harmless.
    return (
        f"until mongosh --quiet {auth} --eval 'db.adminCommand({{ping: 1}})' >/dev/null 2>&1; "
        "do sleep 2; done; "
        'case "$HOSTNAME" in *-0) '
        f'mongosh --quiet {auth} --eval "try {{ rs.status() }} '
        f'catch (e) {{ rs.initiate({config}) }}";; '
        "esac; exec sleep infinity"
    )


def _mongo_pod(
    cluster: SrvThredsCluster,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    managed = cluster.spec.brokers.mongodb.managed
    replica_set = managed.replica_set_name if managed is not None else "rs0"
    tmp_volume, tmp_mount = _tmp()
    credentials = _secret_env(
        cluster,
        "mongodb",
        [("MONGO_INITDB_ROOT_USERNAME", "username"), ("MONGO_INITDB_ROOT_PASSWORD", "password")],
    )
    keyfile_mount = {"name": "keyfile", "mountPath": KEYFILE_DIR}
    # mongod refuses a group-readable keyfile, and fsGroup makes Secret files group-readable.
    init = {
        "name": "keyfile",
        "image": broker_image(cluster, "mongodb"),
        "command": [
            "sh",
            "-c",
            f"cp /etc/mongodb-keyfile-secret/keyfile {KEYFILE_DIR}/keyfile"
            f" && chmod 0400 {KEYFILE_DIR}/keyfile",
        ],
        "securityContext": common.container_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [
            keyfile_mount,
            {
                "name": "keyfile-secret",
                "mountPath": "/etc/mongodb-keyfile-secret",
                "readOnly": True,
            },
        ],
    }
    mongod = _base_container(cluster, "mongodb") | {
        "args": ["--replSet", replica_set, "--bind_ip_all", "--keyFile", f"{KEYFILE_DIR}/keyfile"],
        "env": credentials,
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_PATHS["mongodb"]},
            {"name": "configdb", "mountPath": "/data/configdb"},
            keyfile_mount,
            tmp_mount,
        ],
        "livenessProbe": {"tcpSocket": {"port": "mongodb"}, "periodSeconds": 10},
        "readinessProbe": {
            "exec": {"command": ["mongosh", "--quiet", "--eval", "db.adminCommand('ping')"]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
    }
    replica_set_init = {
        "name": "replica-set-init",
        "image": broker_image(cluster, "mongodb"),
        "command": ["sh", "-c", _mongo_init_script(cluster)],
        "env": credentials,
        "securityContext": common.container_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [tmp_mount],
    }
    volumes = [
        {"name": "configdb", "emptyDir": {}},
        {"name": "keyfile", "emptyDir": {"medium": "Memory"}},
        {
            "name": "keyfile-secret",
            "secret": {
                "secretName": model.broker_credentials_name(cluster, "mongodb"),
                "items": [{"key": "keyfile", "path": "keyfile"}],
                "defaultMode": 0o400,
            },
        },
        tmp_volume,
    ]
    return [init], [mongod, replica_set_init], volumes


def _rabbit_pod(
    cluster: SrvThredsCluster,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    tmp_volume, tmp_mount = _tmp()
    container = _base_container(cluster, "rabbitmq") | {
        "env": _secret_env(
            cluster,
            "rabbitmq",
            [
                ("RABBITMQ_DEFAULT_USER", "username"),
                ("RABBITMQ_DEFAULT_PASS", "password"),
            ],
        ),
        "volumeMounts": [{"name": "data", "mountPath": DATA_PATHS["rabbitmq"]}, tmp_mount],
        "livenessProbe": {
            "tcpSocket": {"port": "amqp"},
            "periodSeconds": 10,
            "initialDelaySeconds": 20,
        },
        "readinessProbe": {
            "exec": {"command": ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]},
            "periodSeconds": 10,
            "timeoutSeconds": 10,
        },
    }
    return [], [container], [tmp_volume]


_POD_PARTS = {"redis": _redis_pod, "mongodb": _mongo_pod, "rabbitmq": _rabbit_pod}


def _volume_claim(cluster: SrvThredsCluster, broker: BrokerName) -> dict[str, Any]:
    storage = managed_spec(cluster, broker).storage
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "metadata": {"name": "data", "labels": common.selector_labels(cluster, broker)},
        "spec": spec,
    }


def _replicas(cluster: SrvThredsCluster, broker: BrokerName) -> int:
    managed = cluster.spec.brokers.mongodb.managed
    if broker == "mongodb" and managed is not None:
        return managed.members
    return 1


def broker_config_hash(
    cluster: SrvThredsCluster, broker: BrokerName, *, inputs: ReconcileInputs
) -> str:
    """Hash of a broker's credentials and config: a change restarts its pods."""
    extra = REDIS_CONF if broker == "redis" else ""
    return common.content_hash(dict(inputs.broker_credentials(broker)), extra)


def build_broker_statefulset(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<broker>` StatefulSet with its volumeClaimTemplate (PVCs are kept on delete)."""
    init_containers, containers, volumes = _POD_PARTS[broker](cluster)
    uid, gid = BROKER_USERS[broker]
    managed = managed_spec(cluster, broker)
    pod: dict[str, Any] = {
        "serviceAccountName": model.service_account_name(cluster),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": common.pod_security_context(uid=uid, gid=gid),
        "containers": containers,
        "volumes": volumes,
        **common.scheduling(cluster, managed.scheduling, component=broker),
    }
    if init_containers:
        pod["initContainers"] = init_containers
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": common.metadata(
            cluster,
            name=model.component_name(cluster, broker),
            component=broker,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "replicas": _replicas(cluster, broker),
            "serviceName": model.headless_service_name(cluster, broker),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": common.selector_labels(cluster, broker)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    # No version label: an app release must not restart the brokers.
                    "labels": common.selector_labels(cluster, broker)
                    | {"app.kubernetes.io/part-of": "srvthreds"},
                    "annotations": {
                        model.CONFIG_HASH_ANNOTATION: broker_config_hash(
                            cluster, broker, inputs=inputs
                        )
                    },
                },
                "spec": pod,
            },
            "volumeClaimTemplates": [_volume_claim(cluster, broker)],
        },
    }


def build_broker_service(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<broker>`: the client Service the apps connect to."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(
            cluster,
            name=model.component_name(cluster, broker),
            component=broker,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": common.selector_labels(cluster, broker),
            "ports": [
                {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
                for name, port in SERVICE_PORTS[broker]
            ],
        },
    }


def build_broker_headless_service(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<broker>-headless`: per-pod DNS names (MongoDB replica set members)."""
    ports = list(SERVICE_PORTS[broker])
    if broker == "rabbitmq":
        ports += [("epmd", 4369), ("cluster", 25672)]
    return build_headless_service(cluster, component=broker, ports=ports, inputs=inputs)
