"""The engine's HTTP API (aiohttp): health, readiness, metrics, event intake and thred views."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import pydantic
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from srvthreds_engine.core.events import Event
from srvthreds_engine.core.limits import (
    MAX_EVENT_DEPTH,
    depth_problem,
    may_be_too_deep,
    too_deep_message,
)

ThredStatus = Literal["a", "f", "t"]
STATUS_CODES: Mapping[str, ThredStatus] = {
    "a": "a",
    "active": "a",
    "f": "f",
    "finished": "f",
    "t": "t",
    "terminated": "t",
}
# Routes that expose or change thred state; they need the bearer token when one is configured.
PROTECTED_PREFIXES = ("/events", "/threds", "/messages")
LOOP_LAG_INTERVAL_SECONDS = 0.25


class ApiMetrics(Protocol):
    """The metrics the HTTP layer serves and updates (the Prometheus adapter implements it)."""

    content_type: str

    def exposition(self) -> bytes:
        """Every metric in the exposition format of `content_type`."""

    def count_received(self, count: int) -> None:
        """Count events accepted by POST /events."""

    def set_loop_lag(self, seconds: float) -> None:
        """The last measured event-loop lag."""


class QueueFullError(Exception):
    """The engine cannot queue the events now (queue full, or shutting down): retry later."""


class BatchTooLargeError(Exception):
    """More events at once than the queue can ever hold: retrying cannot help."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Readiness(Protocol):
    """What /ready reports: each dependency and whether it is up, and details."""

    def readiness(self) -> dict[str, bool]:
        """Each component that must be up (patterns, storage, queues...) and whether it is."""

    def readiness_details(self) -> dict[str, Any]:
        """More for /ready to show (e.g. the last pattern load and why it failed)."""


class ApiBackend(Readiness, Protocol):
    """What the HTTP layer needs from the running engine (built by the composition root)."""

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue the events for processing, all or none.

        Raises QueueFullError when they do not fit now, BatchTooLargeError when they never can.
        """

    async def list_threds(self, *, status: ThredStatus | None) -> list[dict[str, Any]]:
        """Public views of the stored threds, optionally only those with this status."""

    async def get_thred(self, thred_id: str) -> dict[str, Any] | None:
        """The public view of one thred, or None when it is not stored."""

    def recent_messages(self) -> list[dict[str, Any]]:
        """The last outbound messages, oldest first (empty when not kept)."""


_EVENT_OR_EVENTS: pydantic.TypeAdapter[Event | list[Event]] = pydantic.TypeAdapter(
    Event | list[Event]
)


class EventValidationError(ValueError):
    """A POST /events body is not an event or a list of events; the message says where."""


class EventTooDeepError(EventValidationError):
    """An event nests more containers than MAX_EVENT_DEPTH; the message says where."""


BACKEND_KEY = web.AppKey("backend", ApiBackend)
READINESS_KEY = web.AppKey("readiness", Readiness)
METRICS_KEY = web.AppKey("metrics", ApiMetrics)
LOOP_LAG_KEY = web.AppKey("loop_lag", list[float])


def build_http_app(
    backend: ApiBackend,
    *,
    metrics: ApiMetrics,
    api_token: str | None = None,
    max_body_bytes: int = 1_048_576,
) -> web.Application:
    """The aiohttp application serving the engine API over the given backend."""
    # Each middleware costs every request a call layer: auth is only installed when needed.
    middlewares = [_bearer_auth(api_token), _json_errors] if api_token else [_json_errors]
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[BACKEND_KEY] = backend
    add_probe_routes(app, readiness=backend, metrics=metrics)
    app.router.add_post("/events", post_events)
    app.router.add_get("/threds", list_threds)
    app.router.add_get("/threds/{thred_id}", get_thred)
    app.router.add_get("/messages", list_messages)
    return app


def add_probe_routes(app: web.Application, *, readiness: Readiness, metrics: ApiMetrics) -> None:
    """/health (with the event-loop lag), /ready and /metrics: what every process serves."""
    app[READINESS_KEY] = readiness
    app[METRICS_KEY] = metrics
    app[LOOP_LAG_KEY] = [0.0]
    app.cleanup_ctx.append(_loop_lag_monitor)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_text)


def build_probe_app(readiness: Readiness, *, metrics: ApiMetrics) -> web.Application:
    """The probe endpoints alone (the agents' $PORT), JSON errors included."""
    app = web.Application(middlewares=[_json_errors])
    add_probe_routes(app, readiness=readiness, metrics=metrics)
    return app


def parse_events(body: object) -> list[Event]:
    """Validate a decoded body: one event object or a non-empty list of them."""
    if isinstance(body, dict):
        return _within_depth([_validate_event(body, where="")], listed=False)
    if isinstance(body, list):
        if not body:
            raise EventValidationError("the list of events is empty")
        events = [_validate_event(item, where=f"[{index}]") for index, item in enumerate(body)]
        return _within_depth(events, listed=True)
    raise EventValidationError(
        f"the body must be an event object or a list of events, not {type(body).__name__}"
    )


def _parse_valid_body(raw: bytes) -> list[Event] | None:
    """The events of a valid body, parsed by pydantic-core straight from the bytes; else None.

    This is the fast path (no intermediate Python objects for the JSON); any body it refuses
    goes through `parse_events`, which words the error.
    """
    try:
        parsed = _EVENT_OR_EVENTS.validate_json(raw)
    except pydantic.ValidationError:
        return None
    events, listed = ([parsed], False) if isinstance(parsed, Event) else (parsed, True)
    if not events:
        return None
    return _within_depth(events, listed=listed) if may_be_too_deep(raw) else events


def _within_depth(events: list[Event], *, listed: bool) -> list[Event]:
    """The events, unless one nests deeper than MAX_EVENT_DEPTH (EventTooDeepError naming it).

    Deeper events would pass validation here and fail later, when the engine serialises them.
    """
    for index, event in enumerate(events):
        problem = depth_problem(event)
        if problem is not None:
            where = f"event [{index}]" if listed else "event"
            raise EventTooDeepError(f"{where} is {problem}")
    return events


def _validate_event(item: object, *, where: str) -> Event:
    try:
        return Event.model_validate(item)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "<event>"
            problems.append(f"{field}: {error['msg']}")
        prefix = f"event {where}" if where else "event"
        raise EventValidationError(f"{prefix} is invalid: " + "; ".join(problems)) from None


def _bearer_auth(api_token: str) -> Middleware:
    expected = api_token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIXES):
            # The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in constant
            # time. Header bytes that are not UTF-8 arrive as surrogates: encode them back.
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = token.strip().encode("utf-8", "surrogateescape")
            if not (hmac.compare_digest(given, expected) and scheme.lower() == "bearer"):
                return web.json_response(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="srvthreds"'},
                )
        return await handler(request)

    return middleware


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer HTTP errors (404, 405, 413...) with a JSON body like every other answer."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.empty_body or exc.content_type == "application/json":
            raise
        return web.json_response(
            {"error": exc.text or exc.reason},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() != "content-type"},
        )


async def _loop_lag_monitor(app: web.Application) -> AsyncIterator[None]:
    """Measure how late the event loop wakes a sleeping task: the liveness figure of /health."""
    metrics = app[METRICS_KEY]
    lag = app[LOOP_LAG_KEY]
    loop = asyncio.get_running_loop()

    async def sample_forever() -> None:
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_LAG_INTERVAL_SECONDS)
            lag[0] = max(0.0, loop.time() - started - LOOP_LAG_INTERVAL_SECONDS)
            metrics.set_loop_lag(lag[0])

    task = asyncio.create_task(sample_forever(), name="loop-lag-monitor")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def health(request: web.Request) -> web.Response:
    """The process answers and its event loop runs (with the last measured loop lag)."""
    lag = request.app[LOOP_LAG_KEY][0]
    return web.json_response({"status": "ok", "eventLoopLagSeconds": round(lag, 6)})


