"""Pydantic models of the SrvThredsCluster resource: the source of truth for the CRD schema."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "srvthreds.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SrvThredsCluster"
PLURAL = "srvthredsclusters"
SINGULAR = "srvthredscluster"
SHORT_NAMES = ("stc",)
CATEGORIES = ("srvthreds",)

PAUSE_ANNOTATION = "srvthreds.io/reconcile"
PAUSE_ANNOTATION_VALUE = "paused"
CONFIG_HASH_ANNOTATION = "srvthreds.io/config-hash"


@dataclasses.dataclass(frozen=True)
class NameBudget:
    """The longest child name of one kind, and the Kubernetes limit that name must fit."""

    kind: str
    suffix: str
    """The longest suffix the operator appends to the cluster name for a child of this kind."""
    limit: int
    why: str

    @property
    def max_cluster_name(self) -> int:
        """The longest cluster name whose child of this kind still fits."""
        return self.limit - len(self.suffix)


NAME_BUDGETS: tuple[NameBudget, ...] = (
    NameBudget(
        kind="CronJob",
        suffix="-backup-mongodb",
        limit=52,
        why="Kubernetes refuses longer CronJob names, as their Jobs append an 11-character suffix",
    ),
    NameBudget(
        kind="StatefulSet",
        suffix="-session-agent",
        limit=52,
        why="its pods carry the label controller-revision-hash=<statefulset>-<hash of up to 10 "
        "characters>, and a label value is at most 63 characters",
    ),
    NameBudget(
        kind="Service",
        suffix="-session-agent-headless",
        limit=63,
        why="a Service name is a DNS-1035 label",
    ),
)
"""Every limit a derived child name must fit; the unit tests check that no child is longer."""

BINDING_NAME_BUDGET = min(NAME_BUDGETS, key=lambda budget: budget.max_cluster_name)
MAX_CLUSTER_NAME_LENGTH = BINDING_NAME_BUDGET.max_cluster_name
NAME_LIMIT_MESSAGE = (
    f"metadata.name must be at most {MAX_CLUSTER_NAME_LENGTH} characters: the child "
    f"{BINDING_NAME_BUDGET.kind} '<name>{BINDING_NAME_BUDGET.suffix}' must fit "
    f"{BINDING_NAME_BUDGET.limit} characters; {BINDING_NAME_BUDGET.why}"
)

ComponentName = Literal["engine", "session-agent", "persistence-agent"]
BrokerName = Literal["redis", "mongodb", "rabbitmq"]
APP_COMPONENTS: tuple[ComponentName, ...] = ("engine", "session-agent", "persistence-agent")
BROKERS: tuple[BrokerName, ...] = ("redis", "mongodb", "rabbitmq")
BROKER_PORTS: Mapping[BrokerName, int] = {"redis": 6379, "mongodb": 27017, "rabbitmq": 5672}

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Paused", "Hibernated", "Failed"]
ConditionType = Literal[
    "Ready", "Progressing", "Degraded", "BrokersReady", "ReconcileSucceeded", "Paused"
]

IntOrString = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9*?/,A-Za-z#LW-]+( +[0-9*?/,A-Za-z#LW-]+){4})$"
)
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
SEMVER_PATTERN = r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule; the message names the field so kubectl's error is actionable."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def _validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
    )


class LocalObjectReference(Model):
    """A reference to an object in the cluster's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the referenced object.",
    )


class ConfigMapSource(Model):
    """Where a piece of run configuration comes from."""

    config_map_ref: LocalObjectReference = Field(
        description="ConfigMap whose keys are mounted as files; a change rolls the pods."
    )


class ImageSpec(Model):
    """The application image; the tag defaults to `spec.version`."""

    repository: str = Field(
        default="ghcr.io/srvthreds/srvthreds",
        min_length=1,
        max_length=512,
        description="Image repository without tag or digest.",
    )
    tag: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Image tag. Defaults to `spec.version`.",
    )
    digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[a-f0-9]{64}$",
        description="Image digest; when set it pins the image and wins over the tag.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Kubernetes imagePullPolicy of the app containers."
    )
    pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets of type kubernetes.io/dockerconfigjson used to pull the image.",
    )


