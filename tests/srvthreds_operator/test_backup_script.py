"""The backup upload script, run by a real shell against a fake `aws` that records its calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from srvthreds_operator.specs.backup import UPLOAD_SCRIPT

FAKE_AWS = """#!/bin/sh
echo "$*" >> "$AWS_LOG"
case "$*" in
  *" s3 ls "*|"s3 ls "*)
    for day in 01 02 03 04 05; do
      echo "2026-01-$day 02:00:00       1234 mongodb-202601${day}T020000Z.archive.gz"
    done ;;
esac
"""


@pytest.fixture
def fake_aws(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(FAKE_AWS)
    aws.chmod(0o755)
    return bin_dir


def _run(bin_dir: Path, tmp_path: Path, **env: str) -> list[str]:
    log = tmp_path / "aws.log"
    shell = shutil.which("sh")
    assert shell is not None, "a POSIX shell is needed to run the backup script"
    variables = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_LOG": str(log),
        "BROKER": "mongodb",
        "S3_BUCKET": "bkt",
        "S3_PREFIX": "prod",
        "KEEP_LAST": "2",
    } | env
    result = subprocess.run(
        [shell, "-c", UPLOAD_SCRIPT], env=variables, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()


def test_upload_then_keep_only_the_newest(fake_aws, tmp_path):
    calls = _run(fake_aws, tmp_path)
    assert calls[0] == "s3 cp --recursive /backup/ s3://bkt/prod/mongodb/"
    assert calls[1] == "s3 ls s3://bkt/prod/mongodb/"
    assert calls[2:] == [
        f"s3 rm s3://bkt/prod/mongodb/mongodb-202601{day}T020000Z.archive.gz"
        for day in ("01", "02", "03")
    ]


def test_a_custom_endpoint_and_no_prefix(fake_aws, tmp_path):
    calls = _run(fake_aws, tmp_path, S3_PREFIX="", S3_ENDPOINT="https://minio:9000", KEEP_LAST="5")
    assert calls == [
        "--endpoint-url https://minio:9000 s3 cp --recursive /backup/ s3://bkt/mongodb/",
        "--endpoint-url https://minio:9000 s3 ls s3://bkt/mongodb/",
    ]