async def ready(request: web.Request) -> web.Response:
    """200 when patterns are loaded and every backend is connected; 503 naming what is not."""
    readiness = request.app[READINESS_KEY]
    checks = readiness.readiness()
    not_ready = sorted(name for name, ok in checks.items() if not ok)
    body = {
        "ready": not not_ready,
        "checks": checks,
        "notReady": not_ready,
        **readiness.readiness_details(),
    }
    return web.json_response(body, status=503 if not_ready else 200)


async def metrics_text(request: web.Request) -> web.Response:
    """The metrics in the Prometheus text format."""
    response = web.Response(body=request.app[METRICS_KEY].exposition())
    response.headers["Content-Type"] = request.app[METRICS_KEY].content_type
    return response


def decode_events(raw: bytes) -> list[Event]:
    """The events of a POST /events body; EventValidationError says what is wrong with it."""
    try:
        return _parse_valid_body(raw) or parse_events(json.loads(raw))
    except UnicodeDecodeError as exc:
        raise EventValidationError(f"the body is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EventValidationError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # json.loads gives up near the interpreter's recursion limit, far beyond MAX_EVENT_DEPTH.
        raise EventTooDeepError(f"the body is {too_deep_message()}") from None


def _unreadable_body(request: web.Request, *, problem: str) -> web.Response:
    """400 for a body that its Content-Encoding (gzip, deflate) or chunking does not decode."""
    encoding = request.headers.get("Content-Encoding")
    error = f"the body is not valid {encoding} data" if encoding else f"the body is {problem}"
    response = web.json_response({"error": error}, status=400)
    # NB: without these, aiohttp reads the rest of the broken body after the answer, gets the
    # decoding error again and logs it as an unhandled exception (aiohttp issue #1918).
    response.force_close()
    request.content.feed_eof()
    return response


async def post_events(request: web.Request) -> web.Response:
    """Validate one event or a list and queue them: 202 with their ids."""
    try:
        events = decode_events(await request.read())
    except web.RequestPayloadError as exc:
        return _unreadable_body(request, problem=f"malformed: {exc}")
    except EventValidationError as exc:
        body: dict[str, Any] = {"error": str(exc)}
        if isinstance(exc, EventTooDeepError):
            body["maxDepth"] = MAX_EVENT_DEPTH
        return web.json_response(body, status=400)
    try:
        await request.app[BACKEND_KEY].submit(events)
    except BatchTooLargeError as exc:
        return web.json_response({"error": str(exc), "maxEvents": exc.limit}, status=413)
    except QueueFullError as exc:
        return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "1"})
    request.app[METRICS_KEY].count_received(len(events))
    return web.json_response({"ids": [event.id for event in events]}, status=202)


async def list_threds(request: web.Request) -> web.Response:
    """Public views of the stored threds; `?status=active|finished|terminated` filters them."""
    status_text = request.query.get("status")
    status = None
    if status_text is not None:
        status = STATUS_CODES.get(status_text.lower())
        if status is None:
            allowed = ", ".join(STATUS_CODES)
            return web.json_response(
                {"error": f"status must be one of {allowed}, not {status_text!r}"}, status=400
            )
    threds = await request.app[BACKEND_KEY].list_threds(status=status)
    return web.json_response({"threds": threds}, dumps=_dumps)


async def get_thred(request: web.Request) -> web.Response:
    """The public view of one thred; 404 when it is not stored (terminated threds are not)."""
    thred_id = request.match_info["thred_id"]
    thred = await request.app[BACKEND_KEY].get_thred(thred_id)
    if thred is None:
        return web.json_response({"error": f"thred {thred_id} is not stored"}, status=404)
    return web.json_response(thred, dumps=_dumps)


async def list_messages(request: web.Request) -> web.Response:
    """The last outbound messages the engine dispatched, oldest first."""
    return web.json_response({"messages": request.app[BACKEND_KEY].recent_messages()}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
