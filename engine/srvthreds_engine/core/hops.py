"""One hop of a reaction, decided without I/O: condition, message, echo, transition, log record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from srvthreds_engine.core import errors, ids, templates
from srvthreds_engine.core.addresses import THRED, AddressBook
from srvthreds_engine.core.conditions import Directives, apply_condition
from srvthreds_engine.core.errors import EngineError
from srvthreds_engine.core.events import (
    BROADCAST,
    CLIENT_TELL,
    SYSTEM_SOURCE,
    TELL,
    OutboundMessage,
)
from srvthreds_engine.core.expressions import Bindings, compile_expression, value_named
from srvthreds_engine.core.patterns import (
    NEXT,
    NO_TRANSITION,
    TERMINATE,
    Pattern,
    Reaction,
    Spawn,
    Transition,
)
from srvthreds_engine.core.sources import regex_matches, regex_of
from srvthreds_engine.core.thred import (
    ACTIVE,
    FINISHED,
    TERMINATED,
    ReactionStore,
    Status,
    Thred,
)

LOG_MATCH = "m"
LOG_NO_MATCH = "nm"
LOG_NO_THRED = "nt"
LOG_NO_PATTERN_MATCH = "np"
# A reaction without a transition moves to the next one (read only; built once, not per hop).
_DEFAULT_TRANSITION = Transition()


@dataclass(slots=True)
class RunState:
    """One thred being processed: the thred (mutated in place) and its pattern.

    A processing run is one input and the forward/local hops after it: every thred log record
    of the run names the input that started it and the reaction it started in (section 13).
    """

    thred: Thred
    pattern: Pattern
    # Set when routing's `test` already proved the first hop's filter true for this event.
    first_filter_known_true: bool = False
    # The input that started the current processing run, and the reaction it started in.
    original: dict[str, Any] | None = None
    from_reaction: str = ""
    # Participants that joined the thred during this processing (to index them on commit).
    joined: dict[str, None] = field(default_factory=dict)

    def start_run(self, event: dict[str, Any]) -> None:
        """Note that `event` starts a processing run at the current reaction."""
        self.original = event
        self.from_reaction = self.thred.reactionStore.reactionName


@dataclass(slots=True)
class Delivery:
    """A reaction's message: the built event and its requested (unresolved) addresses."""

    event: dict[str, Any]
    to: list[str]
    # The triggering event's source, who joins the thred with the recipients (section 5.9).
    source_id: str


@dataclass(slots=True)
class HopOutcome:
    """What one hop decided; the caller performs the I/O (resolve `$all`, send, spawn, log)."""

    matched: bool
    echo: OutboundMessage | None = None
    delivery: Delivery | None = None
    spawn: Spawn | None = None
    next_input: dict[str, Any] | None = None
    log: dict[str, Any] = field(default_factory=dict)


def log_record(
    kind: str,
    *,
    event: dict[str, Any],
    now_ms: int,
    thred_id: str | None = None,
    from_reaction: str | None = None,
    to_reaction: str | None = None,
) -> dict[str, Any]:
    """A ThredLogRecord (section 13); absent parts are left out."""
    record: dict[str, Any] = {"type": kind, "eventId": event.get("id")}
    optional = {"thredId": thred_id, "fromReaction": from_reaction, "toReaction": to_reaction}
    record.update({key: value for key, value in optional.items() if value is not None})
    record["timestamp"] = now_ms
    return record


def system_event(*, now_ms: int, **fields: Any) -> dict[str, Any]:
    """An engine-built event (section 1 defaults) with the given fields (None values left out)."""
    event: dict[str, Any] = {"id": ids.event_id(), "type": TELL, "source": dict(SYSTEM_SOURCE)}
    present = {key: value for key, value in fields.items() if value is not None}
    data = present.pop("data", None)
    event.update(present)
    event.setdefault("time", now_ms)
    if data is not None:
        event["data"] = data
    return event


# --- reactions and sources ---------------------------------------------------------------------


def current_reaction(state: RunState) -> Reaction:
    """The reaction the thred is in."""
    index = state.pattern.reaction_index(state.thred.reactionStore.reactionName)
    if index is None:
        raise EngineError(
            f"Reaction {state.thred.reactionStore.reactionName} not found in pattern "
            f"{state.pattern.pattern_id}"
        )
    return state.pattern.reactions[index]


def needs_roles(reaction: Reaction) -> bool:
    """Whether checking the reaction needs the source's roles (a session lookup)."""
    return reaction.permissions is not None and bool(reaction.permissions.allowedRoles)