class ResourceRequirements(Model):
    """CPU and memory requests and limits (Kubernetes quantities)."""

    requests: dict[str, IntOrString] | None = Field(
        default=None, description="Minimum resources, e.g. `{cpu: 200m, memory: 256Mi}`."
    )
    limits: dict[str, IntOrString] | None = Field(
        default=None, description="Maximum resources, e.g. `{cpu: 500m, memory: 512Mi}`."
    )


class AutoscalingSpec(Model):
    """A HorizontalPodAutoscaler (autoscaling/v2) for the component."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
                ".minReplicas",
            ),
            _cel(
                "!self.enabled || has(self.targetCPUUtilizationPercentage)"
                " || has(self.targetMemoryUtilizationPercentage)",
                "autoscaling needs targetCPUUtilizationPercentage or "
                "targetMemoryUtilizationPercentage when enabled",
            ),
        )
    )

    enabled: bool = Field(
        default=False,
        description="Create an HPA; the workload then carries no replicas field (the HPA owns it).",
    )
    min_replicas: int = Field(default=2, ge=1, le=1000, description="Lowest replica count.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Highest replica count.")
    target_cpu_utilization_percentage: int | None = Field(
        default=70,
        ge=1,
        le=1000,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilisation (percent of requests) the HPA aims at.",
    )
    target_memory_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Average memory utilisation (percent of requests) the HPA aims at.",
    )
    behavior: FreeForm | None = Field(
        default=None,
        description="autoscaling/v2 `behavior` (scaleUp/scaleDown policies), passed through.",
    )


class DisruptionBudgetSpec(Model):
    """A PodDisruptionBudget; skipped automatically at one replica or fewer and in hibernate."""

    enabled: bool = Field(default=True, description="Create a PodDisruptionBudget.")
    max_unavailable: IntOrString = Field(
        default=1, description="Pods that may be evicted at once (number or percentage)."
    )


class SchedulingSpec(Model):
    """Where the component's pods may run."""

    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the pods require."
    )
    tolerations: list[FreeForm] | None = Field(
        default=None, max_length=32, description="Pod tolerations (core/v1 Toleration)."
    )
    affinity: FreeForm | None = Field(default=None, description="Pod affinity (core/v1 Affinity).")
    topology_spread_constraints: list[FreeForm] | None = Field(
        default=None,
        max_length=16,
        description="Replaces the default spread across `kubernetes.io/hostname` and "
        "`topology.kubernetes.io/zone` (whenUnsatisfiable: ScheduleAnyway). An empty list "
        "disables spreading.",
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass of the pods."
    )


class EnvVar(Model):
    """An extra environment variable for the component's container."""

    name: str = Field(
        min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name."
    )
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: FreeForm | None = Field(
        default=None, description="core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, ...)."
    )


def _component_rules() -> dict[str, Any]:
    return _validations(
        _cel(
            "!has(self.replicas) || self.replicas >= 0",
            "replicas must be greater than or equal to 0",
            ".replicas",
        )
    )


_ENV_LIST_SCHEMA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}


class ComponentSpec(Model):
    """Settings shared by the engine and the agents."""

    model_config = ConfigDict(json_schema_extra=_component_rules())

    replicas: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Desired pods (ignored while autoscaling is enabled or in hibernate).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Container resources; defaults per component are listed in the guide.",
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Horizontal autoscaling."
    )
    disruption_budget: DisruptionBudgetSpec = Field(
        default_factory=DisruptionBudgetSpec, description="PodDisruptionBudget."
    )
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Pod placement.")
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        json_schema_extra=_ENV_LIST_SCHEMA,
        description="Extra environment variables (merged by name over the operator's).",
    )
    pod_template: FreeForm | None = Field(
        default=None,
        description="A core/v1 PodTemplateSpec fragment strategically merged over the generated "
        "pod template (containers merged by name). For the rare need: sidecars, volumes.",
    )


class EngineSpec(ComponentSpec):
    """The thred engine: consumes the event queue; scaled by the scale subresource."""


class PersistenceAgentSpec(ComponentSpec):
    """The persistence agent: writes records to MongoDB."""

    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Desired pods (ignored while autoscaling is enabled or in hibernate).",
    )
    node_id: str = Field(
        default="org.wt.persistence1",
        min_length=1,
        max_length=128,
        description="The agent's node id in the resolver configuration.",
    )


