"""The engine: routing, thred lifecycle, locking, transitions, spawn, built-ins and timers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from srvthreds_engine import errors, ids, templates
from srvthreds_engine.addresses import ALL, THRED, AddressBook, ResolverConfig, SessionsModel
from srvthreds_engine.conditions import apply_condition, test_carries_over, test_condition
from srvthreds_engine.errors import EngineError
from srvthreds_engine.events import (
    BROADCAST,
    CLIENT_BROADCAST,
    CLIENT_TELL,
    SYSTEM_EVENT_TYPES,
    SYSTEM_SOURCE,
    SYSTEM_THRED_ID,
    TELL,
    Event,
    OutboundMessage,
)
from srvthreds_engine.expressions import Bindings, compile_expression
from srvthreds_engine.patterns import (
    NEXT,
    NO_TRANSITION,
    TERMINATE,
    Pattern,
    Reaction,
    Spawn,
    Transition,
)
from srvthreds_engine.ports import (
    Clock,
    Dispatcher,
    EngineObserver,
    NullObserver,
    PatternCounters,
    Persistence,
    SessionStore,
    ThredStore,
)
from srvthreds_engine.thred import (
    ACTIVE,
    FINISHED,
    TERMINATED,
    ReactionStore,
    Thred,
    ThredContext,
    copy_json,
)
from srvthreds_engine.watches import ThredWatches

_log = logging.getLogger("srvthreds_engine.engine")

LOG_MATCH = "m"
LOG_NO_MATCH = "nm"
LOG_NO_THRED = "nt"
LOG_NO_PATTERN_MATCH = "np"
# A reaction without a transition moves to the next one (read only; built once, not per hop).
_DEFAULT_TRANSITION = Transition()


@dataclass(slots=True)
class _Run:
    """One processing run on one thred: every hop of one inbound event (or timer)."""

    thred: Thred
    pattern: Pattern
    original: dict[str, Any] | None
    from_reaction: str
    # Set when routing's `test` already proved the first hop's filter true for this event.
    first_filter_known_true: bool = False


class Engine:
    """Processes events against patterns; all I/O goes through the ports it is built with."""

    def __init__(
        self,
        *,
        patterns: Sequence[Pattern],
        storage: ThredStore,
        sessions: SessionStore,
        persistence: Persistence,
        dispatcher: Dispatcher,
        clock: Clock,
        observer: EngineObserver | None = None,
        sessions_model: SessionsModel | None = None,
        resolver_config: ResolverConfig | None = None,
        address_book: AddressBook | None = None,
    ) -> None:
        self.storage = storage
        self.sessions = sessions
        self.persistence = persistence
        self.dispatcher = dispatcher
        self.clock = clock
        self.observer: EngineObserver = observer if observer is not None else NullObserver()
        self.addresses = address_book or AddressBook(
            sessions_model, resolver_config=resolver_config
        )
        self._patterns: dict[str, Pattern] = {}
        self._next_due_ms: int | None = None
        self.watches = ThredWatches()
        # Where reloadPattern/reloadAllPatterns read patterns from (the profile, a database).
        self.pattern_loader: Callable[[], Sequence[Pattern]] | None = None
        # Called with the delay in ms when an admin asks for a shutdown.
        self.shutdown_requested: Callable[[int], None] | None = None
        self.set_patterns(patterns)

    # --- patterns ----------------------------------------------------------------------------

    def set_patterns(self, patterns: Sequence[Pattern]) -> None:
        """Replace the loaded patterns (load and reload)."""
        self._patterns = {pattern.pattern_id: pattern for pattern in patterns}

    @property
    def patterns(self) -> list[Pattern]:
        """The loaded patterns, in load order."""
        return list(self._patterns.values())

    def pattern(self, pattern_id: str) -> Pattern | None:
        """A loaded pattern by id."""
        return self._patterns.get(pattern_id)

    def _pattern_by_id_or_name(self, name: str) -> Pattern | None:
        found = self._patterns.get(name)
        if found is not None:
            return found
        return next((item for item in self._patterns.values() if item.name == name), None)

    # --- entry points ------------------------------------------------------------------------

    async def process(self, event: Event) -> None:
        """Process one inbound event to completion; failures become error notifications."""
        started = time.perf_counter()
        payload = event.to_dict()
        try:
            result = await self._route(payload)
        except Exception as exc:
            error = _as_engine_error(exc)
            no_thred = error.code == errors.NO_THRED and bool(payload.get("thredId"))
            result = "no_thred" if no_thred else "error"
            await self.notify_error(payload, error=error)
        self.observer.event_processed(result=result, seconds=time.perf_counter() - started)

    async def fire_due_timers(self) -> int:
        """Run the expiry transitions that fell due; returns how many ran."""
        fired = 0
        for thred_id in await self.storage.due_thred_ids(self.clock.now_ms()):
            try:
                fired += await self._fire_timer(thred_id)
            except Exception:
                # A failing expiry must not fire again and again: drop its deadline.
                _log.exception("expiry of thred %s failed", thred_id)
                await self.storage.set_deadline(thred_id, due_ms=None)
        await self._push_watches()
        await self._refresh_next_due()
        return fired

    def next_timer_due_ms(self) -> int | None:
        """When the next expiry (or debounced watch push) falls due (epoch ms), for a scheduler."""
        watch_due = self.watches.due_ms()
        if watch_due is None or (self._next_due_ms is not None and self._next_due_ms < watch_due):
            return self._next_due_ms
        return watch_due

    async def _push_watches(self) -> None:
        due = self.watches.take_due(now_ms=self.clock.now_ms())
        if not due:
            return
        views = [self.public_view(thred) for thred in await self.storage.list_threds()]
        for participant_id, watch in due:
            push = self.system_event(
                thredId=SYSTEM_THRED_ID,
                re=watch.watch_id,
                data={
                    "title": f"System Event -> Thred: SYSTEM -> Re: Event: {watch.watch_id}",
                    "content": {"values": {"threds": views}},
                },
            )
            await self.send(push, to=[participant_id], thred_id=None)

    async def _route(self, event: dict[str, Any]) -> str:
        if event["type"] in SYSTEM_EVENT_TYPES:
            from srvthreds_engine.system import handle_system_event

            await handle_system_event(self, event=event)
            return "system"
        if event.get("thredId"):
            return await self._process_bound(event)
        return await self._process_unbound(event)

    # --- bound events ------------------------------------------------------------------------

    async def _process_bound(self, event: dict[str, Any]) -> str:
        thred_id = str(event["thredId"])
        await self.persistence.save_event(event, thred_id=thred_id)
        async with self.storage.lock(f"Thred:{thred_id}"):
            thred = await self.storage.get_thred(thred_id)
            if thred is None:
                await self._log(LOG_NO_THRED, event=event, thred_id=thred_id)
                raise errors.no_thred_for_event(
                    thred_id, event_id=event["id"], event_type=event["type"]
                )
            run = self._start_run(thred, event=event)
            self._raise_carried_error(run, event=event)
            if event["type"] == CLIENT_BROADCAST:
                await self._broadcast(run, event=event)
                matched = True
            else:
                await self._expire_if_due(run)
                matched = run.thred.status == ACTIVE and await self._run(run, event)
            await self._save(run)
        return "matched" if matched else "no_match"

    def _start_run(self, thred: Thred, *, event: dict[str, Any] | None) -> _Run:
        pattern = self._patterns.get(thred.patternId)
        if pattern is None:
            raise EngineError(f"Pattern {thred.patternId} of thred {thred.id} is not loaded")
        if thred.status == FINISHED:
            # As in the original, a finished thred that is used again restarts at the start.
            thred.status = ACTIVE
            thred.endTime = None
            self._enter(thred, reaction_name=pattern.reaction_names[0])
        return _Run(thred, pattern, event, thred.reactionStore.reactionName)

    def _raise_carried_error(self, run: _Run, *, event: dict[str, Any]) -> None:
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
        error.recipients = self.addresses.resolve(
            [THRED], thred_participants=run.thred.thredContext.participantIds
        )
        raise error

    # --- unbound events ----------------------------------------------------------------------

    async def _process_unbound(self, event: dict[str, Any]) -> str:
        created, matched = await self._create_from_patterns(event)
        matched = await self._offer_to_unbound_threds(event, exclude=created) or matched
        if not matched:
            await self.persistence.save_event(event, thred_id=None)
            await self._log(LOG_NO_PATTERN_MATCH, event=event)
        return "matched" if matched else "no_match"

    async def _create_from_patterns(self, event: dict[str, Any]) -> tuple[set[str], bool]:
        created: set[str] = set()
        failures: list[EngineError] = []
        matched = False
        bindings = Bindings(event)
        for pattern in list(self._patterns.values()):
            try:
                condition = pattern.reactions[0].condition
                if not test_condition(condition, bindings=bindings):
                    continue
                matched = True
                thred_id = await self._create_thred(
                    pattern, event=event, filter_known_true=test_carries_over(condition)
                )
            except Exception as exc:
                failures.append(_pattern_failure(pattern, event=event, exc=exc))
                continue
            if thred_id is not None:
                created.add(thred_id)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise errors.server_error([failure.to_content() for failure in failures])
        return created, matched

    async def _offer_to_unbound_threds(self, event: dict[str, Any], *, exclude: set[str]) -> bool:
        matched = False
        for thred_id in await self.storage.unbound_thred_ids():
            # A thred created by this very event already had it (the original applied it twice).
            if thred_id in exclude:
                continue
            async with self.storage.lock(f"Thred:{thred_id}"):
                thred = await self.storage.get_thred(thred_id)
                if thred is None or thred.patternId not in self._patterns:
                    continue
                run = self._start_run(thred, event=event)
                reaction = self._current_reaction(run)
                bindings = self._bindings(run.thred, event=event)
                if not reaction.allowUnboundEvents or not test_condition(
                    reaction.condition, bindings=bindings
                ):
                    continue
                matched = await self._run(run, event) or matched
                await self._save(run)
        return matched

    # --- creation ----------------------------------------------------------------------------

    async def _reserve_instance(self, pattern: Pattern) -> PatternCounters | None:
        """Check the limits and count the new instance; None when creation is skipped."""
        pattern_id = pattern.pattern_id
        now = self.clock.now_ms()
        async with self.storage.lock(f"Pattern:{pattern_id}"):
            counters = await self.storage.get_counters(pattern_id)
            if pattern.maxInstances and counters.instances >= pattern.maxInstances:
                self._skipped(pattern, reason="max_instances")
                return None
            last = counters.last_instance_ms
            too_soon = last is not None and now - last < pattern.instanceInterval
            if pattern.instanceInterval and too_soon:
                self._skipped(pattern, reason="instance_interval")
                return None
            await self.storage.set_counters(
                pattern_id,
                counters=PatternCounters(counters.instances + 1, now),
            )
        return counters

    def _skipped(self, pattern: Pattern, *, reason: str) -> None:
        _log.info("thred creation skipped for pattern %s: %s", pattern.pattern_id, reason)
        self.observer.thred_creation_skipped(pattern_id=pattern.pattern_id, reason=reason)

    async def _release_instance(self, pattern: Pattern, *, previous: PatternCounters) -> None:
        async with self.storage.lock(f"Pattern:{pattern.pattern_id}"):
            counters = await self.storage.get_counters(pattern.pattern_id)
            await self.storage.set_counters(
                pattern.pattern_id,
                counters=PatternCounters(max(counters.instances - 1, 0), previous.last_instance_ms),
            )

    def _new_thred(self, pattern: Pattern, *, parent: Thred | None, spawn: Spawn | None) -> Thred:
        now = self.clock.now_ms()
        thred_id = ids.thred_id(pattern.pattern_id)
        context = ThredContext(thredId=thred_id)
        if parent is not None and spawn is not None and spawn.context:
            context.scope = copy_json(parent.thredContext.scope)
            context.participantIds = list(parent.thredContext.participantIds)
        thred = Thred(
            id=thred_id,
            patternId=pattern.pattern_id,
            status=ACTIVE,
            startTime=now,
            lastUpdateTime=now,
            reactionStore=ReactionStore(
                reactionName=pattern.reaction_names[0], conditionState={}, startTime=now
            ),
            thredContext=context,
        )
        if parent is not None and spawn is not None:
            thred.parentThredId = parent.id
            thred.spawnType = spawn.type
        return thred

    async def _create_thred(
        self,
        pattern: Pattern,
        *,
        event: dict[str, Any] | None,
        parent: Thred | None = None,
        spawn: Spawn | None = None,
        filter_known_true: bool = False,
    ) -> str | None:
        """Create a thred and apply its first input; atomic: a failure leaves nothing behind."""
        previous = await self._reserve_instance(pattern)
        if previous is None:
            return None
        thred = self._new_thred(pattern, parent=parent, spawn=spawn)
        try:
            async with self.storage.lock(f"Thred:{thred.id}"):
                run = _Run(thred, pattern, None, pattern.reaction_names[0], filter_known_true)
                if event is not None:
                    rebound = {**event, "thredId": thred.id}
                    run.original = rebound
                    await self.persistence.save_event(rebound, thred_id=thred.id)
                    await self._run(run, rebound)
                await self._save(run)
        except BaseException:
            await self._release_instance(pattern, previous=previous)
            raise
        await self._threds_changed()
        return thred.id

    # --- the reaction loop (spec section 5) --------------------------------------------------

    async def _run(self, run: _Run, event: dict[str, Any]) -> bool:
        """Apply `event`, then every forward/local input that follows; True if the first matched."""
        next_input: dict[str, Any] | None = event
        first = True
        matched = False
        while next_input is not None:
            hop_event = next_input
            hop_matched, next_input = await self._apply_hop(run, event=hop_event)
            if not hop_matched:
                await self._log(
                    LOG_NO_MATCH,
                    event=hop_event,
                    thred_id=run.thred.id,
                    from_reaction=run.thred.reactionStore.reactionName,
                )
                break
            matched = matched or first
            first = False
            if run.thred.status != ACTIVE:
                break
        return matched

    def _current_reaction(self, run: _Run) -> Reaction:
        index = run.pattern.reaction_index(run.thred.reactionStore.reactionName)
        if index is None:
            raise EngineError(
                f"Reaction {run.thred.reactionStore.reactionName} not found in pattern "
                f"{run.pattern.pattern_id}"
            )
        return run.pattern.reactions[index]

    def _bindings(self, thred: Thred, *, event: dict[str, Any]) -> Bindings:
        return Bindings(
            event,
            thred_id=thred.id,
            scope=thred.thredContext.scope,
            participant_ids=thred.thredContext.participantIds,
        )

    async def _apply_hop(
        self, run: _Run, *, event: dict[str, Any]
    ) -> tuple[bool, dict[str, Any] | None]:
        """Steps 1-10 of spec section 5; returns whether it matched and the next input."""
        reaction = self._current_reaction(run)
        restricted = reaction.allowedSources is not None or reaction.permissions is not None
        if restricted and not await self._authorised(reaction, event=event):
            return False, None
        bindings = self._bindings(run.thred, event=event)
        known_true, run.first_filter_known_true = run.first_filter_known_true, False
        match = apply_condition(
            reaction.condition,
            bindings=bindings,
            state=run.thred.reactionStore.conditionState,
            known_true=known_true,
        )
        if match is None:
            return False, None
        directives = match.directives
        outbound, to = self._build_message(run, directives=directives, bindings=bindings)
        if run.pattern.echoResponses:
            await self._echo(run, event=event)
        next_input = self._transition(run, transition=directives.transition, event=event)
        self._update_meta(run, event=event)
        to_reaction = run.thred.reactionStore.reactionName if run.thred.status == ACTIVE else None
        await self._log(
            LOG_MATCH,
            event=event,
            thred_id=run.thred.id,
            from_reaction=run.from_reaction,
            to_reaction=to_reaction,
        )
        if outbound is not None and to is not None:
            await self._deliver(run, event=outbound, to=to, source_id=event["source"]["id"])
        if directives.spawn is not None:
            await self._spawn(run, spawn=directives.spawn, event=event)
        return True, next_input

    def _build_message(
        self, run: _Run, *, directives: Any, bindings: Bindings
    ) -> tuple[dict[str, Any] | None, list[str] | None]:
        outbound = None
        if directives.transform is not None:
            outbound = templates.build_event(
                directives.transform,
                bindings=bindings,
                thred_id=run.thred.id,
                now_ms=self.clock.now_ms(),
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
                )
                compile_expression(publish.onPublish.xpr).evaluate(on_publish)
            if publish.name:
                run.thred.thredContext.scope[f"out_id_{publish.name}"] = outbound["id"]
        return outbound, to

    async def _authorised(self, reaction: Reaction, *, event: dict[str, Any]) -> bool:
        source_id = str(event["source"]["id"])
        if reaction.allowedSources is not None and not self._source_allowed(
            reaction.allowedSources, source_id=source_id
        ):
            return False
        if reaction.permissions is not None and reaction.permissions.allowedRoles:
            roles = await self.roles_of(source_id)
            return bool(roles.intersection(reaction.permissions.allowedRoles))
        return True

    def _source_allowed(self, allowed: str | list[str], *, source_id: str) -> bool:
        import re

        for entry in [allowed] if isinstance(allowed, str) else allowed:
            if entry.startswith("$") and self.addresses.is_member(source_id, group=entry[1:]):
                return True
            if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
                if re.search(entry[1:-1], source_id, flags=re.IGNORECASE):
                    return True
            elif entry == source_id:
                return True
        return False

    async def roles_of(self, participant_id: str) -> set[str]:
        """Every role of a participant's live sessions."""
        sessions = await self.sessions.sessions_for(participant_id)
        return {role for session in sessions for role in session.roles}

    # --- transitions and state ---------------------------------------------------------------

    def _enter(self, thred: Thred, *, reaction_name: str) -> None:
        thred.reactionStore = ReactionStore(
            reactionName=reaction_name, conditionState={}, startTime=self.clock.now_ms()
        )

    def _end(self, run: _Run, *, terminate: bool) -> None:
        finished = run.pattern.broadcastAllowed and not terminate
        run.thred.status = FINISHED if finished else TERMINATED
        run.thred.endTime = self.clock.now_ms()

    def _transition(
        self, run: _Run, *, transition: Transition | None, event: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Move the thred; return the next input (forward or local) or None to wait."""
        transition = transition or _DEFAULT_TRANSITION
        self._move(run, name=transition.name)
        if run.thred.status != ACTIVE:
            return None
        if transition.input == "forward":
            return event
        if transition.input == "local":
            value = run.thred.thredContext.scope.get(transition.localName or "")
            return value if isinstance(value, dict) else None
        return None

    def _move(self, run: _Run, *, name: str) -> None:
        if name == NO_TRANSITION:
            return
        if name == TERMINATE:
            self._end(run, terminate=True)
            return
        if name == NEXT:
            index = run.pattern.reaction_index(run.thred.reactionStore.reactionName)
            target = (index if index is not None else -1) + 1
        else:
            found = run.pattern.reaction_index(name)
            if found is None:
                raise EngineError(f"No reaction named {name} in pattern {run.pattern.pattern_id}")
            target = found
        if target >= len(run.pattern.reactions):
            self._end(run, terminate=False)
            return
        self._enter(run.thred, reaction_name=run.pattern.reaction_names[target])

    def _update_meta(self, run: _Run, *, event: dict[str, Any]) -> None:
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        meta = run.thred.meta
        raw_display = data.get("display")
        display: dict[str, Any] = raw_display if isinstance(raw_display, dict) else {}
        meta.label = data.get("title") or meta.label or run.pattern.name
        meta.description = data.get("description") or meta.description or event.get("type")
        meta.displayUri = display.get("uri") or meta.displayUri

    async def _expire_if_due(self, run: _Run) -> bool:
        """Run the current reaction's expiry transition if its interval has passed."""
        reaction = self._current_reaction(run)
        expiry = reaction.expiry
        if expiry is None or run.thred.status != ACTIVE:
            return False
        if self.clock.now_ms() - run.thred.reactionStore.startTime <= expiry.interval:
            return False
        # No input: `forward` gives nothing, `local` replays the stored value.
        next_input = self._transition(run, transition=expiry.transition, event=None)
        if next_input is not None:
            await self._run(run, next_input)
        return True

    async def _fire_timer(self, thred_id: str) -> int:
        async with self.storage.lock(f"Thred:{thred_id}"):
            thred = await self.storage.get_thred(thred_id)
            if thred is None or thred.patternId not in self._patterns:
                await self.storage.set_deadline(thred_id, due_ms=None)
                return 0
            run = self._start_run(thred, event=None)
            fired = await self._expire_if_due(run)
            await self._save(run)
        return 1 if fired else 0

    def _deadline(self, run: _Run) -> int | None:
        if run.thred.status != ACTIVE:
            return None
        expiry = self._current_reaction(run).expiry
        if expiry is None:
            return None
        # The lazy check is `now - entry > interval`, so the first due millisecond is +1.
        return run.thred.reactionStore.startTime + expiry.interval + 1

    # --- saving, ending, archiving -----------------------------------------------------------

    async def _save(self, run: _Run) -> None:
        thred = run.thred
        thred.lastUpdateTime = self.clock.now_ms()
        if thred.status == TERMINATED:
            await self._archive(run)
            return
        await self.storage.save_thred(thred)
        reaction = self._current_reaction(run)
        await self.storage.set_unbound(
            thred.id, allowed=thred.status == ACTIVE and reaction.allowUnboundEvents
        )
        await self.storage.set_deadline(thred.id, due_ms=self._deadline(run))
        await self._refresh_next_due()
        self.watches.changed(now_ms=self.clock.now_ms())

    async def _archive(self, run: _Run) -> None:
        thred = run.thred
        await self.storage.delete_thred(thred.id)
        await self._release_count(run.pattern)
        for child_id in thred.childThredIds or []:
            await self._terminate_child(child_id)
        for participant in thred.thredContext.participantIds:
            await self.storage.remove_participant_thred(participant, thred_id=thred.id)
            await self.persistence.add_archived_thred(participant, thred_id=thred.id)
        view = self.public_view(thred, pattern=run.pattern)
        await self.persistence.archive_thred(view)
        await self._refresh_next_due()
        self.watches.changed(now_ms=self.clock.now_ms())
        await self._threds_changed()

    async def _release_count(self, pattern: Pattern) -> None:
        async with self.storage.lock(f"Pattern:{pattern.pattern_id}"):
            counters = await self.storage.get_counters(pattern.pattern_id)
            counters.instances = max(counters.instances - 1, 0)
            await self.storage.set_counters(pattern.pattern_id, counters=counters)

    async def _terminate_child(self, child_id: str) -> None:
        async with self.storage.lock(f"Thred:{child_id}"):
            child = await self.storage.get_thred(child_id)
            if child is None or child.spawnType != "child":
                return
            await self.terminate_locked(child)

    async def terminate_locked(self, thred: Thred) -> None:
        """End a thred (its `Thred:` lock held) and archive it, cascading to children."""
        pattern = self._patterns.get(thred.patternId)
        if pattern is None:
            await self.storage.delete_thred(thred.id)
            return
        run = _Run(thred, pattern, None, thred.reactionStore.reactionName)
        thred.status = TERMINATED
        thred.endTime = self.clock.now_ms()
        await self._save(run)

    async def transition_locked(self, thred: Thred, *, transition: Transition) -> None:
        """Move a thred (its `Thred:` lock held) as an admin transition, applying any input."""
        run = self._start_run(thred, event=None)
        next_input = self._transition(run, transition=transition, event=None)
        if next_input is not None:
            await self._run(run, next_input)
        await self._save(run)

    def public_view(self, thred: Thred, *, pattern: Pattern | None = None) -> dict[str, Any]:
        """The public view of a thred (state minus context/store, plus pattern facts)."""
        pattern = pattern or self._patterns.get(thred.patternId)
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

    async def _refresh_next_due(self) -> None:
        self._next_due_ms = await self.storage.next_deadline_ms()

    async def _threds_changed(self) -> None:
        # Without an observer there is no one to tell the thred count: skip counting.
        if not isinstance(self.observer, NullObserver):
            self.observer.threds_changed(active=await self.storage.count_threds())

    # --- delivery, built-ins, spawn ----------------------------------------------------------

    async def resolve(self, to: list[str], *, thred: Thred | None) -> list[str]:
        """Resolve addresses for a thred (`$all` asks the session store)."""
        with_sessions = await self.sessions.participants_with_sessions() if ALL in to else None
        return self.addresses.resolve(
            to,
            thred_participants=thred.thredContext.participantIds if thred else [],
            participants_with_sessions=with_sessions,
        )

    async def _deliver(
        self, run: _Run, *, event: dict[str, Any], to: list[str], source_id: str
    ) -> None:
        resolved = await self.resolve(to, thred=run.thred)
        joined = [*resolved, source_id]
        run.thred.thredContext.add_participants(joined)
        for participant in dict.fromkeys(joined):
            await self.storage.add_participant_thred(participant, thred_id=run.thred.id)
        await self.send(event, to=resolved, thred_id=run.thred.id)

    async def send(self, event: dict[str, Any], *, to: list[str], thred_id: str | None) -> None:
        """Record an outbound event with its recipients and hand it to the dispatcher."""
        await self.persistence.save_event(event, thred_id=thred_id)
        await self.persistence.set_event_to(str(event["id"]), to=to)
        await self.dispatcher.dispatch(OutboundMessage(event=event, to=to))

    def system_event(self, **fields: Any) -> dict[str, Any]:
        """An engine-built event (section 1 defaults) with the given fields."""
        event: dict[str, Any] = {"id": ids.event_id(), "type": TELL, "source": dict(SYSTEM_SOURCE)}
        present = {key: value for key, value in fields.items() if value is not None}
        data = present.pop("data", None)
        event.update(present)
        event.setdefault("time", self.clock.now_ms())
        if data is not None:
            event["data"] = data
        return event

    def _others_in_thred(self, run: _Run, *, event: dict[str, Any]) -> list[str]:
        source_id = str(event["source"]["id"])
        members = self.addresses.resolve(
            [THRED], thred_participants=run.thred.thredContext.participantIds
        )
        if source_id not in members:
            raise errors.not_a_participant(source_id, thred_id=run.thred.id)
        return [member for member in members if member != source_id]

    async def _broadcast(self, run: _Run, *, event: dict[str, Any]) -> None:
        if not run.pattern.broadcastAllowed:
            raise errors.broadcast_not_allowed(run.pattern.name)
        recipients = self._others_in_thred(run, event=event)
        values = _values_of(event)
        if values.get("message") is None:
            raise errors.broadcast_without_message(str(event["id"]))
        source = event["source"]
        outbound = self.system_event(
            type=BROADCAST,
            thredId=run.thred.id,
            data={
                "title": f"Message from {source.get('name') or source['id']}",
                "content": {
                    "valuesType": "broadcastMessage",
                    "values": {**values, "messageSource": source},
                },
            },
        )
        await self.send(outbound, to=recipients, thred_id=run.thred.id)

    async def _echo(self, run: _Run, *, event: dict[str, Any]) -> None:
        if not run.pattern.echoResponses or event.get("type") != CLIENT_TELL:
            return
        recipients = self._others_in_thred(run, event=event)
        source = event["source"]
        values = {**_values_of(event), "messageSource": source}
        if event.get("re") is not None:
            values["re"] = event["re"]
        outbound = self.system_event(
            type=BROADCAST,
            thredId=run.thred.id,
            data={
                "title": f"Action by {source.get('name') or source['id']}",
                "content": {"valuesType": "broadcastValues", "values": values},
            },
        )
        await self.send(outbound, to=recipients, thred_id=run.thred.id)

    async def _spawn(self, run: _Run, *, spawn: Spawn, event: dict[str, Any]) -> None:
        spawn_input: dict[str, Any] | None = None
        if spawn.input == "forward":
            spawn_input = run.original or event
        elif spawn.input == "local":
            value = run.thred.thredContext.scope.get(spawn.localName or "")
            spawn_input = value if isinstance(value, dict) else None
        for name in spawn.names:
            pattern = self._pattern_by_id_or_name(name)
            if pattern is None:
                _log.warning("spawn of unknown pattern %s skipped", name)
                continue
            child_id = await self._create_thred(
                pattern, event=spawn_input, parent=run.thred, spawn=spawn
            )
            if child_id is not None:
                run.thred.childThredIds = [*(run.thred.childThredIds or []), child_id]

    # --- errors and the thred log ------------------------------------------------------------

    async def notify_error(self, event: dict[str, Any], *, error: EngineError) -> None:
        """Send the error notification for a failed event (section 7)."""
        content = error.to_content()
        await self.persistence.set_event_error(str(event.get("id")), error=content)
        source = event.get("source") or {}
        recipients = error.recipients if error.recipients is not None else [str(source.get("id"))]
        recipients = [item for item in recipients if not self.addresses.is_service(item)]
        if not recipients:
            return
        outbound = self.system_event(
            thredId=event.get("thredId"),
            re=event.get("id"),
            data={
                "title": f"Failure processing Event {event.get('id')} : {error.message}",
                "content": {"error": content},
            },
        )
        await self.send(outbound, to=recipients, thred_id=event.get("thredId"))

    async def _log(
        self,
        kind: str,
        *,
        event: dict[str, Any],
        thred_id: str | None = None,
        from_reaction: str | None = None,
        to_reaction: str | None = None,
    ) -> None:
        record: dict[str, Any] = {"type": kind, "eventId": event.get("id")}
        optional = {"thredId": thred_id, "fromReaction": from_reaction, "toReaction": to_reaction}
        record.update({key: value for key, value in optional.items() if value is not None})
        record["timestamp"] = self.clock.now_ms()
        await self.persistence.add_log(record)


def _values_of(event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("data") or {}).get("content") or {}
    values = content.get("values") if isinstance(content, dict) else None
    return dict(values) if isinstance(values, dict) else {}


def _as_engine_error(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    _log.exception("event processing failed", exc_info=exc)
    return errors.server_error(str(exc))


def _pattern_failure(pattern: Pattern, *, event: dict[str, Any], exc: Exception) -> EngineError:
    if isinstance(exc, EngineError) and exc.code != errors.SERVER_ERROR:
        return exc
    cause = exc.to_content() if isinstance(exc, EngineError) else str(exc)
    return errors.pattern_failed(
        pattern.pattern_id, event_id=str(event["id"]), event_type=str(event["type"]), cause=cause
    )
