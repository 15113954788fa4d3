"""System events (`sysControl`, `dataControl`, `userControl`): admin and user operations."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from srvthreds_engine.core import errors
from srvthreds_engine.core.events import DATA_CONTROL, SYS_CONTROL, SYSTEM_THRED_ID
from srvthreds_engine.core.matchers import InvalidMatcherError, compile_matcher
from srvthreds_engine.core.patterns import Pattern, Transition

if TYPE_CHECKING:
    from srvthreds_engine.service.processing import Engine

log = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
THRED_STATUSES = ("active", "terminated", "all")
Operation = Callable[["Engine", dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


@runtime_checkable
class ReloadObserver(Protocol):
    """An EngineObserver that also counts pattern reloads (the embedded mode's metrics)."""

    def patterns_reloaded(self, *, op: str, result: str) -> None: ...


def _values(event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("data") or {}).get("content") or {}
    values = content.get("values") if isinstance(content, dict) else None
    return values if isinstance(values, dict) else {}


def _source_id(event: dict[str, Any]) -> str:
    return str(event["source"]["id"])


async def handle_system_event(engine: Engine, *, event: dict[str, Any]) -> None:
    """Check, run and answer one system event; failures raise EngineError."""
    if event.get("thredId") != SYSTEM_THRED_ID:
        raise errors.system_thred_required()
    # The original let any session through; admin operations need the admin role here.
    if event["type"] in (SYS_CONTROL, DATA_CONTROL) and ADMIN_ROLE not in await engine.roles_of(
        _source_id(event)
    ):
        raise errors.lacks_role(_source_id(event), role=ADMIN_ROLE)
    if event["type"] == DATA_CONTROL:
        result = await _run_tasks(engine, event)
    else:
        result = await _run_operation(engine, event)
    await engine.send(
        engine.system_event(
            thredId=SYSTEM_THRED_ID,
            re=event["id"],
            data={
                "title": f"System Event -> Thred: SYSTEM -> Re: Event: {event['id']}",
                "content": {"values": result},
            },
        ),
        to=[_source_id(event)],
        thred_id=None,
    )


async def _run_tasks(engine: Engine, event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("data") or {}).get("content") or {}
    tasks = content.get("tasks") if isinstance(content, dict) else None
    if not isinstance(tasks, list):
        raise errors.EngineError("No tasks supplied for dataControl", code=errors.MISSING_ARGUMENT)
    return {"result": await engine.persistence.run_tasks(tasks)}


async def _run_operation(engine: Engine, event: dict[str, Any]) -> dict[str, Any]:
    values = _values(event)
    op = values.get("op")
    if not op:
        raise errors.no_operation_name()
    table = SYS_OPERATIONS if event["type"] == SYS_CONTROL else USER_OPERATIONS
    operation = table.get(str(op))
    if operation is None:
        raise errors.unknown_operation(str(op))
    result = await operation(engine, event, values)
    return {"status": "OK", "op": op, **result}


# --- sysControl ------------------------------------------------------------------------------


def _required_thred_id(values: dict[str, Any]) -> str:
    thred_id = values.get("thredId")
    if not thred_id:
        raise errors.EngineError("No thredId supplied", code=errors.MISSING_ARGUMENT)
    return str(thred_id)


async def _transition_thred(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    thred_id = _required_thred_id(values)
    raw = values.get("transition")
    transition = Transition.model_validate(raw if isinstance(raw, dict) else {"name": raw})
    await engine.transition_thred(thred_id, transition=transition)
    return {"thredId": thred_id}


async def _terminate_thred(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    thred_id = _required_thred_id(values)
    await engine.terminate_thred(thred_id)
    return {"thredId": thred_id}


async def _terminate_all(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    return {"thredIds": await engine.terminate_all_threds()}


async def _get_threds(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    status = str(values.get("status") or "active")
    if status not in THRED_STATUSES:
        raise errors.EngineError(
            f"Unknown getThreds status {status}: use one of {', '.join(THRED_STATUSES)}",
            code=errors.BAD_ARGUMENT,
        )
    matcher = _terminated_matcher(values)
    views: list[dict[str, Any]] = []
    if status in ("active", "all"):
        views.extend(engine.public_view(thred) for thred in await engine.store.list_threds())
    if status in ("terminated", "all"):
        views.extend(await engine.persistence.archived_threds(matcher=matcher))
    wanted = values.get("thredIds")
    if isinstance(wanted, list):
        views = [view for view in views if view.get("id") in wanted]
    return {"threds": views}


def _terminated_matcher(values: dict[str, Any]) -> dict[str, Any] | None:
    """The checked `terminatedMatcher` (over ThredRecords `{id, thred}`), or None."""
    matcher = values.get("terminatedMatcher")
    if matcher is None:
        return None
    try:
        # Checked here, so that no persistence adapter is handed an operator it cannot run.
        compile_matcher(matcher, where="terminatedMatcher")
    except InvalidMatcherError as exc:
        raise errors.EngineError(
            f"Invalid matcher for getThreds: {exc}", code=errors.BAD_ARGUMENT
        ) from exc
    return dict(matcher)


async def _reload_pattern(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    pattern_id = values.get("patternId")
    if not pattern_id:
        raise errors.EngineError(
            "No patternId supplied for reloadPattern operation", code=errors.MISSING_ARGUMENT
        )
    wanted = str(pattern_id)

    def replace_one(fresh: list[Pattern]) -> list[Pattern]:
        found = next((pattern for pattern in fresh if pattern.pattern_id == wanted), None)
        if found is None:
            raise errors.EngineError(
                f"Pattern {wanted} not found in the pattern folder", code=errors.NOT_FOUND
            )
        merged = {pattern.pattern_id: pattern for pattern in engine.patterns}
        merged[wanted] = found
        return list(merged.values())

    await _reload(engine, op="reloadPattern", choose=replace_one, changed=wanted)
    return {"patternId": wanted}


async def _reload_all(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    loaded = await _reload(engine, op="reloadAllPatterns", choose=lambda fresh: fresh, changed=None)
    return {"patternIds": [pattern.pattern_id for pattern in loaded]}


async def _reload(
    engine: Engine,
    *,
    op: str,
    choose: Callable[[list[Pattern]], list[Pattern]],
    changed: str | None,
) -> list[Pattern]:
    """Re-read every pattern, pick the new set and swap it in whole; on failure keep the old.

    Other engine replicas are then told (`patternChanged`) and reload from the same source.
    """
    try:
        chosen = choose(await _read_patterns(engine, op=op))
    except errors.EngineError as exc:
        _reloaded(engine, op=op, result="failed")
        log.warning("pattern reload failed", extra={"op": op, "reason": exc.message})
        raise
    # One assignment: an event sees either the old set or the new one, never a mix.
    engine.set_patterns(chosen)
    _reloaded(engine, op=op, result="ok")
    log.info(
        "patterns reloaded",
        extra={"op": op, "patterns": [pattern.pattern_id for pattern in chosen]},
    )
    if engine.announce_patterns is not None:
        await engine.announce_patterns(changed)
    return chosen


async def _read_patterns(engine: Engine, *, op: str) -> list[Pattern]:
    loader = engine.pattern_loader
    if loader is None:
        raise errors.EngineError(
            f"{op} needs a pattern folder to re-read and this engine has none (replay loads "
            "its patterns once, from --patterns); the loaded patterns are unchanged",
            code=errors.SERVER_ERROR,
        )
    try:
        # NB: not in a worker thread: compiled JSONata expressions (jsonatapy) may only be used
        # by the thread that compiled them, and the process panics otherwise.
        return list(await loader())
    except errors.PatternError as exc:
        raise errors.EngineError(
            f"{op} refused, the loaded patterns are unchanged: {exc}",
            code=errors.SERVER_ERROR,
            cause={"file": exc.file, "jsonPath": exc.json_path, "problem": exc.problem},
        ) from exc


def _reloaded(engine: Engine, *, op: str, result: str) -> None:
    if isinstance(engine.observer, ReloadObserver):
        engine.observer.patterns_reloaded(op=op, result=result)


async def _watch_threds(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    directive = str(values.get("directive") or "start")
    participant_id, now_ms = _source_id(event), engine.clock.now_ms()
    if directive == "start":
        engine.watches.start(participant_id, watch_id=str(event["id"]), now_ms=now_ms)
    elif directive == "renew":
        engine.watches.renew(participant_id, watch_id=str(event["id"]), now_ms=now_ms)
    elif directive == "stop":
        engine.watches.stop(participant_id)
    else:
        raise errors.EngineError(
            f"Unknown watchThreds directive {directive}", code=errors.BAD_ARGUMENT
        )
    return {"directive": directive}


async def _shutdown(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    delay = _delay_ms(values.get("delay"))
    if engine.shutdown_requested is None:
        raise errors.EngineError(
            "shutdown needs a server process to stop and this engine runs without one (replay)",
            code=errors.SERVER_ERROR,
        )
    # The hook only schedules the stop: this reply is still sent, and queued events drain.
    engine.shutdown_requested(delay)
    return {"delay": delay}


def _delay_ms(delay: Any) -> int:
    if delay is None:
        return 0
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise errors.EngineError(
            f"shutdown delay must be a non-negative number of milliseconds, not {delay!r}",
            code=errors.BAD_ARGUMENT,
        )
    return int(delay)


SYS_OPERATIONS: dict[str, Operation] = {
    "transitionThred": _transition_thred,
    "terminateThred": _terminate_thred,
    "getThreds": _get_threds,
    "watchThreds": _watch_threds,
    "reloadPattern": _reload_pattern,
    "reloadAllPatterns": _reload_all,
    "terminateAllThreds": _terminate_all,
    "shutdown": _shutdown,
}


# --- userControl -----------------------------------------------------------------------------


async def _user_threds(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    results = []
    for thred_id in await engine.store.participant_thred_ids(_source_id(event)):
        thred = await engine.store.get_thred(thred_id)
        if thred is None:
            continue
        records = await engine.persistence.events_for_thred(thred_id)
        last_event = records[-1]["event"] if records else None
        results.append((thred.lastUpdateTime, engine.public_view(thred), last_event))
    results.sort(key=lambda item: item[0], reverse=True)
    return {"results": [{"thred": view, "lastEvent": last} for _, view, last in results]}


async def _user_events(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    thred_id = values.get("thredId")
    if not thred_id:
        raise errors.get_events_without_thred()
    caller = _source_id(event)
    records = await engine.persistence.events_for_thred(str(thred_id))
    mine = [
        record["event"]
        for record in records
        if "event" in record
        and (
            record["event"].get("source", {}).get("id") == caller or caller in record.get("to", [])
        )
    ]
    return {"events": mine}


async def _system_spec(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    resolver = engine.addresses.resolver_config
    sessions_model = engine.addresses.sessions_model
    service_specs = [
        agent.model_dump(mode="json", exclude_none=True)
        for agent in resolver.agents
        if not agent.hidden
    ]
    groups = [group.model_dump(mode="json") for group in sessions_model.groups]
    participants = sorted(
        {member.participantId for group in sessions_model.groups for member in group.participants}
    )
    address_spec = {"participants": [{"participantId": p} for p in participants], "groups": groups}
    return {"systemSpec": {"serviceSpecs": service_specs, "addressSpec": address_spec}}


USER_OPERATIONS: dict[str, Operation] = {
    "getThreds": _user_threds,
    "getEvents": _user_events,
    "getSystemSpec": _system_spec,
}