def source_allowed(allowed: str | list[str], *, source_id: str, addresses: AddressBook) -> bool:
    """`allowedSources`: `$group` membership, `/regex/` (RE2, case-insensitive) or equality."""
    for entry in [allowed] if isinstance(allowed, str) else allowed:
        if entry.startswith("$") and addresses.is_member(source_id, group=entry[1:]):
            return True
        regex = regex_of(entry)
        if regex is not None:
            if regex_matches(regex, source_id=source_id):
                return True
        elif entry == source_id:
            return True
    return False


def authorised(
    reaction: Reaction,
    *,
    event: dict[str, Any],
    roles: set[str] | None,
    addresses: AddressBook,
) -> bool:
    """`allowedSources` and `permissions.allowedRoles` of a reaction against the source.

    Part of routing's `test` (section 4) and of applying a reaction (section 5, step 1).
    `roles` are the source's session roles, needed only when `needs_roles(reaction)`.
    """
    if reaction.allowedSources is None and reaction.permissions is None:
        return True
    source_id = str(event["source"]["id"])
    if reaction.allowedSources is not None and not source_allowed(
        reaction.allowedSources, source_id=source_id, addresses=addresses
    ):
        return False
    if needs_roles(reaction):
        assert reaction.permissions is not None
        return bool((roles or set()).intersection(reaction.permissions.allowedRoles))
    return True


def bindings_for(thred: Thred, *, event: dict[str, Any], now_ms: int) -> Bindings:
    """What expressions see when `event` is applied to `thred`."""
    return Bindings(
        event,
        thred_id=thred.id,
        scope=thred.thredContext.scope,
        participant_ids=thred.thredContext.participantIds,
        now_ms=now_ms,
    )


# --- state changes -----------------------------------------------------------------------------


def enter(thred: Thred, *, reaction_name: str, now_ms: int) -> None:
    """Enter a reaction (the current one included): a reaction change (section 7)."""
    thred.reactionStore = ReactionStore(
        reactionName=reaction_name, conditionState={}, startTime=now_ms
    )
    thred.lastUpdateTime = now_ms


def end(thred: Thred, *, status: Status, now_ms: int) -> None:
    """End a thred (FINISHED or TERMINATED)."""
    thred.status = status
    thred.endTime = thred.lastUpdateTime = now_ms


def restart_if_finished(state: RunState, *, now_ms: int) -> None:
    """Restart a FINISHED thred at its initial reaction, as ACTIVE.

    The original restarts it but leaves it FINISHED; here it runs again, so it is ACTIVE.
    """
    if state.thred.status == FINISHED:
        state.thred.status = ACTIVE
        state.thred.endTime = None
        enter(state.thred, reaction_name=state.pattern.reaction_names[0], now_ms=now_ms)


def _move(state: RunState, *, name: str, now_ms: int) -> None:
    if name == NO_TRANSITION:
        return
    if name == TERMINATE:
        _finish_or_terminate(state, terminate=True, now_ms=now_ms)
        return
    if name == NEXT:
        index = state.pattern.reaction_index(state.thred.reactionStore.reactionName)
        target = (index if index is not None else -1) + 1
    else:
        found = state.pattern.reaction_index(name)
        if found is None:
            raise EngineError(f"No reaction named {name} in pattern {state.pattern.pattern_id}")
        target = found
    if target >= len(state.pattern.reactions):
        _finish_or_terminate(state, terminate=False, now_ms=now_ms)
        return
    enter(state.thred, reaction_name=state.pattern.reaction_names[target], now_ms=now_ms)


def _finish_or_terminate(state: RunState, *, terminate: bool, now_ms: int) -> None:
    finished = state.pattern.broadcastAllowed and not terminate
    end(state.thred, status=FINISHED if finished else TERMINATED, now_ms=now_ms)


def transition(
    state: RunState,
    *,
    directive: Transition | None,
    event: dict[str, Any] | None,
    now_ms: int,
) -> dict[str, Any] | None:
    """Move the thred; return the next input (forward or local) or None to wait."""
    directive = directive or _DEFAULT_TRANSITION
    _move(state, name=directive.name, now_ms=now_ms)
    if state.thred.status != ACTIVE:
        return None
    if directive.input == "forward":
        return event
    if directive.input == "local":
        value = state.thred.thredContext.scope.get(directive.localName or "")
        return value if isinstance(value, dict) else None
    return None


