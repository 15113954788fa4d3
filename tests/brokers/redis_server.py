"""redis-server on a loopback port, optionally persisting to its folder (AOF, fsync always)."""

from __future__ import annotations

import os
from pathlib import Path

import redis
import redis.exceptions

from tests.brokers.binaries import redis_server_binary
from tests.brokers.server import Launch, TestServer

# Each test gets its own database number (tests.brokers.fixtures.redis_db).
DATABASES = 1024


class RedisServer(TestServer):
    """redis-server with its config, data and log under `root`.

    persistent=False: nothing is written to disk and a restart starts empty.
    persistent=True: an append-only file with fsync on every write plus an RDB snapshot on
    shutdown, so both `stop()` and `kill()` keep every acknowledged write.
    """

    name = "redis"
    start_timeout = 30.0

    def __init__(self, *, root: Path, port: int | None = None, persistent: bool = False) -> None:
        super().__init__(root=root, port=port)
        self.persistent = persistent
        self.data_dir = root / "data"
        self.config_path = root / "redis.conf"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["appendonly yes", "appendfsync always", 'save "3600 1"']
            if self.persistent
            else ["appendonly no", 'save ""']
        )
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.data_dir}",
            "daemonize no",
            'logfile ""',
            "protected-mode yes",
            f"databases {DATABASES}",
            *persistence,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _launches(self) -> list[Launch]:
        argv = [str(redis_server_binary()), str(self.config_path)]
        return [Launch("redis-server", argv, dict(os.environ))]

    def _ready(self) -> bool:
        # PING answers LOADING while an append-only file is replayed: not ready yet.
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()