class ServiceSpec(Model):
    """The session agent's client Service."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=3000, ge=1, le=65535, description="Service port (HTTP+WebSocket).")
    annotations: dict[str, str] | None = Field(
        default=None, description="Annotations on the Service (e.g. load balancer settings)."
    )


class SessionAgentSpec(ComponentSpec):
    """The session agent: HTTP and WebSocket entry point, one stable node id per pod."""

    node_id_prefix: str = Field(
        default="org.wt.session",
        min_length=1,
        max_length=120,
        description="Pod N (ordinal N-1) gets node id `<prefix><N>`, e.g. org.wt.session1.",
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="Client Service.")


class ConfigSpec(Model):
    """Run configuration shared by the engine and agents."""

    patterns: ConfigMapSource | None = Field(
        default=None,
        description="ConfigMap of pattern files, mounted at /etc/srvthreds/patterns.",
    )
    run_config: ConfigMapSource | None = Field(
        default=None,
        description="ConfigMap of the run profile (sessions model, resolver config, ...), "
        "mounted at /etc/srvthreds/run-config.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the apps."
    )
    log_format: Literal["json", "text"] = Field(default="json", description="Log format.")


class StorageSpec(Model):
    """A broker's persistent volume (from the StatefulSet's volumeClaimTemplates)."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(oldSelf.storageClassName) || (has(self.storageClassName)"
                " && self.storageClassName == oldSelf.storageClassName)",
                "storage.storageClassName is immutable once set",
                ".storageClassName",
            ),
        )
    )

    size: str = Field(
        default="1Gi",
        max_length=32,
        pattern=QUANTITY_PATTERN,
        json_schema_extra=_validations(
            _cel("self == oldSelf", "storage.size is immutable once set")
        ),
        description="Volume size. Immutable (volumeClaimTemplates cannot change).",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass; the cluster default when unset. Immutable once set.",
    )


class ManagedBrokerSpec(Model):
    """A broker the operator runs as a StatefulSet."""

    image: str | None = Field(
        default=None, max_length=512, description="Broker image; the guide lists the default."
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Persistent volume.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Broker container resources."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Broker pod placement."
    )