def _update_meta(state: RunState, *, event: dict[str, Any]) -> None:
    raw = event.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    meta = state.thred.meta
    raw_display = data.get("display")
    display: dict[str, Any] = raw_display if isinstance(raw_display, dict) else {}
    meta.label = data.get("title") or meta.label or state.pattern.name
    meta.description = data.get("description") or meta.description or event.get("type")
    meta.displayUri = display.get("uri") or meta.displayUri


def expiry_due(state: RunState, *, now_ms: int) -> bool:
    """Whether the current reaction's expiry interval has passed (the lazy check)."""
    if state.thred.status != ACTIVE:
        return False
    expiry = current_reaction(state).expiry
    return expiry is not None and now_ms - state.thred.reactionStore.startTime > expiry.interval


def expire(state: RunState, *, now_ms: int) -> dict[str, Any] | None:
    """Run the expiry transition with no input; the next input (`local` only) or None."""
    expiry = current_reaction(state).expiry
    assert expiry is not None
    # No input: `forward` gives nothing, `local` replays the stored value.
    return transition(state, directive=expiry.transition, event=None, now_ms=now_ms)


def deadline_ms(state: RunState) -> int | None:
    """When the current reaction's expiry falls due, or None."""
    if state.thred.status != ACTIVE:
        return None
    expiry = current_reaction(state).expiry
    if expiry is None:
        return None
    # The lazy check is `now - entry > interval`, so the first due millisecond is +1.
    return state.thred.reactionStore.startTime + expiry.interval + 1


def accepts_unbound(state: RunState) -> bool:
    """Whether the thred belongs in the unbound set (its reaction takes unbound events)."""
    return state.thred.status == ACTIVE and current_reaction(state).allowUnboundEvents


# --- one hop (section 5) -----------------------------------------------------------------------


def decide_hop(
    state: RunState,
    *,
    event: dict[str, Any],
    roles: set[str] | None,
    addresses: AddressBook,
    now_ms: int,
) -> HopOutcome:
    """Steps 1-8 of section 5 on the thred in memory; the message, spawn and log are returned."""
    reaction = current_reaction(state)
    if not authorised(reaction, event=event, roles=roles, addresses=addresses):
        return _no_match(state, event=event, now_ms=now_ms)
    bindings = bindings_for(state.thred, event=event, now_ms=now_ms)
    known_true, state.first_filter_known_true = state.first_filter_known_true, False
    match = apply_condition(
        reaction.condition,
        bindings=bindings,
        state=state.thred.reactionStore.conditionState,
        known_true=known_true,
    )
    if match is None:
        return _no_match(state, event=event, now_ms=now_ms)
    directives = match.directives
    outbound, to = _build_message(state, directives=directives, bindings=bindings, now_ms=now_ms)
    echo = _echo(state, event=event, addresses=addresses, now_ms=now_ms)
    next_input = transition(state, directive=directives.transition, event=event, now_ms=now_ms)
    _update_meta(state, event=event)
    to_reaction = state.thred.reactionStore.reactionName if state.thred.status == ACTIVE else None
    record = log_record(
        LOG_MATCH,
        event=state.original or event,
        now_ms=now_ms,
        thred_id=state.thred.id,
        from_reaction=state.from_reaction,
        to_reaction=to_reaction,
    )
    delivery = None
    if outbound is not None and to is not None:
        delivery = Delivery(outbound, to, source_id=str(event["source"]["id"]))
    return HopOutcome(True, echo, delivery, directives.spawn, next_input, record)


def _no_match(state: RunState, *, event: dict[str, Any], now_ms: int) -> HopOutcome:
    record = log_record(
        LOG_NO_MATCH,
        event=state.original or event,
        now_ms=now_ms,
        thred_id=state.thred.id,
        from_reaction=state.from_reaction,
    )
    return HopOutcome(False, log=record)


def _build_message(
    state: RunState, *, directives: Directives, bindings: Bindings, now_ms: int
) -> tuple[dict[str, Any] | None, list[str] | None]:
    outbound = None
    if directives.transform is not None:
        outbound = templates.build_event(
            directives.transform, bindings=bindings, thred_id=state.thred.id, now_ms=now_ms
        )
    publish = directives.publish
    if publish is None:
        return outbound, None
    to = templates.publish_addresses(publish, bindings=bindings)
    if outbound is not None:
        if publish.onPublish is not None:
            on_publish = Bindings(
                bindings.event,
                thred_id=bindings.thred_id,
                scope=bindings.scope,
                participant_ids=bindings.participant_ids,
                outbound_event=outbound,
                now_ms=bindings.now_ms,
            )
            compile_expression(publish.onPublish.xpr).evaluate(on_publish)
        if publish.name:
            state.thred.thredContext.scope[f"out_id_{publish.name}"] = outbound["id"]
    return outbound, to


