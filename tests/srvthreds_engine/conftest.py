"""The behaviour tests (modules using `Driver`) run on memory and, marked `backends`, on brokers.

Plain `pytest` deselects the `backends` marker, so it runs the memory variant only;
`pytest -m backends` runs the same tests on Redis (thred and session stores) and FerretDB
(persistence). A test that holds on memory only says why with `@pytest.mark.memory_only(reason)`:
its brokers variant is skipped with that reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.brokers.ferretdb_server import FerretDbServer
from tests.brokers.fixtures import RedisDb, unique_name
from tests.srvthreds_engine.brokers_backend import BrokersBackend
from tests.srvthreds_engine.driver import Backend, Driver, MemoryBackend, using_backend

MEMORY = "memory"
BROKERS = "brokers"
MEMORY_ONLY = "memory_only"


def pytest_configure(config: pytest.Config) -> None:
    """Registers the marker (markers are strict)."""
    config.addinivalue_line(
        "markers",
        f"{MEMORY_ONLY}(reason): a Driver test whose brokers variant is skipped, for `reason`",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a module that uses `Driver` gets a memory and a brokers variant."""
    if getattr(metafunc.module, "Driver", None) is not Driver:
        return
    brokers_marks = [pytest.mark.backends]
    memory_only = metafunc.definition.get_closest_marker(MEMORY_ONLY)
    if memory_only is not None:
        reason = memory_only.kwargs.get("reason") or (memory_only.args or [""])[0]
        if not reason:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: memory_only needs a reason")
        brokers_marks.append(pytest.mark.skip(reason=f"memory only: {reason}"))
    metafunc.parametrize(
        "driver_backend",
        [MEMORY, pytest.param(BROKERS, marks=brokers_marks)],
        indirect=True,
    )


@pytest.fixture(autouse=True)
def driver_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which backend `Driver(...)` builds on during this test (memory unless parametrised)."""
    name: str = getattr(request, "param", MEMORY)
    backend: Backend = (
        request.getfixturevalue("brokers_backend") if name == BROKERS else MemoryBackend()
    )
    with using_backend(backend):
        yield name


@pytest.fixture
async def brokers_backend(
    redis_db: RedisDb, ferretdb_server: FerretDbServer, request: pytest.FixtureRequest
) -> AsyncIterator[BrokersBackend]:
    """Redis db of its own (flushed by `redis_db`), MongoDB databases dropped afterwards."""
    ferretdb_server.ensure_running()
    backend = BrokersBackend(
        redis_url=redis_db.url,
        key_prefix=redis_db.key_prefix,
        mongo_url=ferretdb_server.url,
        # FerretDB takes names of up to 63 characters; the Driver's number is appended.
        database_prefix=unique_name(request.node.name, separator="_", limit=58),
    )
    yield backend
    await backend.close()
