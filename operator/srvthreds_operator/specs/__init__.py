"""Pure builders of every child manifest of a SrvThredsCluster (spec in, dicts out, no I/O)."""

from srvthreds_operator.specs.apps import (
    build_app_deployment,
    build_engine_deployment,
    build_hpa,
    build_metrics_service,
    build_pdb,
    build_persistence_agent_deployment,
    build_session_agent_headless_service,
    build_session_agent_service,
    build_session_agent_statefulset,
)
from srvthreds_operator.specs.backup import build_backup_cronjob, build_backup_cronjobs
from srvthreds_operator.specs.brokers import (
    build_broker_headless_service,
    build_broker_service,
    build_broker_statefulset,
)
from srvthreds_operator.specs.children import KindRef, build_children, prune_kinds
from srvthreds_operator.specs.common import Manifest, content_hash
from srvthreds_operator.specs.config import (
    build_config_map,
    build_connections_secret,
    build_credentials_secret,
    build_redis_config_map,
    build_service_account,
)
from srvthreds_operator.specs.inputs import (
    MissingCredentialsError,
    ReconcileInputs,
    complete_credentials,
    credential_secret_names,
    generate_credentials,
    hash_key,
    placeholder_credentials,
    referenced_objects,
)
from srvthreds_operator.specs.monitoring import (
    build_dashboard_config_map,
    build_prometheus_rule,
    build_service_monitor,
)
from srvthreds_operator.specs.network import build_network_policies

__all__ = [
    "KindRef",
    "Manifest",
    "MissingCredentialsError",
    "ReconcileInputs",
    "build_app_deployment",
    "build_backup_cronjob",
    "build_backup_cronjobs",
    "build_broker_headless_service",
    "build_broker_service",
    "build_broker_statefulset",
    "build_children",
    "build_config_map",
    "build_connections_secret",
    "build_credentials_secret",
    "build_dashboard_config_map",
    "build_engine_deployment",
    "build_hpa",
    "build_metrics_service",
    "build_network_policies",
    "build_pdb",
    "build_persistence_agent_deployment",
    "build_prometheus_rule",
    "build_redis_config_map",
    "build_service_account",
    "build_service_monitor",
    "build_session_agent_headless_service",
    "build_session_agent_service",
    "build_session_agent_statefulset",
    "complete_credentials",
    "content_hash",
    "credential_secret_names",
    "generate_credentials",
    "hash_key",
    "placeholder_credentials",
    "prune_kinds",
    "referenced_objects",
]
