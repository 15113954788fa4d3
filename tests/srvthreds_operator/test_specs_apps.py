"""The app workload builders: Deployments, the session agent StatefulSet, Services, HPA, PDB."""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_operator.specs import Manifest
from tests.srvthreds_operator.helpers import children, find, names


def _container(manifest: Manifest) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container["env"]}


def test_engine_deployment_defaults():
    engine = find(children(), "Deployment", "demo-engine")
    spec = engine["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "srvthreds",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "engine",
    }
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    container = _container(engine)
    assert container["image"] == "ghcr.io/srvthreds/srvthreds:1.0.0"
    assert container["envFrom"] == [{"configMapRef": {"name": "demo-config"}}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["ports"][0] == {"name": "http", "containerPort": 3001, "protocol": "TCP"}
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    template = engine["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "3001"
    assert template["spec"]["serviceAccountName"] == "demo-srvthreds"


def test_managed_broker_urls_come_from_the_connections_secret():
    env = _env(_container(find(children(), "Deployment", "demo-engine")))
    for variable in ("REDIS_URL", "MONGODB_URL", "RABBITMQ_URL"):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {
            "name": "demo-connections",
            "key": variable,
        }


def test_external_broker_urls_come_from_the_referenced_secret():
    spec = {
        "brokers": {
            "mongodb": {
                "mode": "External",
                "external": {"secretRef": {"name": "my-mongo"}, "urlKey": "uri"},
            }
        }
    }
    env = _env(_container(find(children(spec), "Deployment", "demo-persistence-agent")))
    assert env["MONGODB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-mongo", "key": "uri"}


def test_a_digest_pins_the_image_and_a_tag_overrides_the_version():
    digest = "sha256:" + "a" * 64
    built = children({"image": {"repository": "r/x", "tag": "9.9", "digest": digest}})
    assert _container(find(built, "Deployment", "demo-engine"))["image"] == f"r/x@{digest}"
    built = children({"image": {"repository": "r/x", "tag": "9.9", "pullSecrets": [{"name": "p"}]}})
    engine = find(built, "Deployment", "demo-engine")
    assert _container(engine)["image"] == "r/x:9.9"
    assert engine["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "p"}]


def test_user_env_overrides_by_name_and_adds():
    spec = {
        "engine": {
            "env": [
                {"name": "SRVTHREDS_COMPONENT", "value": "custom"},
                {"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ]
        }
    }
    env = _env(_container(find(children(spec), "Deployment", "demo-engine")))
    assert env["SRVTHREDS_COMPONENT"] == {"name": "SRVTHREDS_COMPONENT", "value": "custom"}
    assert env["EXTRA"]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "k"}


def test_session_agent_is_a_statefulset_with_per_pod_node_ids():
    built = children({"sessionAgent": {"nodeIdPrefix": "org.x.session", "replicas": 3}})
    agent = find(built, "StatefulSet", "demo-session-agent")
    assert agent["spec"]["replicas"] == 3
    assert agent["spec"]["serviceName"] == "demo-session-agent-headless"
    container = _container(agent)
    env = _env(container)
    assert env["NODE_ID_PREFIX"]["value"] == "org.x.session"
    assert "pod-index" in env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert {"name": "session", "containerPort": 3000, "protocol": "TCP"} in container["ports"]
    service = find(built, "Service", "demo-session-agent")
    assert service["spec"]["ports"][0]["port"] == 3000
    assert service["spec"]["ports"][0]["targetPort"] == "session"
    headless = find(built, "Service", "demo-session-agent-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_service_type_port_and_annotations_are_configurable():
    service_spec = {"type": "LoadBalancer", "port": 8080, "annotations": {"a": "b"}}
    built = children({"sessionAgent": {"service": service_spec}})
    service = find(built, "Service", "demo-session-agent")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["metadata"]["annotations"] == {"a": "b"}


def test_persistence_agent_gets_its_node_id():
    env = _env(_container(find(children(), "Deployment", "demo-persistence-agent")))
    assert env["NODE_ID"]["value"] == "org.wt.persistence1"


@pytest.mark.parametrize(
    ("component", "kind", "field"),
    [
        ("engine", "Deployment", "engine"),
        ("session-agent", "StatefulSet", "sessionAgent"),
        ("persistence-agent", "Deployment", "persistenceAgent"),
    ],
)
def test_workloads_an_hpa_owns_carry_no_replicas(component, kind, field):
    spec = {
        field: {
            "replicas": 4,
            "autoscaling": {
                "enabled": True,
                "minReplicas": 3,
                "maxReplicas": 9,
                "targetMemoryUtilizationPercentage": 80,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
        }
    }
    built = children(spec)
    workload = find(built, kind, f"demo-{component}")
    assert "replicas" not in workload["spec"]
    hpa = find(built, "HorizontalPodAutoscaler", f"demo-{component}")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": f"demo-{component}",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    targets = {
        metric["resource"]["name"]: metric["resource"]["target"]["averageUtilization"]
        for metric in hpa["spec"]["metrics"]
    }
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


def test_no_hpa_without_autoscaling():
    assert names(children(), "HorizontalPodAutoscaler") == []


def test_pdb_is_skipped_at_one_replica_and_when_disabled():
    built = children()
    assert names(built, "PodDisruptionBudget") == ["demo-engine", "demo-session-agent"]
    pdb = find(built, "PodDisruptionBudget", "demo-engine")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "engine"
    built = children({"engine": {"disruptionBudget": {"enabled": False}}})
    assert names(built, "PodDisruptionBudget") == ["demo-session-agent"]


def test_pdb_under_an_hpa_follows_min_replicas():
    spec = {"engine": {"autoscaling": {"enabled": True, "minReplicas": 1}}}
    assert "demo-engine" not in names(children(spec), "PodDisruptionBudget")


def test_default_topology_spread_and_user_scheduling():
    engine = find(children(), "Deployment", "demo-engine")
    spread = engine["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in spread] == [
        ("kubernetes.io/hostname", "ScheduleAnyway"),
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
    scheduling = {
        "nodeSelector": {"pool": "apps"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
        "topologySpreadConstraints": [],
        "priorityClassName": "high",
    }
    pod = find(children({"engine": {"scheduling": scheduling}}), "Deployment", "demo-engine")
    pod_spec = pod["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod_spec
    assert pod_spec["nodeSelector"] == {"pool": "apps"}
    assert pod_spec["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert pod_spec["priorityClassName"] == "high"


def test_pod_template_override_merges_containers_by_name():
    override = {
        "metadata": {"annotations": {"extra": "yes"}},
        "spec": {
            "containers": [
                {"name": "engine", "env": [{"name": "ADDED", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"},
            ],
            "terminationGracePeriodSeconds": 60,
        },
    }
    engine = find(children({"engine": {"podTemplate": override}}), "Deployment", "demo-engine")
    template = engine["spec"]["template"]
    containers = template["spec"]["containers"]
    assert [c["name"] for c in containers] == ["engine", "sidecar"]
    env_names = [item["name"] for item in containers[0]["env"]]
    assert "ADDED" in env_names
    assert "REDIS_URL" in env_names
    assert template["spec"]["terminationGracePeriodSeconds"] == 60
    assert template["metadata"]["annotations"]["extra"] == "yes"
    assert "srvthreds.io/config-hash" in template["metadata"]["annotations"]


def test_run_configuration_config_maps_are_mounted():
    spec = {
        "config": {
            "patterns": {"configMapRef": {"name": "pats"}},
            "runConfig": {"configMapRef": {"name": "run"}},
        }
    }
    built = children(spec)
    engine = find(built, "Deployment", "demo-engine")
    volumes = {v["name"]: v for v in engine["spec"]["template"]["spec"]["volumes"]}
    assert volumes["patterns"]["configMap"] == {"name": "pats"}
    assert volumes["run-config"]["configMap"] == {"name": "run"}
    mounts = {m["name"]: m["mountPath"] for m in _container(engine)["volumeMounts"]}
    assert mounts == {
        "tmp": "/tmp",
        "patterns": "/etc/srvthreds/patterns",
        "run-config": "/etc/srvthreds/run-config",
    }
    data = find(built, "ConfigMap", "demo-config")["data"]
    assert data["PATTERNS_DIR"] == "/etc/srvthreds/patterns"
    assert data["PROFILE_DIR"] == "/etc/srvthreds/run-config"
    assert data["LOG_LEVEL"] == "info"
    assert data["LOG_FORMAT"] == "json"


def test_scrape_annotations_can_be_turned_off():
    engine = find(
        children({"monitoring": {"scrapeAnnotations": False}}), "Deployment", "demo-engine"
    )
    assert "prometheus.io/scrape" not in engine["spec"]["template"]["metadata"]["annotations"]


def test_strategic_merge_deletes_with_null_and_replaces_unnamed_lists():
    from srvthreds_operator.specs.common import strategic_merge

    base = {"a": {"b": 1, "c": 2}, "args": ["x"], "containers": [{"name": "m", "image": "i"}]}
    patch = {"a": {"c": None}, "args": ["y", "z"], "containers": [{"name": "m", "image": "j"}]}
    assert strategic_merge(base, patch) == {
        "a": {"b": 1},
        "args": ["y", "z"],
        "containers": [{"name": "m", "image": "j"}],
    }
    assert base["a"] == {"b": 1, "c": 2}