# --- built-ins (section 8) ---------------------------------------------------------------------


def _others_in_thred(
    state: RunState, *, event: dict[str, Any], addresses: AddressBook
) -> list[str]:
    source_id = str(event["source"]["id"])
    members = addresses.resolve([THRED], thred_participants=state.thred.thredContext.participantIds)
    if source_id not in members:
        raise errors.not_a_participant(source_id, thred_id=state.thred.id)
    return [member for member in members if member != source_id]


def broadcast(
    state: RunState, *, event: dict[str, Any], addresses: AddressBook, now_ms: int
) -> OutboundMessage:
    """The broadcast built-in: the message to the thred minus the sender, or an EngineError."""
    if not state.pattern.broadcastAllowed:
        raise errors.broadcast_not_allowed(state.pattern.name)
    recipients = _others_in_thred(state, event=event, addresses=addresses)
    if not _js_truthy(value_named(event, name="message")):
        raise errors.broadcast_without_message(str(event["id"]))
    source = event["source"]
    outbound = system_event(
        now_ms=now_ms,
        type=BROADCAST,
        thredId=state.thred.id,
        data={
            "title": f"Message from {source['id']}",
            "content": {
                "valuesType": "broadcastMessage",
                "values": {**_values_of(event), "messageSource": source},
            },
        },
    )
    return OutboundMessage(event=outbound, to=recipients)


def _echo(
    state: RunState, *, event: dict[str, Any], addresses: AddressBook, now_ms: int
) -> OutboundMessage | None:
    if not state.pattern.echoResponses or event.get("type") != CLIENT_TELL:
        return None
    recipients = _others_in_thred(state, event=event, addresses=addresses)
    source = event["source"]
    values = {**_values_of(event), "messageSource": source}
    if event.get("re") is not None:
        values["re"] = event["re"]
    outbound = system_event(
        now_ms=now_ms,
        type=BROADCAST,
        thredId=state.thred.id,
        data={
            "title": f"Action by {source['id']}",
            "content": {"valuesType": "broadcastValues", "values": values},
        },
    )
    return OutboundMessage(event=outbound, to=recipients)


def carried_error(state: RunState, *, event: dict[str, Any], addresses: AddressBook) -> None:
    """Raise the error an agent carried in `data.content.error`, scoped to the thred."""
    content = (event.get("data") or {}).get("content") or {}
    carried = content.get("error") if isinstance(content, dict) else None
    if not isinstance(carried, dict):
        return
    error = EngineError(
        str(carried.get("message", "Server Error")),
        code=int(carried.get("code", errors.SERVER_ERROR)),
        cause=carried.get("cause"),
        thred_scope=True,
    )
    error.recipients = addresses.resolve(
        [THRED], thred_participants=state.thred.thredContext.participantIds
    )
    raise error


def spawn_input(state: RunState, *, spawn: Spawn, event: dict[str, Any]) -> dict[str, Any] | None:
    """The input a spawned thred gets: `forward` = the run's original event, `local` = a local."""
    if spawn.input == "forward":
        return state.original or event
    if spawn.input == "local":
        value = state.thred.thredContext.scope.get(spawn.localName or "")
        return value if isinstance(value, dict) else None
    return None


def public_view(thred: Thred, *, pattern: Pattern | None) -> dict[str, Any]:
    """The public view of a thred (state minus context/store, plus pattern facts)."""
    expiry = None
    if pattern is not None:
        index = pattern.reaction_index(thred.reactionStore.reactionName)
        reaction = pattern.reactions[index] if index is not None else None
        if reaction is not None and reaction.expiry is not None:
            expiry = reaction.expiry.model_dump(mode="json", exclude_none=True)
    return thred.public_view(
        pattern_name=pattern.name if pattern else thred.patternId,
        broadcast_allowed=bool(pattern and pattern.broadcastAllowed),
        expiry=expiry,
    )


def _js_truthy(value: Any) -> bool:
    """JavaScript's truthiness of a JSON value (empty lists and objects are true)."""
    return isinstance(value, list | dict) or bool(value)


def _values_of(event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("data") or {}).get("content") or {}
    values = content.get("values") if isinstance(content, dict) else None
    return dict(values) if isinstance(values, dict) else {}
