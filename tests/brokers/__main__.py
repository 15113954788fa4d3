"""`python -m tests.brokers`: starts each test service a few times and prints its start times."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.rabbitmq_server import RabbitMqServer
from tests.brokers.redis_server import RedisServer
from tests.brokers.server import TestServer

KINDS: dict[str, type[TestServer]] = {
    "redis": RedisServer,
    "rabbitmq": RabbitMqServer,
    "ferretdb": FerretDbServer,
}


def measure(kind: type[TestServer], *, root: Path, restarts: int) -> str:
    """First start in an empty folder, then `restarts` stop+start cycles on the same data."""
    server = kind(root=root)
    first = server.start()
    again = []
    stops = []
    try:
        for _ in range(restarts):
            began = time.monotonic()
            server.stop()
            stops.append(time.monotonic() - began)
            again.append(server.start())
    finally:
        server.stop()
    return (
        f"{server.name:9} first start {first:5.1f} s; restarts "
        + ", ".join(f"{seconds:.1f}" for seconds in again)
        + " s; stops "
        + ", ".join(f"{seconds:.1f}" for seconds in stops)
        + " s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--restarts", type=int, default=2)
    options = parser.parse_args()
    if unknown := set(options.services) - set(KINDS):
        parser.error(f"unknown services {sorted(unknown)}; known: {', '.join(KINDS)}")
    load = os.getloadavg()[0]
    print(f"cores {os.cpu_count()}, load average (1 min) {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="srvthreds-brokers-") as folder:
        for name in options.services or KINDS:
            print(measure(KINDS[name], root=Path(folder) / name, restarts=options.restarts))


if __name__ == "__main__":
    main()
