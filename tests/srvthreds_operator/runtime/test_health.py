"""Watch heartbeats, the liveness verdict, and the kopf internals the heartbeat hook relies on."""

from __future__ import annotations

import inspect

from aiohttp.test_utils import TestClient, TestServer

from srvthreds_operator.health import WatchHeartbeats, liveness_app, metrics_app


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_kind_silent_for_too_long_is_stale() -> None:
    clock = Clock()
    heartbeats = WatchHeartbeats(clock=clock)
    heartbeats.expect(["deployments", "srvthredsclusters"])
    clock.now += 200
    heartbeats.beat("deployments")
    clock.now += 200
    assert heartbeats.stale(max_age=300) == ["srvthredsclusters"]
    assert heartbeats.staleness() == {"deployments": 200.0, "srvthredsclusters": 400.0}


async def test_healthz_fails_naming_the_stale_watch_and_recovers() -> None:
    clock = Clock()
    heartbeats = WatchHeartbeats(clock=clock)
    heartbeats.expect(["secrets"])
    async with TestClient(TestServer(liveness_app(heartbeats, max_age=60))) as client:
        assert (await client.get("/healthz")).status == 200
        clock.now += 61
        response = await client.get("/healthz")
        assert response.status == 503
        assert "secrets" in await response.text()
        heartbeats.beat("secrets")
        assert (await client.get("/healthz")).status == 200


async def test_metrics_exposes_the_operator_series() -> None:
    heartbeats = WatchHeartbeats(clock=Clock())
    heartbeats.expect(["deployments"])
    async with TestClient(TestServer(metrics_app(heartbeats))) as client:
        text = await (await client.get("/metrics")).text()
    assert 'srvthreds_operator_watch_staleness_seconds{kind="deployments"}' in text
    assert "srvthreds_operator_reconcile_duration_seconds_bucket" in text


def test_the_kopf_watch_function_the_heartbeat_hook_wraps_still_exists() -> None:
    from kopf._cogs.clients import watching

    parameters = inspect.signature(watching.continuous_watch).parameters
    assert {"settings", "resource", "namespace", "operator_pause_waiter"} <= set(parameters)
    assert inspect.isasyncgenfunction(watching.continuous_watch)
