"""The NetworkPolicies: default deny, then exactly the allowed traffic."""

from __future__ import annotations

from typing import Any

from tests.srvthreds_operator.helpers import children, find, names

APPS = {
    "matchLabels": {
        "app.kubernetes.io/name": "srvthreds",
        "app.kubernetes.io/instance": "demo",
        "srvthreds.io/role": "app",
    }
}


def _pods(component: str) -> dict[str, Any]:
    return {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "srvthreds",
                "app.kubernetes.io/instance": "demo",
                "app.kubernetes.io/component": component,
            }
        }
    }


def _ports(rule: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((port["protocol"], port["port"]) for port in rule["ports"])


def test_default_deny_covers_every_pod_of_the_instance_both_ways():
    deny = find(children(), "NetworkPolicy", "demo-default-deny")["spec"]
    assert deny["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "srvthreds", "app.kubernetes.io/instance": "demo"}
    }
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert deny["ingress"] == []
    assert deny["egress"] == []


def test_dns_egress_on_udp_and_tcp_53_to_the_cluster_dns():
    dns = find(children(), "NetworkPolicy", "demo-allow-dns")["spec"]
    assert dns["policyTypes"] == ["Egress"]
    (rule,) = dns["egress"]
    assert _ports(rule) == [("TCP", 53), ("UDP", 53)]
    assert rule["to"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    ]


def test_apps_reach_each_managed_broker_port_only():
    policy = find(children(), "NetworkPolicy", "demo-allow-apps-to-brokers")["spec"]
    assert policy["podSelector"] == APPS
    assert policy["policyTypes"] == ["Egress"]
    assert [(rule["to"], _ports(rule)) for rule in policy["egress"]] == [
        ([_pods("redis")], [("TCP", 6379)]),
        ([_pods("mongodb")], [("TCP", 27017)]),
        ([_pods("rabbitmq")], [("TCP", 5672)]),
    ]


def test_external_brokers_get_egress_on_their_port_to_the_given_peers_or_anywhere():
    spec = {
        "brokers": {
            "redis": {
                "mode": "External",
                "external": {"secretRef": {"name": "r"}, "port": 6380},
            },
            "mongodb": {
                "mode": "External",
                "external": {
                    "secretRef": {"name": "m"},
                    "egressTo": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                },
            },
        }
    }
    built = children(spec)
    redis, mongo, rabbit = find(built, "NetworkPolicy", "demo-allow-apps-to-brokers")["spec"][
        "egress"
    ]
    assert redis == {"ports": [{"protocol": "TCP", "port": 6380}]}
    assert mongo == {
        "ports": [{"protocol": "TCP", "port": 27017}],
        "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
    }
    assert rabbit["to"] == [_pods("rabbitmq")]
    assert "demo-allow-redis" not in names(built, "NetworkPolicy")
    assert "demo-allow-mongodb" not in names(built, "NetworkPolicy")


def test_brokers_admit_apps_and_backups_and_their_own_members():
    built = children()
    redis = find(built, "NetworkPolicy", "demo-allow-redis")["spec"]
    (clients,) = redis["ingress"]
    assert clients["from"] == [{"podSelector": APPS}, _pods("backup")]
    assert _ports(clients) == [("TCP", 6379)]
    assert redis["egress"] == []
    mongo = find(built, "NetworkPolicy", "demo-allow-mongodb")["spec"]
    assert mongo["ingress"][1] == {
        "from": [_pods("mongodb")],
        "ports": [{"protocol": "TCP", "port": 27017}],
    }
    assert mongo["egress"] == [
        {"to": [_pods("mongodb")], "ports": [{"protocol": "TCP", "port": 27017}]}
    ]
    rabbit = find(built, "NetworkPolicy", "demo-allow-rabbitmq")["spec"]
    assert _ports(rabbit["ingress"][1]) == [("TCP", 4369), ("TCP", 25672)]
    assert _ports(rabbit["egress"][0]) == [("TCP", 4369), ("TCP", 25672)]


def test_session_agent_ingress_only_from_the_configured_peers():
    assert "demo-allow-session-agent-ingress" not in names(children(), "NetworkPolicy")
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]
    built = children({"networkPolicy": {"ingressFrom": peers}})
    policy = find(built, "NetworkPolicy", "demo-allow-session-agent-ingress")["spec"]
    assert policy["podSelector"] == _pods("session-agent")["podSelector"]
    assert policy["ingress"] == [{"from": peers, "ports": [{"protocol": "TCP", "port": 3000}]}]
    assert policy["policyTypes"] == ["Ingress"]


def test_prometheus_scrapes_port_3001_only_when_monitoring_is_on():
    policy = find(children(), "NetworkPolicy", "demo-allow-prometheus")["spec"]
    assert policy["podSelector"] == APPS
    assert policy["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 3001}]}
    ]
    built = children({"monitoring": {"scrapeAnnotations": False}})
    assert "demo-allow-prometheus" not in names(built, "NetworkPolicy")


def test_backup_jobs_reach_the_brokers_and_the_object_store():
    spec = {
        "backup": {
            "enabled": True,
            "schedule": "@daily",
            "destination": {
                "s3": {
                    "bucket": "bkt",
                    "endpoint": "https://minio.example:9000",
                    "credentialsSecretRef": {"name": "s3"},
                }
            },
        }
    }
    policy = find(children(spec), "NetworkPolicy", "demo-allow-backup")["spec"]
    assert policy["podSelector"] == _pods("backup")["podSelector"]
    mongo, redis, store = policy["egress"]
    assert mongo["to"] == [_pods("mongodb")]
    assert redis["to"] == [_pods("redis")]
    assert store == {"ports": [{"protocol": "TCP", "port": 9000}]}


def test_disabled_network_policy_builds_none():
    assert names(children({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []
