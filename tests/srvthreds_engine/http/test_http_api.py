"""The HTTP layer against a fake backend: validation, auth, status codes and bodies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from srvthreds_engine.adapters.prometheus import EngineMetrics
from srvthreds_engine.api.http import QueueFullError, ThredStatus, build_http_app, parse_events
from srvthreds_engine.core.events import Event

TOKEN = "s3cret"
EVENT = {"id": "e1", "type": "org.demo.alert", "source": {"id": "monitor"}}


class FakeBackend:
    """Keeps submitted events and serves fixed threds."""

    def __init__(self) -> None:
        self.submitted: list[Event] = []
        self.full = False
        self.checks = {"patterns": True, "storage": True}
        self.threds = [
            {"id": "p_1", "status": "a", "patternId": "p"},
            {"id": "p_2", "status": "f", "patternId": "p"},
        ]

    async def submit(self, events: Sequence[Event]) -> None:
        if self.full:
            raise QueueFullError("the event queue is full (10 of 10 used)")
        self.submitted.extend(events)

    async def list_threds(self, *, status: ThredStatus | None) -> list[dict[str, Any]]:
        return [t for t in self.threds if status is None or t["status"] == status]

    async def get_thred(self, thred_id: str) -> dict[str, Any] | None:
        return next((t for t in self.threds if t["id"] == thred_id), None)

    def readiness(self) -> dict[str, bool]:
        return dict(self.checks)

    def readiness_details(self) -> dict[str, Any]:
        return {}

    def recent_messages(self) -> list[dict[str, Any]]:
        return [{"event": {"id": "evt1"}, "to": ["alice"]}]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def make_client(
    backend: FakeBackend, *, token: str | None = None, max_body: int = 1_048_576
) -> TestClient[Any, Any]:
    app = build_http_app(backend, metrics=EngineMetrics(), api_token=token, max_body_bytes=max_body)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(backend: FakeBackend):
    client = await make_client(backend)
    yield client
    await client.close()


@pytest.fixture
async def auth_client(backend: FakeBackend):
    client = await make_client(backend, token=TOKEN)
    yield client
    await client.close()


async def test_one_event_is_queued_and_answered_with_its_id(client, backend) -> None:
    response = await client.post("/events", json=EVENT)
    assert response.status == 202
    assert await response.json() == {"ids": ["e1"]}
    assert [e.id for e in backend.submitted] == ["e1"]


async def test_a_list_of_events_is_queued_in_order(client, backend) -> None:
    second = EVENT | {"id": "e2", "thredId": "p_1"}
    response = await client.post("/events", json=[EVENT, second])
    assert response.status == 202
    assert await response.json() == {"ids": ["e1", "e2"]}
    assert [(e.id, e.thredId) for e in backend.submitted] == [("e1", None), ("e2", "p_1")]


async def test_a_bad_event_in_a_list_is_named_by_index_and_field(client, backend) -> None:
    bad = {"id": "e2", "type": "x", "source": {}}
    response = await client.post("/events", json=[EVENT, bad])
    assert response.status == 400
    error = (await response.json())["error"]
    assert "event [1]" in error
    assert "source.id" in error
    assert backend.submitted == []


async def test_a_single_event_without_type_names_the_field(client) -> None:
    response = await client.post("/events", json={"id": "e1", "source": {"id": "m"}})
    assert response.status == 400
    assert "type: Field required" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "list of events is empty"),
        (b'"text"', "not str"),
        (b"\xff\xfe{", "not UTF-8"),
    ],
)
async def test_bodies_that_are_not_events_are_refused(client, body, expected) -> None:
    response = await client.post("/events", data=body)
    assert response.status == 400
    assert expected in (await response.json())["error"]


async def test_an_oversized_body_is_refused_with_413(backend) -> None:
    client = await make_client(backend, max_body=1024)
    try:
        big = EVENT | {"data": {"title": "x" * 4096}}
        response = await client.post("/events", json=big)
        assert response.status == 413
        assert "error" in await response.json()
        assert backend.submitted == []
    finally:
        await client.close()


async def test_a_full_queue_answers_503_with_retry_after(client, backend) -> None:
    backend.full = True
    response = await client.post("/events", json=EVENT)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "queue is full" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/events"), ("GET", "/threds"), ("GET", "/threds/p_1"), ("GET", "/messages")],
)
async def test_protected_routes_need_the_bearer_token(auth_client, method, path) -> None:
    missing = await auth_client.request(method, path, json=EVENT)
    wrong = await auth_client.request(
        method, path, json=EVENT, headers={"Authorization": "Bearer nope"}
    )
    right = await auth_client.request(
        method, path, json=EVENT, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (missing.status, wrong.status) == (401, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert right.status in {200, 202}


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
async def test_probes_and_metrics_need_no_token(auth_client, path) -> None:
    response = await auth_client.get(path)
    assert response.status == 200


async def test_health_reports_the_event_loop_lag(client) -> None:
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["eventLoopLagSeconds"] >= 0


async def test_ready_is_503_and_names_what_is_not_ready(client, backend) -> None:
    backend.checks["patterns"] = False
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["notReady"] == ["patterns"]


async def test_ready_is_200_when_every_check_passes(client) -> None:
    response = await client.get("/ready")
    assert response.status == 200
    assert (await response.json())["ready"] is True


async def test_threds_can_be_filtered_by_status_name(client) -> None:
    everything = await (await client.get("/threds")).json()
    finished = await (await client.get("/threds", params={"status": "finished"})).json()
    assert [t["id"] for t in everything["threds"]] == ["p_1", "p_2"]
    assert [t["id"] for t in finished["threds"]] == ["p_2"]


async def test_an_unknown_status_filter_is_refused(client) -> None:
    response = await client.get("/threds", params={"status": "sleeping"})
    assert response.status == 400
    assert "sleeping" in (await response.json())["error"]


async def test_one_thred_or_404(client) -> None:
    found = await client.get("/threds/p_1")
    missing = await client.get("/threds/p_9")
    assert (await found.json())["id"] == "p_1"
    assert missing.status == 404
    assert "p_9" in (await missing.json())["error"]


async def test_unknown_routes_answer_json_404(client) -> None:
    response = await client.get("/nowhere")
    assert response.status == 404
    assert "error" in await response.json()


async def test_metrics_count_received_events(client) -> None:
    await client.post("/events", json=[EVENT, EVENT | {"id": "e2"}])
    text = await (await client.get("/metrics")).text()
    assert "srvthreds_events_received_total 2.0" in text


async def test_messages_are_listed(client) -> None:
    body = await (await client.get("/messages")).json()
    assert body == {"messages": [{"event": {"id": "evt1"}, "to": ["alice"]}]}


def test_parse_events_keeps_unknown_keys() -> None:
    [event] = parse_events(EVENT | {"extra": 1})
    assert event.to_dict()["extra"] == 1


@pytest.mark.parametrize(
    "body",
    [
        EVENT,
        [EVENT, EVENT | {"id": "evt2", "thredId": "t1", "time": 1.5, "extra": {"k": [1]}}],
        EVENT | {"time": 1700000000000, "data": {"title": "é ✓", "content": None}},
        EVENT | {"source": {"id": "s", "name": "n", "uri": "u", "more": True}},
    ],
)
async def test_valid_bodies_parse_the_same_on_the_fast_path(client, backend, body) -> None:
    response = await client.post("/events", data=json.dumps(body).encode())
    assert response.status == 202
    assert backend.submitted == parse_events(body)
    assert [e.to_dict() for e in backend.submitted] == [e.to_dict() for e in parse_events(body)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "the list of events is empty"),
        (b'[{"id": "x"}]', "event [0] is invalid: type: Field required"),
        (b'{"id": "x", "type": "t", "source": {"id": "s"}, "time": NaN}', None),
    ],
)
async def test_bodies_off_the_fast_path_keep_their_answers(client, raw, message) -> None:
    response = await client.post("/events", data=raw)
    body = await response.json()
    if message is None:
        # json.loads accepts NaN, pydantic-core does not: the slow path still accepts it.
        assert response.status == 202, body
    else:
        assert response.status == 400
        assert message in body["error"]