class ManagedMongoSpec(ManagedBrokerSpec):
    """A MongoDB replica set the operator runs."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "self.members % 2 == 1",
                "mongodb.managed.members must be odd (1, 3, 5 or 7)",
                ".members",
            ),
        )
    )

    members: int = Field(default=1, ge=1, le=7, description="Replica set members.")
    replica_set_name: str = Field(
        default="rs0",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Replica set name.",
    )


class ExternalBrokerSpec(Model):
    """A broker the operator does not run: its URL comes from a Secret."""

    secret_ref: LocalObjectReference = Field(
        description="Secret in the cluster's namespace holding the connection URL."
    )
    url_key: str = Field(
        default="url",
        min_length=1,
        max_length=253,
        description="Key of the Secret that holds the full URL with credentials.",
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port the network policy opens for egress; defaults to the broker's "
        "standard port (6379, 27017, 5672).",
    )
    egress_to: list[FreeForm] | None = Field(
        default=None,
        max_length=16,
        description="NetworkPolicyPeers the apps may reach on the port; anywhere when unset.",
    )


def _broker_rules(broker: str) -> dict[str, Any]:
    return _validations(
        _cel(
            "self.mode != 'External' || has(self.external)",
            f"brokers.{broker}.external is required when mode is External",
            ".external",
        ),
        _cel(
            "self.mode != 'Managed' || has(self.managed)",
            f"brokers.{broker}.managed is required when mode is Managed (use managed: {{}} "
            "for defaults)",
            ".managed",
        ),
    )


class RedisBrokerSpec(Model):
    """Redis: session storage, pub/sub and keyspace notifications."""

    model_config = ConfigDict(json_schema_extra=_broker_rules("redis"))

    mode: Literal["Managed", "External"] = Field(default="Managed", description="Who runs it.")
    managed: ManagedBrokerSpec | None = Field(
        default_factory=ManagedBrokerSpec, description="Settings when mode is Managed."
    )
    external: ExternalBrokerSpec | None = Field(
        default=None, description="Settings when mode is External."
    )


class MongoBrokerSpec(Model):
    """MongoDB: thred records and configuration."""

    model_config = ConfigDict(json_schema_extra=_broker_rules("mongodb"))

    mode: Literal["Managed", "External"] = Field(default="Managed", description="Who runs it.")
    managed: ManagedMongoSpec | None = Field(
        default_factory=ManagedMongoSpec, description="Settings when mode is Managed."
    )
    external: ExternalBrokerSpec | None = Field(
        default=None, description="Settings when mode is External."
    )


class RabbitBrokerSpec(Model):
    """RabbitMQ: the event and message queues."""

    model_config = ConfigDict(json_schema_extra=_broker_rules("rabbitmq"))

    mode: Literal["Managed", "External"] = Field(default="Managed", description="Who runs it.")
    managed: ManagedBrokerSpec | None = Field(
        default_factory=ManagedBrokerSpec, description="Settings when mode is Managed."
    )
    external: ExternalBrokerSpec | None = Field(
        default=None, description="Settings when mode is External."
    )


class BrokersSpec(Model):
    """The three backing services."""

    redis: RedisBrokerSpec = Field(default_factory=RedisBrokerSpec, description="Redis.")
    mongodb: MongoBrokerSpec = Field(default_factory=MongoBrokerSpec, description="MongoDB.")
    rabbitmq: RabbitBrokerSpec = Field(default_factory=RabbitBrokerSpec, description="RabbitMQ.")


class NetworkPolicySpec(Model):
    """Default-deny NetworkPolicies plus exactly the allow rules the deployment needs."""

    enabled: bool = Field(default=True, description="Create the NetworkPolicies.")
    ingress_from: list[FreeForm] | None = Field(
        default=None,
        max_length=32,
        description="NetworkPolicyPeers (e.g. the ingress controller's namespace) allowed to "
        "reach the session agent port. None: no ingress to the session agent.",
    )


class RetentionSpec(Model):
    """How many backups to keep."""

    keep_last: int = Field(
        default=7, ge=1, le=1000, description="Backups kept per broker after each upload."
    )


class S3Destination(Model):
    """An S3-compatible bucket."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field(
        default="", max_length=512, description="Key prefix (folder) inside the bucket."
    )
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://",
        description="Endpoint URL for non-AWS stores (MinIO, Ceph, ...).",
    )
    region: str = Field(default="us-east-1", max_length=64, description="Bucket region.")
    credentials_secret_ref: LocalObjectReference = Field(
        description="Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


class BackupDestination(Model):
    """Where backups are uploaded."""

    s3: S3Destination = Field(description="S3-compatible destination.")


class BackupSpec(Model):
    """Scheduled mongodump and Redis RDB snapshots uploaded to object storage."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!self.enabled || (has(self.schedule) && has(self.destination))",
                "backup.schedule and backup.destination are required when backup is enabled",
                ".enabled",
            ),
        )
    )

    enabled: bool = Field(default=False, description="Create the backup CronJobs.")
    schedule: str | None = Field(
        default=None,
        max_length=128,
        json_schema_extra=_validations(
            _cel(
                f"self.matches('{CRON_PATTERN}')",
                "backup.schedule must be a cron expression of five fields or an @macro",
            )
        ),
        description="Cron schedule, e.g. `0 2 * * *` (UTC).",
    )
    suspend: bool = Field(default=False, description="Suspend the CronJobs.")
    retention: RetentionSpec = Field(default_factory=RetentionSpec, description="Retention.")
    destination: BackupDestination | None = Field(default=None, description="Destination.")
    uploader_image: str = Field(
        default="amazon/aws-cli:2.22.35",
        max_length=512,
        description="Image with the `aws` CLI that uploads the dumps and applies retention.",
    )


class ServiceMonitorSpec(Model):
    """A prometheus-operator ServiceMonitor for the apps' /metrics."""

    enabled: bool = Field(default=False, description="Create the ServiceMonitor.")
    labels: dict[str, str] | None = Field(
        default=None, description="Labels your Prometheus selects ServiceMonitors by."
    )
    interval: str = Field(
        default="30s", max_length=16, pattern=DURATION_PATTERN, description="Scrape interval."
    )


class OptInObjectSpec(Model):
    """An opt-in monitoring object."""

    enabled: bool = Field(default=False, description="Create it.")
    labels: dict[str, str] | None = Field(
        default=None, description="Extra labels (e.g. what your Prometheus or Grafana selects)."
    )


class MonitoringSpec(Model):
    """Metrics scraping, alerts and dashboards."""

    scrape_annotations: bool = Field(
        default=True, description="Annotate app pods with prometheus.io/scrape, port and path."
    )
    service_monitor: ServiceMonitorSpec = Field(
        default_factory=ServiceMonitorSpec, description="ServiceMonitor (opt-in)."
    )
    prometheus_rule: OptInObjectSpec = Field(
        default_factory=OptInObjectSpec, description="PrometheusRule with engine alerts (opt-in)."
    )
    grafana_dashboard: OptInObjectSpec = Field(
        default_factory=OptInObjectSpec,
        description="Grafana dashboard ConfigMap labelled grafana_dashboard=1 (opt-in).",
    )


class UpdateStrategySpec(Model):
    """Rolling update settings of the app workloads."""

    max_surge: IntOrString = Field(default="25%", description="Extra pods during a rollout.")
    max_unavailable: IntOrString = Field(
        default=0, description="Pods that may be unavailable during a rollout."
    )


class SrvThredsClusterSpec(Model):
    """Desired state of a SrvThreds deployment."""

    version: str = Field(
        max_length=64, pattern=SEMVER_PATTERN, description="SrvThreds release; the default tag."
    )
    image: ImageSpec = Field(default_factory=ImageSpec, description="Application image.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The thred engine.")
    session_agent: SessionAgentSpec = Field(
        default_factory=SessionAgentSpec, description="The session agent."
    )
    persistence_agent: PersistenceAgentSpec = Field(
        default_factory=PersistenceAgentSpec, description="The persistence agent."
    )
    config: ConfigSpec = Field(default_factory=ConfigSpec, description="Run configuration.")
    brokers: BrokersSpec = Field(default_factory=BrokersSpec, description="Backing services.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="NetworkPolicies."
    )
    backup: BackupSpec = Field(default_factory=BackupSpec, description="Scheduled backups.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Monitoring.")
    paused: bool = Field(
        default=False,
        description="Stop reconciling (also the annotation srvthreds.io/reconcile: paused).",
    )
    hibernate: bool = Field(
        default=False, description="Scale the apps to zero; brokers and data are kept."
    )
    update_strategy: UpdateStrategySpec = Field(
        default_factory=UpdateStrategySpec, description="Rolling update of the apps."
    )


class Condition(Model):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(default="", max_length=1024, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )
    last_transition_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the status last changed.",
    )


