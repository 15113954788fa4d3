"""The managed broker builders and the generated Secrets."""

from __future__ import annotations

import base64

from srvthreds_operator.specs import Manifest
from tests.srvthreds_operator.helpers import children, find, names

EXTERNAL = {
    broker: {"mode": "External", "external": {"secretRef": {"name": f"ext-{broker}"}}}
    for broker in ("redis", "mongodb", "rabbitmq")
}


def _decoded(secret: Manifest) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_managed_brokers_get_statefulsets_services_and_claims():
    built = children()
    for broker, port in (("redis", 6379), ("mongodb", 27017), ("rabbitmq", 5672)):
        statefulset = find(built, "StatefulSet", f"demo-{broker}")
        spec = statefulset["spec"]
        assert spec["serviceName"] == f"demo-{broker}-headless"
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
        service = find(built, "Service", f"demo-{broker}")
        assert service["spec"]["ports"][0]["port"] == port
        assert find(built, "Service", f"demo-{broker}-headless")["spec"]["clusterIP"] == "None"
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 999
        assert pod["securityContext"]["fsGroup"] > 0


def test_storage_class_and_size_reach_the_claim():
    spec = {
        "brokers": {"redis": {"managed": {"storage": {"size": "5Gi", "storageClassName": "fast"}}}}
    }
    (claim,) = find(children(spec), "StatefulSet", "demo-redis")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_redis_runs_with_keyspace_notifications_and_its_password():
    built = children()
    config = find(built, "ConfigMap", "demo-redis-config")["data"]["redis.conf"]
    assert "notify-keyspace-events KA" in config
    (container,) = find(built, "StatefulSet", "demo-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--requirepass" in container["command"][-1]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-redis-credentials",
        "key": "password",
    }


def test_mongodb_is_a_replica_set_with_a_keyfile():
    spec = {"brokers": {"mongodb": {"managed": {"members": 3, "replicaSetName": "rsx"}}}}
    built = children(spec)
    statefulset = find(built, "StatefulSet", "demo-mongodb")
    assert statefulset["spec"]["replicas"] == 3
    pod = statefulset["spec"]["template"]["spec"]
    mongod, initiator = pod["containers"]
    assert mongod["args"][:2] == ["--replSet", "rsx"]
    assert "--keyFile" in mongod["args"]
    script = initiator["command"][-1]
    assert "rs.initiate" in script
    assert "demo-mongodb-2.demo-mongodb-headless.ns.svc:27017" in script
    assert pod["initContainers"][0]["name"] == "keyfile"
    url = _decoded(find(built, "Secret", "demo-connections"))["MONGODB_URL"]
    assert url.startswith("mongodb://root:GENERATED-MONGODB-PASSWORD@demo-mongodb-0.")
    assert "demo-mongodb-2.demo-mongodb-headless.ns.svc:27017/?replicaSet=rsx" in url


def test_generated_secrets_hold_the_credentials_and_urls():
    built = children()
    assert _decoded(find(built, "Secret", "demo-redis-credentials")) == {
        "password": "GENERATED-REDIS-PASSWORD"
    }
    assert set(_decoded(find(built, "Secret", "demo-mongodb-credentials"))) == {
        "username",
        "password",
        "keyfile",
    }
    urls = _decoded(find(built, "Secret", "demo-connections"))
    assert urls["REDIS_URL"] == "redis://:GENERATED-REDIS-PASSWORD@demo-redis.ns.svc:6379/0"
    assert urls["RABBITMQ_URL"] == (
        "amqp://srvthreds:GENERATED-RABBITMQ-PASSWORD@demo-rabbitmq.ns.svc:5672/"
    )


def test_passwords_are_url_encoded():
    from tests.srvthreds_operator.helpers import inputs

    credentials = dict(inputs().credentials)
    credentials["redis"] = {"password": "a/b@c"}
    urls = _decoded(find(children(credentials=credentials), "Secret", "demo-connections"))
    assert urls["REDIS_URL"].startswith("redis://:a%2Fb%40c@")


def test_external_brokers_get_no_broker_objects():
    built = children({"brokers": EXTERNAL})
    assert names(built, "StatefulSet") == ["demo-session-agent"]
    assert [
        n for n in names(built, "Service") if "redis" in n or "mongo" in n or "rabbit" in n
    ] == []
    assert names(built, "Secret") == ["demo-connections"]
    assert find(built, "Secret", "demo-connections")["data"] == {}
    assert names(built, "ConfigMap") == ["demo-config"]


def test_a_custom_broker_image_is_used():
    spec = {"brokers": {"rabbitmq": {"managed": {"image": "mirror/rabbitmq:3"}}}}
    statefulset = find(children(spec), "StatefulSet", "demo-rabbitmq")
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == "mirror/rabbitmq:3"


def test_an_app_release_does_not_restart_the_brokers():
    before = find(children(), "StatefulSet", "demo-redis")["spec"]["template"]
    after_build = children({"version": "1.1.0"})
    after = find(after_build, "StatefulSet", "demo-redis")["spec"]["template"]
    assert before == after
    assert "app.kubernetes.io/version" not in after["metadata"]["labels"]
    engine = find(after_build, "Deployment", "demo-engine")
    assert engine["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.1.0")
