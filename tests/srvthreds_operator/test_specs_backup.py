"""The backup CronJobs: dump commands, S3 credentials, retention, suspend, no overlap."""

from __future__ import annotations

from typing import Any

from srvthreds_operator.specs import Manifest
from tests.srvthreds_operator.helpers import children, find, names

BACKUP = {
    "backup": {
        "enabled": True,
        "schedule": "30 3 * * *",
        "suspend": True,
        "retention": {"keepLast": 5},
        "destination": {
            "s3": {
                "bucket": "bkt",
                "prefix": "/team/",
                "endpoint": "https://s3.example",
                "region": "eu-west-1",
                "credentialsSecretRef": {"name": "s3-creds"},
            }
        },
    }
}


def _job(broker: str) -> tuple[Manifest, dict[str, Any]]:
    cronjob = find(children(BACKUP), "CronJob", f"demo-backup-{broker}")
    return cronjob, cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_no_cronjobs_without_backup():
    assert names(children(), "CronJob") == []


def test_cronjob_schedule_suspend_and_concurrency():
    cronjob, _ = _job("mongodb")
    spec = cronjob["spec"]
    assert spec["schedule"] == "30 3 * * *"
    assert spec["suspend"] is True
    assert spec["concurrencyPolicy"] == "Forbid"
    assert cronjob["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"


def test_mongodb_backup_dumps_a_gzipped_archive_and_uploads_it():
    _, pod = _job("mongodb")
    (dump,) = pod["initContainers"]
    command = dump["command"][-1]
    assert "mongodump" in command
    assert "--archive=" in command
    assert "--gzip" in command
    assert dump["env"] == [
        {
            "name": "MONGODB_URL",
            "valueFrom": {"secretKeyRef": {"name": "demo-connections", "key": "MONGODB_URL"}},
        }
    ]
    (upload,) = pod["containers"]
    env = {item["name"]: item for item in upload["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": key}
    assert env["S3_BUCKET"]["value"] == "bkt"
    assert env["S3_PREFIX"]["value"] == "team"
    assert env["S3_ENDPOINT"]["value"] == "https://s3.example"
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    assert env["KEEP_LAST"]["value"] == "5"
    script = upload["command"][-1]
    assert script.index("s3 cp") < script.index("s3 rm")
    assert pod["restartPolicy"] == "Never"


def test_redis_backup_takes_an_rdb_snapshot():
    _, pod = _job("redis")
    (dump,) = pod["initContainers"]
    assert "redis-cli" in dump["command"][-1]
    assert "--rdb" in dump["command"][-1]
    assert dump["env"][0]["name"] == "REDIS_URL"
    assert dump["image"] == "redis:7.4-alpine"


def test_backup_of_an_external_broker_reads_its_secret():
    spec = BACKUP | {
        "brokers": {"mongodb": {"mode": "External", "external": {"secretRef": {"name": "m"}}}}
    }
    cronjob = find(children(spec), "CronJob", "demo-backup-mongodb")
    (dump,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]
    assert dump["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "m", "key": "url"}
