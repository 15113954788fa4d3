"""The SrvThredsCluster models: defaults, derived names and parse_cluster's errors."""

from __future__ import annotations

import pytest

from srvthreds_operator import model
from tests.srvthreds_operator.helpers import body, cluster


def test_an_empty_spec_takes_the_documented_defaults():
    parsed = cluster()
    spec = parsed.spec
    assert spec.engine.replicas == 2
    assert spec.session_agent.replicas == 2
    assert spec.persistence_agent.replicas == 1
    assert spec.session_agent.service.port == 3000
    assert spec.image.repository == "ghcr.io/srvthreds/srvthreds"
    assert spec.image.pull_policy == "IfNotPresent"
    assert spec.engine.autoscaling.enabled is False
    assert spec.engine.disruption_budget.enabled is True
    assert spec.network_policy.enabled is True
    assert spec.backup.enabled is False
    assert spec.monitoring.scrape_annotations is True
    assert spec.monitoring.service_monitor.enabled is False
    assert spec.update_strategy.max_surge == "25%"
    assert spec.update_strategy.max_unavailable == 0
    assert parsed.managed_brokers() == ["redis", "mongodb", "rabbitmq"]
    mongo = spec.brokers.mongodb.managed
    assert mongo is not None
    assert (mongo.members, mongo.replica_set_name, mongo.storage.size) == (1, "rs0", "1Gi")


def test_camel_case_wire_names_round_trip():
    parsed = cluster(
        {
            "engine": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 55}},
            "sessionAgent": {"nodeIdPrefix": "org.x.s"},
        }
    )
    assert parsed.spec.engine.autoscaling.target_cpu_utilization_percentage == 55
    dumped = parsed.spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["engine"]["autoscaling"]["targetCPUUtilizationPercentage"] == 55
    assert dumped["sessionAgent"]["nodeIdPrefix"] == "org.x.s"


def test_derived_names_follow_the_contract():
    parsed = cluster()
    assert model.engine_name(parsed) == "demo-engine"
    assert model.session_agent_name(parsed) == "demo-session-agent"
    assert model.persistence_agent_name(parsed) == "demo-persistence-agent"
    assert model.headless_service_name(parsed, "session-agent") == "demo-session-agent-headless"
    assert model.broker_credentials_name(parsed, "redis") == "demo-redis-credentials"
    assert model.connections_secret_name(parsed) == "demo-connections"
    assert model.config_map_name(parsed) == "demo-config"
    assert model.redis_config_name(parsed) == "demo-redis-config"
    assert model.service_account_name(parsed) == "demo-srvthreds"
    assert model.backup_name(parsed, "mongodb") == "demo-backup-mongodb"
    assert model.engine_selector(parsed) == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/component=engine"
    )


def test_pause_comes_from_the_spec_or_the_annotation():
    assert not cluster().paused
    assert cluster({"paused": True}).paused
    assert cluster(annotations={"srvthreds.io/reconcile": "paused"}).paused


@pytest.mark.parametrize(
    ("spec", "field_path", "fragment"),
    [
        ({"engine": {"replicas": -1}}, "spec.engine.replicas", "greater than or equal to 0"),
        (
            {"engine": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "spec.engine.autoscaling.minReplicas",
            "less than or equal",
        ),
        (
            {"brokers": {"redis": {"mode": "External"}}},
            "spec.brokers.redis.external",
            "required when mode is External",
        ),
        (
            {"brokers": {"mongodb": {"mode": "Managed", "managed": None}}},
            "spec.brokers.mongodb.managed",
            "required when mode is Managed",
        ),
        (
            {"brokers": {"mongodb": {"managed": {"members": 2}}}},
            "spec.brokers.mongodb.managed.members",
            "odd",
        ),
        ({"backup": {"enabled": True}}, "spec.backup.schedule", "required"),
        (
            {"backup": {"enabled": True, "schedule": "0 2 * * *"}},
            "spec.backup.destination",
            "required",
        ),
        (
            {
                "backup": {
                    "enabled": True,
                    "schedule": "every night",
                    "destination": {"s3": {"bucket": "bkt", "credentialsSecretRef": {"name": "s"}}},
                }
            },
            "spec.backup.schedule",
            "cron",
        ),
        (
            {"engine": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "spec.engine.env",
            "duplicate names: A",
        ),
        (
            {"engine": {"env": [{"name": "A", "value": "1", "valueFrom": {"x": {}}}]}},
            "spec.engine.env[0]",
            "either value or valueFrom",
        ),
        ({"engine": {"replicaz": 3}}, "spec.engine.replicaz", "Extra inputs"),
        ({"image": {"pullPolicy": "Sometimes"}}, "spec.image.pullPolicy", "'Always'"),
        ({"version": "latest"}, "spec.version", "pattern"),
        (
            {"brokers": {"redis": {"managed": {"storage": {"size": "lots"}}}}},
            "spec.brokers.redis.managed.storage.size",
            "pattern",
        ),
    ],
)
def test_parse_cluster_names_the_bad_field(spec, field_path, fragment):
    with pytest.raises(model.SpecError) as caught:
        model.parse_cluster(body(spec))
    assert caught.value.field_path == field_path
    assert fragment in caught.value.problem
    assert str(caught.value).startswith(field_path)


def test_a_name_too_long_for_child_names_is_refused():
    with pytest.raises(model.SpecError) as caught:
        model.parse_cluster(body(name="x" * (model.MAX_CLUSTER_NAME_LENGTH + 1)))
    assert caught.value.field_path == "metadata.name"
    assert f"at most {model.MAX_CLUSTER_NAME_LENGTH} characters" in caught.value.problem
    assert "-backup-mongodb" in caught.value.problem


def test_a_body_without_spec_or_name_is_refused():
    with pytest.raises(model.SpecError, match=r"^spec: required"):
        model.parse_cluster({"metadata": {"name": "a"}})
    with pytest.raises(model.SpecError, match=r"^metadata.name: required"):
        model.parse_cluster({"metadata": {}, "spec": {"version": "1.0.0"}})


def test_status_accepts_what_the_operator_writes_and_ignores_the_rest():
    status = model.SrvThredsClusterStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReady"}],
            "components": {"engine": {"replicas": 2, "readyReplicas": 2}},
            "engineSelector": "a=b",
            "kopf": {"progress": {}},
            "somethingNew": 1,
        }
    )
    assert status.components is not None
    assert status.components.engine is not None
    assert status.components.engine.ready_replicas == 2
    assert status.conditions is not None
    assert status.conditions[0].reason == "AllReady"