class ComponentStatus(Model):
    """Replica counts of one app workload."""

    model_config = ConfigDict(extra="ignore")

    desired_replicas: int = Field(default=0, description="Replicas the operator asked for.")
    replicas: int = Field(default=0, description="Pods that exist.")
    ready_replicas: int = Field(default=0, description="Pods that are ready.")
    updated_replicas: int = Field(default=0, description="Pods on the current template.")


class ComponentsStatus(Model):
    """Replica counts per app component."""

    model_config = ConfigDict(extra="ignore")

    engine: ComponentStatus | None = Field(default=None, description="Engine.")
    session_agent: ComponentStatus | None = Field(default=None, description="Session agent.")
    persistence_agent: ComponentStatus | None = Field(
        default=None, description="Persistence agent."
    )


class EndpointsStatus(Model):
    """Resolved in-cluster endpoints (no credentials)."""

    model_config = ConfigDict(extra="ignore")

    session_agent: str | None = Field(default=None, description="Session agent URL.")
    redis: str | None = Field(default=None, description="Redis host:port (or External).")
    mongodb: str | None = Field(default=None, description="MongoDB host:port (or External).")
    rabbitmq: str | None = Field(default=None, description="RabbitMQ host:port (or External).")


class SrvThredsClusterStatus(Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="metadata.generation of the last reconciled spec."
    )
    phase: Phase | None = Field(default=None, description="Summary phase.")
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded, BrokersReady, ReconcileSucceeded, Paused.",
    )
    components: ComponentsStatus | None = Field(
        default=None, description="Replica counts per component."
    )
    engine_selector: str | None = Field(
        default=None, description="Label selector of the engine pods (scale subresource)."
    )
    endpoints: EndpointsStatus | None = Field(default=None, description="Resolved endpoints.")
    config_hash: str | None = Field(
        default=None, description="Hash of the configuration the pods run with."
    )
    last_error: str | None = Field(
        default=None, max_length=1024, description="Last reconcile error (truncated)."
    )
    retries: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Failed reconcile passes in a row since the last success. Each failure schedules a"
            " retry after a capped exponential back-off with full jitter; absent once a pass"
            " succeeds."
        ),
    )
    last_reconcile_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the last reconcile finished.",
    )
    kopf: FreeForm | None = Field(default=None, description="kopf's own progress storage.")


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SrvThredsCluster(BaseModel):
    """A whole SrvThredsCluster object."""

    model_config = ConfigDict(extra="ignore")

    metadata: ObjectMeta
    spec: SrvThredsClusterSpec
    status: SrvThredsClusterStatus | None = None

    @property
    def name(self) -> str:
        """The cluster's name: every child name starts with it."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """The namespace every child lives in."""
        return self.metadata.namespace

    @property
    def paused(self) -> bool:
        """Reconciliation is paused by the spec or by the annotation."""
        annotation = self.metadata.annotations.get(PAUSE_ANNOTATION, "")
        return self.spec.paused or annotation == PAUSE_ANNOTATION_VALUE

    def component(self, component: ComponentName) -> ComponentSpec:
        """The spec block of an app component."""
        if component == "engine":
            return self.spec.engine
        if component == "session-agent":
            return self.spec.session_agent
        return self.spec.persistence_agent

    def broker(self, broker: BrokerName) -> RedisBrokerSpec | MongoBrokerSpec | RabbitBrokerSpec:
        """The spec block of a broker."""
        brokers = self.spec.brokers
        if broker == "redis":
            return brokers.redis
        if broker == "mongodb":
            return brokers.mongodb
        return brokers.rabbitmq

    def managed_brokers(self) -> list[BrokerName]:
        """Brokers the operator runs, in a stable order."""
        return [broker for broker in BROKERS if self.broker(broker).mode == "Managed"]


# Derived names: one function each, so every module spells a child the same way.


def component_name(cluster: SrvThredsCluster, component: str) -> str:
    """`<name>-<component>`: the name of a component's workload, Service, HPA and PDB."""
    return f"{cluster.name}-{component}"


