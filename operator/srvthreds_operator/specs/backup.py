"""Builders of the backup CronJobs: mongodump and a Redis RDB snapshot uploaded to S3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srvthreds_operator import model
from srvthreds_operator.model import BrokerName, SrvThredsCluster
from srvthreds_operator.specs import common
from srvthreds_operator.specs.apps import broker_url_env
from srvthreds_operator.specs.brokers import DEFAULT_BROKER_IMAGES
from srvthreds_operator.specs.common import Manifest
from srvthreds_operator.specs.config import URL_ENV
from srvthreds_operator.specs.inputs import ReconcileInputs
from srvthreds_operator.specs.network import BACKUP_COMPONENT

BACKUP_DIR = "/backup"
# The dump runs first (init container, broker image), then the upload (aws CLI image).
DUMP_COMMANDS: Mapping[BrokerName, str] = {
    "mongodb": (
        'mongodump --uri="$MONGODB_URL" --gzip '
        f'--archive="{BACKUP_DIR}/mongodb-$(date -u +%Y%m%dT%H%M%SZ).archive.gz"'
    ),
    "redis": (
        'redis-cli -u "$REDIS_URL" --no-auth-warning '
        f'--rdb "{BACKUP_DIR}/redis-$(date -u +%Y%m%dT%H%M%SZ).rdb"'
    ),
}
UPLOAD_SCRIPT = """\
set -eu
endpoint=${S3_ENDPOINT:+--endpoint-url "$S3_ENDPOINT"}
target="s3://$S3_BUCKET/${S3_PREFIX:+$S3_PREFIX/}$BROKER/"
aws $endpoint s3 cp --recursive /backup/ "$target"
# Retention after a successful upload: keep the newest $KEEP_LAST (names sort by time).
aws $endpoint s3 ls "$target" | awk '{print $4}' | grep -v '^$' | sort \\
  | head -n "-$KEEP_LAST" | while read -r old; do aws $endpoint s3 rm "$target$old"; done
"""


def _dump_image(cluster: SrvThredsCluster, broker: BrokerName) -> str:
    managed = cluster.broker(broker).managed
    if cluster.broker(broker).mode == "Managed" and managed is not None and managed.image:
        return managed.image
    return DEFAULT_BROKER_IMAGES[broker]


def _s3_env(cluster: SrvThredsCluster, broker: BrokerName) -> list[dict[str, Any]]:
    backup = cluster.spec.backup
    destination = backup.destination
    if destination is None:
        raise model.SpecError("spec.backup.destination", "required when backup is enabled")
    s3 = destination.s3
    secret = s3.credentials_secret_ref.name
    env: list[dict[str, Any]] = [
        {"name": "BROKER", "value": broker},
        {"name": "S3_BUCKET", "value": s3.bucket},
        {"name": "S3_PREFIX", "value": s3.prefix.strip("/")},
        {"name": "AWS_DEFAULT_REGION", "value": s3.region},
        {"name": "KEEP_LAST", "value": str(backup.retention.keep_last)},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108
    ]
    if s3.endpoint:
        env.append({"name": "S3_ENDPOINT", "value": s3.endpoint})
    env += [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    return env


def _job_pod(
    cluster: SrvThredsCluster, broker: BrokerName, *, inputs: ReconcileInputs
) -> dict[str, Any]:
    url_env = [item for item in broker_url_env(cluster) if item["name"] == URL_ENV[broker]]
    mounts = [{"name": "backup", "mountPath": BACKUP_DIR}, {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    resources = common.resources(None, component="backup")
    dump = {
        "name": "dump",
        "image": _dump_image(cluster, broker),
        "command": ["sh", "-c", f"set -eu; {DUMP_COMMANDS[broker]}"],
        "env": url_env,
        "resources": resources,
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    upload = {
        "name": "upload",
        "image": cluster.spec.backup.uploader_image,
        "command": ["sh", "-c", UPLOAD_SCRIPT],
        "env": _s3_env(cluster, broker),
        "resources": resources,
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    secret_hashes = {
        key: value for key, value in inputs.content_hashes.items() if key.startswith("Secret/")
    }
    return {
        "metadata": {
            "labels": common.labels(cluster, BACKUP_COMPONENT) | {"srvthreds.io/backup-of": broker},
            "annotations": {model.CONFIG_HASH_ANNOTATION: common.content_hash(secret_hashes)},
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": model.service_account_name(cluster),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": common.pod_security_context(),
            "initContainers": [dump],
            "containers": [upload],
            "volumes": [{"name": "backup", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }


def build_backup_cronjob(
    cluster: SrvThredsCluster, *, broker: BrokerName, inputs: ReconcileInputs
) -> Manifest:
    """`<name>-backup-<broker>`: dump, upload, prune to retention.keepLast; never overlapping."""
    backup = cluster.spec.backup
    if backup.schedule is None:
        raise model.SpecError("spec.backup.schedule", "required when backup is enabled")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": common.metadata(
            cluster,
            name=model.backup_name(cluster, broker),
            component=BACKUP_COMPONENT,
            owner_uid=inputs.owner_uid,
        ),
        "spec": {
            "schedule": backup.schedule,
            "timeZone": "Etc/UTC",
            "suspend": backup.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": common.labels(cluster, BACKUP_COMPONENT)},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3600,
                    "ttlSecondsAfterFinished": 86400,
                    "template": _job_pod(cluster, broker, inputs=inputs),
                },
            },
        },
    }


def build_backup_cronjobs(cluster: SrvThredsCluster, *, inputs: ReconcileInputs) -> list[Manifest]:
    """Both backup CronJobs when backup is enabled."""
    if not cluster.spec.backup.enabled:
        return []
    return [
        build_backup_cronjob(cluster, broker=broker, inputs=inputs)
        for broker in ("mongodb", "redis")
    ]
