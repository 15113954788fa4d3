"""System events (`sysControl`, `dataControl`, `userControl`): admin and user operations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from srvthreds_engine import errors
from srvthreds_engine.events import DATA_CONTROL, SYS_CONTROL, SYSTEM_THRED_ID
from srvthreds_engine.patterns import Transition

if TYPE_CHECKING:
    from srvthreds_engine.engine import Engine

ADMIN_ROLE = "admin"
Operation = Callable[["Engine", dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


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
    async with engine.storage.lock(f"Thred:{thred_id}"):
        thred = await engine.storage.get_thred(thred_id)
        if thred is None:
            raise errors.no_thred(thred_id)
        await engine.transition_locked(thred, transition=transition)
    return {"thredId": thred_id}


async def _terminate_thred(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    thred_id = _required_thred_id(values)
    async with engine.storage.lock(f"Thred:{thred_id}"):
        thred = await engine.storage.get_thred(thred_id)
        if thred is None:
            raise errors.no_thred(thred_id)
        await engine.terminate_locked(thred)
    return {"thredId": thred_id}


async def _terminate_all(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    terminated = []
    for stored in await engine.storage.list_threds():
        async with engine.storage.lock(f"Thred:{stored.id}"):
            thred = await engine.storage.get_thred(stored.id)
            if thred is not None:
                await engine.terminate_locked(thred)
                terminated.append(thred.id)
    return {"thredIds": terminated}


async def _get_threds(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    status = str(values.get("status") or "active")
    views: list[dict[str, Any]] = []
    if status in ("active", "all"):
        views.extend(engine.public_view(thred) for thred in await engine.storage.list_threds())
    if status in ("terminated", "all"):
        views.extend(await engine.persistence.archived_threds())
    wanted = values.get("thredIds")
    if isinstance(wanted, list):
        views = [view for view in views if view.get("id") in wanted]
    return {"threds": views}


async def _reload_pattern(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    pattern_id = str(values.get("patternId") or "")
    fresh = {pattern.pattern_id: pattern for pattern in _load(engine)}
    if pattern_id not in fresh:
        raise errors.EngineError(f"Pattern {pattern_id} not found", code=errors.NOT_FOUND)
    merged = {pattern.pattern_id: pattern for pattern in engine.patterns}
    merged[pattern_id] = fresh[pattern_id]
    engine.set_patterns(list(merged.values()))
    return {"patternId": pattern_id}


async def _reload_all(
    engine: Engine, event: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    engine.set_patterns(_load(engine))
    return {"patternIds": [pattern.pattern_id for pattern in engine.patterns]}


def _load(engine: Engine) -> list[Any]:
    if engine.pattern_loader is None:
        return engine.patterns
    return list(engine.pattern_loader())


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
    delay = values.get("delay", 0)
    if engine.shutdown_requested is not None:
        engine.shutdown_requested(int(delay or 0))
    return {"delay": delay}


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
    for thred_id in await engine.storage.participant_thred_ids(_source_id(event)):
        thred = await engine.storage.get_thred(thred_id)
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