def engine_name(cluster: SrvThredsCluster) -> str:
    """The engine Deployment."""
    return component_name(cluster, "engine")


def session_agent_name(cluster: SrvThredsCluster) -> str:
    """The session agent StatefulSet and client Service."""
    return component_name(cluster, "session-agent")


def persistence_agent_name(cluster: SrvThredsCluster) -> str:
    """The persistence agent Deployment."""
    return component_name(cluster, "persistence-agent")


def headless_service_name(cluster: SrvThredsCluster, component: str) -> str:
    """The headless Service giving a StatefulSet's pods stable DNS names."""
    return f"{component_name(cluster, component)}-headless"


def broker_credentials_name(cluster: SrvThredsCluster, broker: BrokerName) -> str:
    """The generated credentials Secret of a managed broker."""
    return f"{cluster.name}-{broker}-credentials"


def config_map_name(cluster: SrvThredsCluster) -> str:
    """The ConfigMap of non-secret environment."""
    return f"{cluster.name}-config"


def redis_config_name(cluster: SrvThredsCluster) -> str:
    """The managed Redis configuration ConfigMap."""
    return f"{cluster.name}-redis-config"


def connections_secret_name(cluster: SrvThredsCluster) -> str:
    """The Secret of connection URLs the apps read (managed brokers only)."""
    return f"{cluster.name}-connections"


def service_account_name(cluster: SrvThredsCluster) -> str:
    """The ServiceAccount every pod of the instance runs as."""
    return f"{cluster.name}-srvthreds"


def backup_name(cluster: SrvThredsCluster, broker: BrokerName) -> str:
    """The backup CronJob of a broker."""
    return f"{cluster.name}-backup-{broker}"


def engine_selector(cluster: SrvThredsCluster) -> str:
    """The engine pods' label selector as a string (status.engineSelector, scale subresource)."""
    return f"app.kubernetes.io/instance={cluster.name},app.kubernetes.io/component=engine"


def service_host(cluster: SrvThredsCluster, service: str) -> str:
    """The in-cluster DNS name of one of the cluster's Services."""
    return f"{service}.{cluster.namespace}.svc"


