"""Watch heartbeats and the HTTP endpoints: /healthz fails on stale watches, plus /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from srvthreds_operator import metrics

Clock = Callable[[], float]


class WatchHeartbeats:
    """The last time each watched kind showed life (an event, a bookmark or a fresh listing).

    Why: kopf's own liveness endpoint answers while a watch silently stalls (kopf #585, dask #620);
    the API server sends bookmarks about once a minute even when nothing changes, so a kind that
    stays silent much longer than that means its watch is dead and the process should restart.
    """

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def expect(self, kinds: Iterable[str]) -> None:
        """Start the clock for kinds not yet heard from, so a watch that never starts counts."""
        now = self._clock()
        for kind in kinds:
            self._last.setdefault(kind, now)

    def beat(self, kind: str) -> None:
        """Record life on a watch of this kind."""
        self._last[kind] = self._clock()

    def staleness(self) -> dict[str, float]:
        """Seconds since the last sign of life, per kind."""
        now = self._clock()
        return {kind: now - last for kind, last in sorted(self._last.items())}

    def stale(self, *, max_age: float) -> list[str]:
        """Kinds silent for longer than max_age seconds."""
        return [kind for kind, age in self.staleness().items() if age > max_age]


def liveness_app(heartbeats: WatchHeartbeats, *, max_age: float) -> web.Application:
    """/healthz: 200 while every watch is fresh, 503 naming the stale kinds otherwise."""

    async def healthz(_: web.Request) -> web.Response:
        stale = heartbeats.stale(max_age=max_age)
        if stale:
            return web.Response(status=503, text=f"stale watches: {', '.join(stale)}\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


def metrics_app(heartbeats: WatchHeartbeats) -> web.Application:
    """/metrics in the Prometheus text format; staleness is refreshed at scrape time."""

    async def scrape(_: web.Request) -> web.Response:
        metrics.publish_staleness(heartbeats.staleness())
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def serve(app: web.Application, *, port: int, host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104
    """Start an app on a port (the caller cleans the runner up on shutdown)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    return runner
