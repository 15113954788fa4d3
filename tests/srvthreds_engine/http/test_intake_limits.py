"""POST /events refuses bad input with a clear JSON answer: depth, encodings, batch size, auth."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from srvthreds_engine.adapters.prometheus import EngineMetrics
from srvthreds_engine.api.http import BatchTooLargeError, QueueFullError, build_http_app
from srvthreds_engine.apps.embedded import EmbeddedRuntime, EmbeddedServer
from srvthreds_engine.apps.profiles import load_profile
from srvthreds_engine.apps.settings import Settings
from srvthreds_engine.core.events import Event
from srvthreds_engine.core.limits import MAX_EVENT_DEPTH
from tests.srvthreds_engine.http.test_http_api import EVENT, TOKEN, FakeBackend

DEMO_PROFILE = Path(__file__).resolve().parents[3] / "engine" / "profiles" / "demo"


def event_nested(levels: int, *, event_id: str = "deep") -> dict[str, Any]:
    """An event nesting exactly `levels` objects: the event, `data`, then `values` objects."""
    inner: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 3):
        inner = {"values": inner}
    return EVENT | {"id": event_id, "data": {"content": inner}}


def nesting_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((nesting_of(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_of(item) for item in value), default=0)
    return 0


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(backend: FakeBackend) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_http_app(backend, metrics=EngineMetrics()))
    )
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def auth_client(backend: FakeBackend) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_http_app(backend, metrics=EngineMetrics(), api_token=TOKEN)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


# --- nesting depth ---------------------------------------------------------------------------


def test_the_helper_builds_events_of_the_asked_depth() -> None:
    assert nesting_of(event_nested(MAX_EVENT_DEPTH)) == MAX_EVENT_DEPTH


async def test_an_event_at_the_depth_limit_is_accepted(client, backend) -> None:
    response = await client.post("/events", json=event_nested(MAX_EVENT_DEPTH))
    assert response.status == 202
    assert [event.id for event in backend.submitted] == ["deep"]


async def test_an_event_one_level_too_deep_is_refused_naming_the_limit_and_where(
    client, backend
) -> None:
    response = await client.post("/events", json=event_nested(MAX_EVENT_DEPTH + 1))
    body = await response.json()
    assert response.status == 400
    assert body["maxDepth"] == MAX_EVENT_DEPTH
    assert body["error"].startswith(
        f"event is nested deeper than {MAX_EVENT_DEPTH} levels at data.content.values.values"
    )
    assert backend.submitted == []


async def test_a_too_deep_event_in_a_list_is_named_by_index_and_nothing_is_queued(
    client, backend
) -> None:
    response = await client.post("/events", json=[EVENT, event_nested(100)])
    body = await response.json()
    assert response.status == 400
    assert body["error"].startswith(f"event [1] is nested deeper than {MAX_EVENT_DEPTH} levels")
    assert backend.submitted == []


async def test_an_event_too_deep_for_the_fast_parser_is_refused_too(client, backend) -> None:
    # pydantic-core's JSON parser stops at about 200 levels; json.loads then parses it.
    response = await client.post("/events", data=json.dumps(event_nested(300)).encode())
    body = await response.json()
    assert response.status == 400
    assert body["maxDepth"] == MAX_EVENT_DEPTH
    assert "data.content.values" in body["error"]
    assert backend.submitted == []


async def test_a_ten_thousand_deep_body_gets_a_json_400(client, backend) -> None:
    response = await client.post("/events", data=b"[" * 10_000 + b"]" * 10_000)
    assert response.status == 400
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == {
        "error": f"the body is nested deeper than {MAX_EVENT_DEPTH} levels",
        "maxDepth": MAX_EVENT_DEPTH,
    }
    assert backend.submitted == []


async def test_deep_keys_in_the_source_count_too(client, backend) -> None:
    deep_source = {"id": "s", "more": event_nested(MAX_EVENT_DEPTH)["data"]}
    response = await client.post("/events", json=EVENT | {"source": deep_source})
    assert response.status == 400
    assert "at source.more.content.values" in (await response.json())["error"]


# --- content encodings -----------------------------------------------------------------------


async def test_a_gzip_body_is_decompressed(client, backend) -> None:
    body = gzip.compress(json.dumps(EVENT).encode())
    response = await client.post("/events", data=body, headers={"Content-Encoding": "gzip"})
    assert response.status == 202
    assert [event.id for event in backend.submitted] == ["e1"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_broken_compressed_body_gets_a_json_400(client, backend, encoding) -> None:
    response = await client.post(
        "/events", data=b"garbage, not compressed", headers={"Content-Encoding": encoding}
    )
    assert response.status == 400
    assert response.content_type == "application/json"
    assert await response.json() == {"error": f"the body is not valid {encoding} data"}
    assert backend.submitted == []


async def test_the_server_keeps_answering_after_a_broken_gzip_body(client, backend) -> None:
    await client.post("/events", data=b"garbage", headers={"Content-Encoding": "gzip"})
    response = await client.post("/events", json=EVENT)
    assert response.status == 202


async def test_a_gzip_body_that_expands_past_the_limit_gets_413(backend) -> None:
    app = build_http_app(backend, metrics=EngineMetrics(), max_body_bytes=4096)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        bomb = gzip.compress(json.dumps(EVENT | {"data": {"t": "x" * 1_000_000}}).encode())
        assert len(bomb) < 4096
        response = await client.post("/events", data=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status == 413
        assert "error" in await response.json()
        assert backend.submitted == []
    finally:
        await client.close()


async def test_a_deflate_body_is_decompressed(client, backend) -> None:
    body = zlib.compress(json.dumps([EVENT, EVENT | {"id": "e2"}]).encode())
    response = await client.post("/events", data=body, headers={"Content-Encoding": "deflate"})
    assert response.status == 202
    assert [event.id for event in backend.submitted] == ["e1", "e2"]


# --- batches larger than the queue -----------------------------------------------------------


async def test_a_list_larger_than_the_queue_gets_413_with_the_limit() -> None:
    server = EmbeddedServer(load_profile(DEMO_PROFILE), settings=Settings(event_queue_size=2))
    await server.start(host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as session:
            events = [EVENT | {"id": f"e{index}"} for index in range(3)]
            url = f"http://127.0.0.1:{server.port}/events"
            async with session.post(url, json=events) as response:
                body = await response.json()
                assert response.status == 413
                assert "Retry-After" not in response.headers
        assert body["maxEvents"] == 2
        assert "3 events at once are more than the event queue holds (2)" in body["error"]
        assert b"srvthreds_events_received_total 0.0" in server.metrics.exposition()
    finally:
        await server.stop(drain_seconds=5)


async def test_a_list_that_fits_the_queue_but_not_its_free_space_stays_retryable() -> None:
    runtime = EmbeddedRuntime(
        load_profile(DEMO_PROFILE), settings=Settings(event_queue_size=3), metrics=EngineMetrics()
    )
    await runtime.start()
    try:
        events = [Event.model_validate(EVENT | {"id": f"e{index}"}) for index in range(4)]
        # Nothing awaits between the two calls, so the consumer cannot drain in between.
        await runtime.submit(events[:2])
        with pytest.raises(QueueFullError, match=r"queue is full \(2 of 3 used, 2 offered\)"):
            await runtime.submit(events[2:])
    finally:
        await runtime.stop(drain_seconds=5)


async def test_an_over_capacity_batch_is_refused_even_while_not_accepting() -> None:
    runtime = EmbeddedRuntime(
        load_profile(DEMO_PROFILE), settings=Settings(event_queue_size=1), metrics=EngineMetrics()
    )
    events = [Event.model_validate(EVENT | {"id": f"e{index}"}) for index in range(2)]
    with pytest.raises(BatchTooLargeError) as refused:
        await runtime.submit(events)
    assert refused.value.limit == 1


# --- the Authorization scheme ----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(auth_client, scheme) -> None:
    response = await auth_client.post(
        "/events", json=EVENT, headers={"Authorization": f"{scheme} {TOKEN}"}
    )
    assert response.status == 202


@pytest.mark.parametrize(
    "header",
    [f"Basic {TOKEN}", f"Bearer{TOKEN}", f"bearer {TOKEN}x", "bearer", TOKEN, ""],
)
async def test_other_schemes_and_wrong_tokens_are_refused(auth_client, backend, header) -> None:
    response = await auth_client.post("/events", json=EVENT, headers={"Authorization": header})
    assert response.status == 401
    assert await response.json() == {"error": "missing or wrong bearer token"}
    assert backend.submitted == []