class SpecError(ValueError):
    """A SrvThredsCluster that cannot be reconciled; `field_path` names the culprit."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field_path = field_path
        self.problem = problem


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


_MAX_LISTED_ERRORS = 5


def _first_error(exc: pydantic.ValidationError) -> SpecError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    problem = first["msg"]
    # Every problem is named, so one round trip fixes the whole spec; the list stays bounded
    # because it ends up in a status condition.
    others = [f"{_location(e['loc']) or 'spec'}: {e['msg']}" for e in errors[1:_MAX_LISTED_ERRORS]]
    if others:
        problem += "; also " + "; ".join(others)
    if len(errors) > _MAX_LISTED_ERRORS:
        problem += f"; and {len(errors) - _MAX_LISTED_ERRORS} more"
    return SpecError(_location(first["loc"]) or "spec", problem)


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _check_name(cluster: SrvThredsCluster) -> None:
    if len(cluster.name) > MAX_CLUSTER_NAME_LENGTH:
        raise SpecError("metadata.name", NAME_LIMIT_MESSAGE.removeprefix("metadata.name "))
    if not _DNS_LABEL.match(cluster.name):
        raise SpecError("metadata.name", "must be a DNS label starting with a letter")


def _check_components(spec: SrvThredsClusterSpec) -> None:
    for field, component in (
        ("engine", spec.engine),
        ("sessionAgent", spec.session_agent),
        ("persistenceAgent", spec.persistence_agent),
    ):
        scaling = component.autoscaling
        if scaling.min_replicas > scaling.max_replicas:
            raise SpecError(
                f"spec.{field}.autoscaling.minReplicas",
                "must be less than or equal to autoscaling.maxReplicas",
            )
        names = [variable.name for variable in component.env or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SpecError(f"spec.{field}.env", f"duplicate names: {', '.join(duplicates)}")
        for index, variable in enumerate(component.env or []):
            if variable.value is not None and variable.value_from is not None:
                raise SpecError(
                    f"spec.{field}.env[{index}]", "set either value or valueFrom, not both"
                )


def _check_brokers(spec: SrvThredsClusterSpec) -> None:
    brokers = spec.brokers
    for name, broker in (
        ("redis", brokers.redis),
        ("mongodb", brokers.mongodb),
        ("rabbitmq", brokers.rabbitmq),
    ):
        if broker.mode == "External" and broker.external is None:
            raise SpecError(f"spec.brokers.{name}.external", "required when mode is External")
        if broker.mode == "Managed" and broker.managed is None:
            raise SpecError(f"spec.brokers.{name}.managed", "required when mode is Managed")
    mongo = brokers.mongodb.managed
    if brokers.mongodb.mode == "Managed" and mongo is not None and mongo.members % 2 == 0:
        raise SpecError("spec.brokers.mongodb.managed.members", "must be odd (1, 3, 5 or 7)")


def _check_backup(spec: SrvThredsClusterSpec) -> None:
    backup = spec.backup
    if not backup.enabled:
        return
    if backup.schedule is None:
        raise SpecError("spec.backup.schedule", "required when backup is enabled")
    if backup.destination is None:
        raise SpecError("spec.backup.destination", "required when backup is enabled")
    if not re.match(CRON_PATTERN, backup.schedule):
        raise SpecError("spec.backup.schedule", "must be a cron expression of five fields")


def validate_cluster(cluster: SrvThredsCluster) -> None:
    """Re-check what CEL checks (the API server may predate a rule) plus what CEL cannot."""
    _check_name(cluster)
    _check_components(cluster.spec)
    _check_brokers(cluster.spec)
    _check_backup(cluster.spec)


def parse_cluster(body: Mapping[str, Any]) -> SrvThredsCluster:
    """A validated SrvThredsCluster from a raw object, or SpecError naming the bad field."""
    if not isinstance(body.get("metadata"), Mapping) or not body["metadata"].get("name"):
        raise SpecError("metadata.name", "required")
    if not isinstance(body.get("spec"), Mapping):
        raise SpecError("spec", "required and must be a mapping")
    try:
        cluster = SrvThredsCluster.model_validate(
            {"metadata": body["metadata"], "spec": body["spec"], "status": None}
        )
    except pydantic.ValidationError as exc:
        raise _first_error(exc) from None
    validate_cluster(cluster)
    return cluster
