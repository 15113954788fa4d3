"""Builders of the ServiceAccount, the app ConfigMap and the Secrets of credentials and URLs."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import quote

from srvthreds_operator import model
from srvthreds_operator.model import BrokerName, SrvThredsCluster
from srvthreds_operator.specs.common import APP_PORT, Manifest, metadata
from srvthreds_operator.specs.inputs import ReconcileInputs

PATTERNS_DIR = "/etc/srvthreds/patterns"
RUN_CONFIG_DIR = "/etc/srvthreds/run-config"
URL_ENV: Mapping[BrokerName, str] = {
    "redis": "REDIS_URL",
    "mongodb": "MONGODB_URL",
    "rabbitmq": "RABBITMQ_URL",
}
REDIS_CONF = """\
# Written by the srvthreds operator. The engine needs keyspace notifications (KA).
notify-keyspace-events KA
dir /data
save 20 1
appendonly yes
port 6379
"""


def _encode(data: Mapping[str, str]) -> dict[str, str]:
    # `data` (not `stringData`) so what is applied equals what is read back: no SSA drift.
    return {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())}


def build_service_account(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """The identity every pod of the instance runs as; no API token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            cluster,
            name=model.service_account_name(cluster),
            component="service-account",
            owner_uid=inputs.owner_uid,
        ),
        "automountServiceAccountToken": False,
    }


def app_config_data(cluster: SrvThredsCluster) -> dict[str, str]:
    """Non-secret environment shared by the apps."""
    config = cluster.spec.config
    data = {
        "LOG_LEVEL": config.log_level,
        "LOG_FORMAT": config.log_format,
        "PORT": str(APP_PORT),
        "SRVTHREDS_INSTANCE": cluster.name,
        "MONGODB_REPLICA_SET": _replica_set(cluster),
    }
    if config.patterns is not None:
        data["PATTERNS_DIR"] = PATTERNS_DIR
    if config.run_config is not None:
        data["PROFILE_DIR"] = RUN_CONFIG_DIR
    return data


def _replica_set(cluster: SrvThredsCluster) -> str:
    managed = cluster.spec.brokers.mongodb.managed
    return managed.replica_set_name if managed is not None else ""


def build_config_map(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-config`: the apps' non-secret environment."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            cluster,
            name=model.config_map_name(cluster),
            component="config",
            owner_uid=inputs.owner_uid,
        ),
        "data": app_config_data(cluster),
    }


def build_redis_config_map(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-redis-config`: managed Redis settings, keyspace notifications included."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            cluster,
            name=model.redis_config_name(cluster),
            component="redis",
            owner_uid=inputs.owner_uid,
        ),
        "data": {"redis.conf": REDIS_CONF},
    }


def build_credentials_secret(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-<broker>-credentials`: generated once, then carried over by the reconciler."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            cluster,
            name=model.broker_credentials_name(cluster, broker),
            component=broker,
            owner_uid=inputs.owner_uid,
        ),
        "type": "Opaque",
        "data": _encode(inputs.broker_credentials(broker)),
    }


def broker_host(cluster: SrvThredsCluster, broker: BrokerName) -> str:
    """host:port of a managed broker's client Service."""
    service = model.component_name(cluster, broker)
    return f"{model.service_host(cluster, service)}:{model.BROKER_PORTS[broker]}"


def _mongo_hosts(cluster: SrvThredsCluster) -> str:
    managed = cluster.spec.brokers.mongodb.managed
    members = managed.members if managed is not None else 1
    headless = model.service_host(cluster, model.headless_service_name(cluster, "mongodb"))
    return ",".join(
        f"{cluster.name}-mongodb-{ordinal}.{headless}:27017" for ordinal in range(members)
    )


def connection_url(
    cluster: SrvThredsCluster, *, broker: BrokerName, credentials: Mapping[str, str]
) -> str:
    """The URL (with credentials) the apps use to reach a managed broker."""
    password = quote(credentials["password"], safe="")
    if broker == "redis":
        return f"redis://:{password}@{broker_host(cluster, 'redis')}/0"
    user = quote(credentials["username"], safe="")
    if broker == "mongodb":
        replica_set = _replica_set(cluster)
        return (
            f"mongodb://{user}:{password}@{_mongo_hosts(cluster)}/"
            f"?replicaSet={replica_set}&authSource=admin"
        )
    return f"amqp://{user}:{password}@{broker_host(cluster, 'rabbitmq')}/"


def connection_data(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> dict[str, str]:
    """Plain-text content of `<name>-connections`: one URL per managed broker."""
    return {
        URL_ENV[broker]: connection_url(
            cluster, broker=broker, credentials=inputs.broker_credentials(broker)
        )
        for broker in cluster.managed_brokers()
    }


def build_connections_secret(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> Manifest:
    """`<name>-connections`: REDIS_URL, MONGODB_URL, RABBITMQ_URL of the managed brokers."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            cluster,
            name=model.connections_secret_name(cluster),
            component="config",
            owner_uid=inputs.owner_uid,
        ),
        "type": "Opaque",
        "data": _encode(connection_data(cluster, inputs=inputs)),
    }
