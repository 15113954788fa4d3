"""FerretDB (MongoDB wire protocol) on SQLite files in its own folder, on a loopback port."""

from __future__ import annotations

import os
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.brokers.binaries import ferretdb_binary
from tests.brokers.server import Launch, TestServer


class FerretDbServer(TestServer):
    """`ferretdb --handler=sqlite`: one SQLite file per database under `root/data`.

    The data survives `stop()`/`kill()`. The debug HTTP listener (default 127.0.0.1:8088,
    shared by every instance) and telemetry are off.
    """

    name = "ferretdb"
    start_timeout = 30.0

    def __init__(self, *, root: Path, port: int | None = None) -> None:
        super().__init__(root=root, port=port)
        self.data_dir = root / "data"
        self.state_dir = root / "state"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _launches(self) -> list[Launch]:
        argv = [
            str(ferretdb_binary()),
            "--handler=sqlite",
            # A directory URI: the trailing slash is required.
            f"--sqlite-url=file:{self.data_dir}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--state-dir={self.state_dir}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=INFO",
        ]
        return [Launch("ferretdb", argv, dict(os.environ))]

    def _ready(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
        except PyMongoError:
            return False
        finally:
            client.close()
        return True
