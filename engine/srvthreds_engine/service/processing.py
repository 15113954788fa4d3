"""The engine: routing, processing runs on locked threds, creation, spawn, timers; ports only.

Each processing (an inbound event, or a timer falling due) is decided in memory, then
committed: every thred it touched is written through its store unit at once (state, routing
sets, deadline, participant index, the "done" mark and the messages, as an outbox), then its
records are written, then its messages are handed to the dispatcher. A redelivered event is
recognised by the done marks and only its committed messages are handed on again.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from srvthreds_engine.core import errors, hops, ids
from srvthreds_engine.core.addresses import ALL, AddressBook, ResolverConfig, SessionsModel
from srvthreds_engine.core.conditions import test_carries_over, test_condition
from srvthreds_engine.core.errors import EngineError
from srvthreds_engine.core.events import (
    CLIENT_BROADCAST,
    SYSTEM_EVENT_TYPES,
    SYSTEM_THRED_ID,
    Event,
    OutboundMessage,
)
from srvthreds_engine.core.expressions import Bindings
from srvthreds_engine.core.hops import Delivery, RunState
from srvthreds_engine.core.patterns import Pattern, Reaction, Spawn, Transition
from srvthreds_engine.core.thred import (
    ACTIVE,
    TERMINATED,
    ReactionStore,
    Thred,
    ThredContext,
    copy_json,
)
from srvthreds_engine.core.watches import ThredWatches
from srvthreds_engine.ports import (
    Clock,
    CreationLimits,
    Dispatcher,
    EngineObserver,
    NullObserver,
    Persistence,
    Session,
    SessionStore,
    ThredChange,
    ThredStore,
    ThredUnit,
)
from srvthreds_engine.service.system import handle_system_event

_log = logging.getLogger("srvthreds_engine.engine")

LOG_NO_THRED = hops.LOG_NO_THRED
LOG_NO_PATTERN_MATCH = hops.LOG_NO_PATTERN_MATCH


@dataclass(slots=True)
class Work:
    """One processing (an inbound event or a timer): its key and the messages it sends."""

    key: str
    # The transport may have delivered this work before (a redelivery after a crash): skip
    # what the done marks say was committed. Off otherwise, as event ids may legitimately
    # repeat (the spec's own examples send the same event id twice).
    dedupe: bool = False
    # Messages sent at the end, in order: error notifications, system replies.
    messages: list[OutboundMessage] = field(default_factory=list)
    # Ids of the messages already handed to the dispatcher.
    sent: set[str] = field(default_factory=set)
    # Some thred had this work done already: an inbound event delivered again.
    redelivered: bool = False
    roles: dict[str, set[str]] = field(default_factory=dict)
    # Messages of spawned threds, committed before their spawner: sent even if it then fails.
    spawned: list[OutboundMessage] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Outcome:
    """How the processing of one event ended."""

    # `matched`, `no_match`, `system`, `error`, `no_thred` or `duplicate`.
    result: str
    # The error the sender was notified of, if the event failed.
    error: EngineError | None = None


@dataclass(slots=True)
class _Pending:
    """What processing one thred produced, written only when its unit commits."""

    # Messages to commit with the thred (its outbox entries).
    outbox: list[OutboundMessage] = field(default_factory=list)
    # Messages in dispatch order: the outbox plus those of spawned threds, committed earlier.
    sequence: list[OutboundMessage] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)

    def add(self, message: OutboundMessage) -> None:
        self.outbox.append(message)
        self.sequence.append(message)


# The work of the processing in progress in this task, for system operations' replies.
_CURRENT_WORK: contextvars.ContextVar[Work | None] = contextvars.ContextVar(
    "srvthreds_work", default=None
)


class Engine:
    """Processes events against patterns; all I/O goes through the ports it is built with."""

    def __init__(
        self,
        *,
        patterns: Sequence[Pattern],
        store: ThredStore,
        sessions: SessionStore,
        persistence: Persistence,
        dispatcher: Dispatcher,
        clock: Clock,
        observer: EngineObserver | None = None,
        sessions_model: SessionsModel | None = None,
        resolver_config: ResolverConfig | None = None,
        address_book: AddressBook | None = None,
        transient_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.store = store
        # Failures of a backend that went away: raised to the caller (which delivers the
        # event again later), never turned into an error notification.
        self.transient_errors = transient_errors
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
        # Work keys of expiries a backend failure interrupted: what they committed (their
        # outbox) is sent by the next pass, as no redelivery will bring them back.
        self._unsent_expiries: list[str] = []
        self._thred_count_stale = False
        self.watches = ThredWatches()
        # Where reloadPattern/reloadAllPatterns read patterns from (the profile, a database).
        self.pattern_loader: Callable[[], Awaitable[Sequence[Pattern]]] | None = None
        # Tells the other replicas that patterns changed (the id, or None for all).
        self.announce_patterns: Callable[[str | None], Awaitable[object]] | None = None
        # Called with the delay in ms when an admin asks for a shutdown.
        self.shutdown_requested: Callable[[int], None] | None = None
        self.set_patterns(patterns)

    # --- patterns ------------------------------------------------------------------------------

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

    # --- entry points --------------------------------------------------------------------------

    async def process(self, event: Event, *, redelivered: bool = False) -> Outcome:
        """Process one inbound event to completion; failures become error notifications.

        `redelivered`: the transport delivered it before; what was committed then is skipped.

        Raises only the engine's `transient_errors` (a backend is down): the caller then
        delivers the event again later, and the done marks keep it from being applied twice.
        """
        started = time.perf_counter()
        payload = event.to_dict()
        work = Work(key=str(payload["id"]), dedupe=redelivered)
        token = _CURRENT_WORK.set(work)
        error: EngineError | None = None
        try:
            result = await self._route(payload, work=work)
        except self.transient_errors:
            raise
        except Exception as exc:
            error = _as_engine_error(exc)
            no_thred = error.code == errors.NO_THRED and bool(payload.get("thredId"))
            result = "no_thred" if no_thred else "error"
            await self.notify_error(payload, error=error, work=work)
        finally:
            _CURRENT_WORK.reset(token)
        await self._finish(work)
        if work.redelivered and result in ("matched", "no_match"):
            result = "duplicate"
        self.observer.event_processed(result=result, seconds=time.perf_counter() - started)
        return Outcome(result, error)

    async def fire_due_timers(self) -> int:
        """Run the expiry transitions that fell due; returns how many ran."""
        await self._send_unsent_expiries()
        fired = 0
        for thred_id in await self.store.due_thred_ids(self.clock.now_ms()):
            work = Work(key=f"expiry:{thred_id}:{self.clock.now_ms()}")
            try:
                fired += await self._fire_timer(thred_id, work=work)
            except self.transient_errors:
                self._unsent_expiries.append(work.key)
                raise
            except Exception:
                _log.exception("expiry of thred %s failed", thred_id)
                await self._drop_deadline(thred_id, work=work)
            await self._finish(work)
        await self._push_watches()
        self._next_due_ms = await self.store.next_deadline_ms()
        return fired

    async def _send_unsent_expiries(self) -> None:
        """Publish the outboxes of interrupted expiries (empty if nothing was committed)."""
        while self._unsent_expiries:
            work = Work(key=self._unsent_expiries[0])
            await self._publish(await self.store.outbox(work.key), work=work)
            await self.store.clear_outbox(work.key)
            self._unsent_expiries.pop(0)

    def next_timer_due_ms(self) -> int | None:
        """When the next expiry (or debounced watch push) may fall due (epoch ms).

        It may be early (a deadline since moved or cleared); never late for this process's
        own commits. Now (0) while interrupted expiries have messages to send.
        """
        if self._unsent_expiries:
            return 0
        watch_due = self.watches.due_ms()
        if watch_due is None or (self._next_due_ms is not None and self._next_due_ms < watch_due):
            return self._next_due_ms
        return watch_due

    async def refresh_timers(self) -> None:
        """Read the earliest deadline from the store (other processes may have set one)."""
        self._next_due_ms = await self.store.next_deadline_ms()

    async def _finish(self, work: Work) -> None:
        """The end of a processing: records, then the messages not sent with their thred."""
        committed = [item for item in work.spawned if item.id not in work.sent]
        if work.redelivered:
            # Published before a crash or not: the receivers drop a message id seen twice.
            committed = [*await self.store.outbox(work.key), *committed]
        await self._publish([*committed, *work.messages], work=work)
        if committed:
            await self.store.clear_outbox(work.key)

    async def _publish(
        self,
        messages: Sequence[OutboundMessage],
        *,
        work: Work,
        sessions: Mapping[str, list[Session]] | None = None,
    ) -> None:
        """Make the records durable, then hand the messages not sent yet to the dispatcher."""
        await self.persistence.flush()
        unsent = [message for message in messages if message.id not in work.sent]
        if unsent:
            await self.dispatcher.dispatch(unsent, sessions=sessions)
            work.sent.update(message.id for message in unsent)

    async def _push_watches(self) -> None:
        due = self.watches.take_due(now_ms=self.clock.now_ms())
        if not due:
            return
        views = [self.public_view(thred) for thred in await self.store.list_threds()]
        work = Work(key=ids.event_id())
        for participant_id, watch in due:
            push = self.system_event(
                thredId=SYSTEM_THRED_ID,
                re=watch.watch_id,
                data={
                    "title": f"System Event -> Thred: SYSTEM -> Re: Event: {watch.watch_id}",
                    "content": {"values": {"threds": views}},
                },
            )
            await self.send(push, to=[participant_id], thred_id=None, work=work)
        await self._finish(work)

    async def _route(self, event: dict[str, Any], *, work: Work) -> str:
        if event["type"] in SYSTEM_EVENT_TYPES:
            await handle_system_event(self, event=event)
            return "system"
        if event.get("thredId"):
            return await self._process_bound(event, work=work)
        return await self._process_unbound(event, work=work)

    # --- bound events --------------------------------------------------------------------------

    async def _process_bound(self, event: dict[str, Any], *, work: Work) -> str:
        thred_id = str(event["thredId"])
        await self.persistence.save_event(event, thred_id=thred_id)
        async with self.store.unit(thred_id, work_key=work.key) as unit:
            if unit.done and work.dedupe:
                work.redelivered = True
                await self._publish(await self.store.outbox(work.key), work=work)
                await unit.settle()
                return "matched"
            if unit.thred is None:
                await self._log_now(LOG_NO_THRED, event=event, thred_id=thred_id)
                raise errors.no_thred_for_event(
                    thred_id, event_id=event["id"], event_type=event["type"]
                )
            broadcast = event["type"] == CLIENT_BROADCAST
            # A broadcast pre-empts the reaction: a FINISHED thred stays FINISHED.
            state = self._state(unit.thred, restart_finished=not broadcast)
            hops.carried_error(state, event=event, addresses=self.addresses)
            pending = _Pending()
            if broadcast:
                now_ms = self.clock.now_ms()
                pending.add(
                    hops.broadcast(state, event=event, addresses=self.addresses, now_ms=now_ms)
                )
                matched = True
            else:
                await self._expire_if_due(state, pending=pending, work=work)
                matched = state.thred.status == ACTIVE and await self._run(
                    state, event, pending=pending, work=work
                )
            await self._commit(unit, state, pending=pending, work=work)
        return "matched" if matched else "no_match"

    def _state(self, thred: Thred, *, restart_finished: bool = True) -> RunState:
        pattern = self._patterns.get(thred.patternId)
        if pattern is None:
            raise EngineError(f"Pattern {thred.patternId} of thred {thred.id} is not loaded")
        state = RunState(thred, pattern)
        if restart_finished:
            hops.restart_if_finished(state, now_ms=self.clock.now_ms())
        return state

    # --- unbound events ------------------------------------------------------------------------

    async def _process_unbound(self, event: dict[str, Any], *, work: Work) -> str:
        created, matched = await self._create_from_patterns(event, work=work)
        offered = await self._offer_to_unbound_threds(event, exclude=created, work=work)
        matched = offered or matched
        if not matched and not work.redelivered:
            await self.persistence.save_event(event, thred_id=None)
            await self._log_now(LOG_NO_PATTERN_MATCH, event=event)
        return "matched" if matched else "no_match"

    async def _create_from_patterns(
        self, event: dict[str, Any], *, work: Work
    ) -> tuple[set[str], bool]:
        created: set[str] = set()
        failures: list[EngineError] = []
        matched = False
        bindings = Bindings(event, now_ms=self.clock.now_ms())
        for pattern in list(self._patterns.values()):
            try:
                if not await self._tests_true(pattern.reactions[0], event, bindings, work=work):
                    continue
                matched = True
                if work.dedupe and await self.store.creation_done(
                    work.key, pattern_id=pattern.pattern_id
                ):
                    work.redelivered = True
                    continue
                thred_id = await self._create_thred(
                    pattern,
                    event=event,
                    work=work,
                    filter_known_true=test_carries_over(pattern.reactions[0].condition),
                )
            except self.transient_errors:
                raise
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

    async def _tests_true(
        self, reaction: Reaction, event: dict[str, Any], bindings: Bindings, *, work: Work
    ) -> bool:
        """Routing's `test` (section 4): the source is allowed, then the condition could match."""
        roles = await self._roles(reaction, event=event, work=work)
        if not hops.authorised(reaction, event=event, roles=roles, addresses=self.addresses):
            return False
        return test_condition(reaction.condition, bindings=bindings)

    async def _offer_to_unbound_threds(
        self, event: dict[str, Any], *, exclude: set[str], work: Work
    ) -> bool:
        matched = False
        for thred_id in await self.store.unbound_thred_ids():
            # A thred created by this very event already had it (the original applied it twice).
            if thred_id in exclude:
                continue
            async with self.store.unit(thred_id, work_key=work.key) as unit:
                if unit.done and work.dedupe:
                    work.redelivered = True
                    await self._publish(await self.store.outbox(work.key), work=work)
                    await unit.settle()
                    continue
                thred = unit.thred
                if thred is None or thred.patternId not in self._patterns:
                    continue
                state = self._state(thred)
                reaction = hops.current_reaction(state)
                bindings = hops.bindings_for(thred, event=event, now_ms=self.clock.now_ms())
                if not reaction.allowUnboundEvents or not await self._tests_true(
                    reaction, event, bindings, work=work
                ):
                    continue
                pending = _Pending()
                matched = await self._run(state, event, pending=pending, work=work) or matched
                await self._commit(unit, state, pending=pending, work=work)
        return matched

    # --- creation ------------------------------------------------------------------------------

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

    async def _limits_refuse(self, pattern: Pattern) -> str | None:
        """Why the pattern's limits refuse a new thred now (`max_instances`...), or None."""
        if not pattern.maxInstances and not pattern.instanceInterval:
            return None
        counters = await self.store.get_counters(pattern.pattern_id)
        if pattern.maxInstances and counters.instances >= pattern.maxInstances:
            return "max_instances"
        last = counters.last_instance_ms
        elapsed = None if last is None else self.clock.now_ms() - last
        if pattern.instanceInterval and elapsed is not None and elapsed < pattern.instanceInterval:
            return "instance_interval"
        return None

    def _skipped(self, pattern: Pattern, *, reason: str) -> None:
        _log.info("thred creation skipped for pattern %s: %s", pattern.pattern_id, reason)
        self.observer.thred_creation_skipped(pattern_id=pattern.pattern_id, reason=reason)

    async def _create_thred(
        self,
        pattern: Pattern,
        *,
        event: dict[str, Any] | None,
        work: Work,
        parent: Thred | None = None,
        spawn: Spawn | None = None,
        filter_known_true: bool = False,
        into: _Pending | None = None,
    ) -> str | None:
        """Create a thred and apply its first input; atomic: a failure leaves nothing behind.

        The limits are checked before the first input runs (no wasted work) and again,
        atomically, by the commit (another process may have created one meanwhile).
        """
        reason = await self._limits_refuse(pattern)
        if reason is not None:
            self._skipped(pattern, reason=reason)
            return None
        thred = self._new_thred(pattern, parent=parent, spawn=spawn)
        # A brand-new id is known to no other process: no lock to take.
        async with self.store.unit(thred.id, work_key=work.key, lock=False) as unit:
            state = RunState(thred, pattern, first_filter_known_true=filter_known_true)
            pending = _Pending()
            if event is not None:
                rebound = {**event, "thredId": thred.id}
                await self.persistence.save_event(rebound, thred_id=thred.id)
                await self._run(state, rebound, pending=pending, work=work)
            limits = CreationLimits(
                pattern.pattern_id, pattern.maxInstances, pattern.instanceInterval
            )
            # A spawned thred's messages go out after its spawner's message, in order.
            sent_with = into.sequence if into is not None else None
            committed = await self._commit(
                unit, state, pending=pending, work=work, create=limits, sent_with=sent_with
            )
            if committed and into is not None:
                work.spawned.extend(pending.sequence)
            if not committed:
                self._skipped(pattern, reason=await self._limits_refuse(pattern) or "limits")
                return None
        self._thred_count_stale = True
        return thred.id

    # --- processing runs (section 5) -----------------------------------------------------------

    async def _run(
        self, state: RunState, event: dict[str, Any], *, pending: _Pending, work: Work
    ) -> bool:
        """A processing run: apply `event`, then every forward/local input that follows.

        True if the first hop matched.
        """
        state.start_run(event)
        next_input: dict[str, Any] | None = event
        first = True
        matched = False
        while next_input is not None:
            hop_input = next_input
            reaction = hops.current_reaction(state)
            outcome = hops.decide_hop(
                state,
                event=hop_input,
                roles=await self._roles(reaction, event=hop_input, work=work),
                addresses=self.addresses,
                now_ms=self.clock.now_ms(),
            )
            pending.log.append(outcome.log)
            if not outcome.matched:
                break
            if outcome.echo is not None:
                pending.add(outcome.echo)
            if outcome.delivery is not None:
                await self._deliver(state, delivery=outcome.delivery, pending=pending)
            if outcome.spawn is not None:
                await self._spawn(
                    state, spawn=outcome.spawn, event=hop_input, pending=pending, work=work
                )
            matched = matched or first
            first = False
            next_input = outcome.next_input
        return matched

    async def _roles(
        self, reaction: Reaction, *, event: dict[str, Any], work: Work
    ) -> set[str] | None:
        """The source's roles when the reaction checks roles (looked up once per processing)."""
        if not hops.needs_roles(reaction):
            return None
        source_id = str(event["source"]["id"])
        roles = work.roles.get(source_id)
        if roles is None:
            roles = work.roles[source_id] = await self.roles_of(source_id)
        return roles

    async def roles_of(self, participant_id: str) -> set[str]:
        """Every role of a participant's live sessions."""
        sessions = await self.sessions.sessions_for(participant_id)
        return {role for session in sessions for role in session.roles}

    async def _deliver(self, state: RunState, *, delivery: Delivery, pending: _Pending) -> None:
        resolved = await self.resolve(delivery.to, thred=state.thred)
        joined = [*resolved, delivery.source_id]
        state.thred.thredContext.add_participants(joined)
        state.joined.update(dict.fromkeys(joined))
        pending.add(OutboundMessage(event=delivery.event, to=resolved))

    async def _spawn(
        self,
        state: RunState,
        *,
        spawn: Spawn,
        event: dict[str, Any],
        pending: _Pending,
        work: Work,
    ) -> None:
        spawn_input = hops.spawn_input(state, spawn=spawn, event=event)
        for name in spawn.names:
            pattern = self._pattern_by_id_or_name(name)
            if pattern is None:
                _log.warning("spawn of unknown pattern %s skipped", name)
                continue
            child_id = await self._create_thred(
                pattern, event=spawn_input, work=work, parent=state.thred, spawn=spawn, into=pending
            )
            if child_id is not None:
                state.thred.childThredIds = [*(state.thred.childThredIds or []), child_id]

    async def _expire_if_due(self, state: RunState, *, pending: _Pending, work: Work) -> bool:
        """Run the current reaction's expiry transition if its interval has passed."""
        if not hops.expiry_due(state, now_ms=self.clock.now_ms()):
            return False
        next_input = hops.expire(state, now_ms=self.clock.now_ms())
        if next_input is not None:
            # The local input of an expiry starts a run of its own (section 13).
            await self._run(state, next_input, pending=pending, work=work)
        return True

    async def _fire_timer(self, thred_id: str, *, work: Work) -> int:
        async with self.store.unit(thred_id, work_key=work.key) as unit:
            thred = unit.thred
            if thred is None or thred.patternId not in self._patterns:
                return 0
            state = self._state(thred)
            pending = _Pending()
            fired = await self._expire_if_due(state, pending=pending, work=work)
            await self._commit(unit, state, pending=pending, work=work)
        return 1 if fired else 0

    async def _drop_deadline(self, thred_id: str, *, work: Work) -> None:
        """A failing expiry must not fire again and again: clear its deadline."""
        async with self.store.unit(thred_id, work_key=work.key) as unit:
            if unit.thred is None or unit.thred.patternId not in self._patterns:
                return
            state = RunState(unit.thred, self._patterns[unit.thred.patternId])
            change = ThredChange(unit.thred, unbound=hops.accepts_unbound(state))
            await unit.commit([change], outbox=())

    # --- commit, ending, archiving -------------------------------------------------------------

    async def _commit(
        self,
        unit: ThredUnit,
        state: RunState,
        *,
        pending: _Pending,
        work: Work,
        create: CreationLimits | None = None,
        sent_with: list[OutboundMessage] | None = None,
    ) -> bool:
        """Commit the thred's unit, write its records, then send its messages under its lock.

        False when limits refused it. A spawned thred's messages join `sent_with` (its
        spawner's, in dispatch order) instead of being sent here.
        """
        thred = state.thred
        ended = thred.status == TERMINATED
        change = ThredChange(
            thred,
            ended=ended,
            unbound=not ended and hops.accepts_unbound(state),
            deadline_ms=None if ended else hops.deadline_ms(state),
            participants_added=list(state.joined),
            create=create,
        )
        publish_here = sent_with is None and bool(pending.sequence)
        if not await unit.commit([change], outbox=pending.outbox, release=not publish_here):
            return False
        for record in pending.log:
            await self.persistence.add_log(record)
        for message in pending.outbox:
            await self._record_outbound(message, thred_id=thred.id)
        if sent_with is not None:
            sent_with.extend(pending.sequence)
        elif publish_here:
            await self._publish(pending.sequence, work=work, sessions=unit.recipient_sessions)
            await unit.settle()
        if change.deadline_ms is not None and (
            self._next_due_ms is None or change.deadline_ms < self._next_due_ms
        ):
            self._next_due_ms = change.deadline_ms
        self.watches.changed(now_ms=self.clock.now_ms())
        if ended:
            await self._archive(state, work=work)
        return True

    async def _archive(self, state: RunState, *, work: Work) -> None:
        thred = state.thred
        for participant in thred.thredContext.participantIds:
            await self.persistence.add_archived_thred(participant, thred_id=thred.id)
        await self.persistence.archive_thred(hops.public_view(thred, pattern=state.pattern))
        for child_id in thred.childThredIds or []:
            await self._terminate(child_id, work=work, only_children=True)
        self._thred_count_stale = True

    async def _terminate(self, thred_id: str, *, work: Work, only_children: bool = False) -> bool:
        """End a stored thred (admin terminate, cascade to children); False if not stored."""
        async with self.store.unit(thred_id, work_key=work.key) as unit:
            thred = unit.thred
            if thred is None or (only_children and thred.spawnType != "child"):
                return False
            pattern = self._patterns.get(thred.patternId)
            if pattern is None:
                # No pattern to archive its view with: forget it all the same.
                await unit.commit([ThredChange(thred, ended=True)], outbox=())
                return True
            hops.end(thred, status=TERMINATED, now_ms=self.clock.now_ms())
            await self._commit(unit, RunState(thred, pattern), pending=_Pending(), work=work)
        return True

    async def terminate_thred(self, thred_id: str) -> None:
        """sysControl terminateThred; 5203 when the thred is not stored."""
        if not await self._terminate(thred_id, work=self._current_work()):
            raise errors.no_thred(thred_id)

    async def terminate_all_threds(self) -> list[str]:
        """sysControl terminateAllThreds: the ids of the threds ended."""
        work = self._current_work()
        return [
            thred.id
            for thred in await self.store.list_threds()
            if await self._terminate(thred.id, work=work)
        ]

    async def transition_thred(self, thred_id: str, *, transition: Transition) -> None:
        """sysControl transitionThred: move the thred, applying any input; 5203 when missing."""
        work = self._current_work()
        async with self.store.unit(thred_id, work_key=work.key) as unit:
            if unit.thred is None:
                raise errors.no_thred(thred_id)
            state = self._state(unit.thred)
            pending = _Pending()
            now_ms = self.clock.now_ms()
            next_input = hops.transition(state, directive=transition, event=None, now_ms=now_ms)
            if next_input is not None:
                # The local input of an admin transition starts a run of its own.
                await self._run(state, next_input, pending=pending, work=work)
            await self._commit(unit, state, pending=pending, work=work)

    def _current_work(self) -> Work:
        work = _CURRENT_WORK.get()
        return work if work is not None else Work(key=ids.event_id())

    def public_view(self, thred: Thred, *, pattern: Pattern | None = None) -> dict[str, Any]:
        """The public view of a thred (state minus context/store, plus pattern facts)."""
        return hops.public_view(thred, pattern=pattern or self._patterns.get(thred.patternId))

    async def report_thred_count(self) -> None:
        """Tell the observer how many threds are stored, if that changed since last asked.

        Called by the runtime (after an event, or every second), not per creation: counting
        is a round trip to a shared store.
        """
        if self._thred_count_stale and not isinstance(self.observer, NullObserver):
            self._thred_count_stale = False
            self.observer.threds_changed(active=await self.store.count_threds())

    # --- delivery ------------------------------------------------------------------------------

    async def resolve(self, to: list[str], *, thred: Thred | None) -> list[str]:
        """Resolve addresses for a thred (`$all` asks the session store)."""
        with_sessions = await self.sessions.participants_with_sessions() if ALL in to else None
        return self.addresses.resolve(
            to,
            thred_participants=thred.thredContext.participantIds if thred else [],
            participants_with_sessions=with_sessions,
        )

    async def _record_outbound(self, message: OutboundMessage, *, thred_id: str | None) -> None:
        await self.persistence.save_event(message.event, thred_id=thred_id)
        await self.persistence.set_event_to(message.id, to=message.to)

    async def send(
        self,
        event: dict[str, Any],
        *,
        to: list[str],
        thred_id: str | None,
        work: Work | None = None,
    ) -> None:
        """Record an outbound event that belongs to no thred commit and send it with the work."""
        message = OutboundMessage(event=event, to=to)
        await self._record_outbound(message, thred_id=thred_id)
        (work or self._current_work()).messages.append(message)

    def system_event(self, **fields: Any) -> dict[str, Any]:
        """An engine-built event (section 1 defaults) with the given fields."""
        return hops.system_event(now_ms=self.clock.now_ms(), **fields)

    # --- errors and the thred log --------------------------------------------------------------

    async def notify_error(
        self, event: dict[str, Any], *, error: EngineError, work: Work | None = None
    ) -> None:
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
        await self.send(outbound, to=recipients, thred_id=event.get("thredId"), work=work)

    async def _log_now(
        self, kind: str, *, event: dict[str, Any], thred_id: str | None = None
    ) -> None:
        record = hops.log_record(kind, event=event, now_ms=self.clock.now_ms(), thred_id=thred_id)
        await self.persistence.add_log(record)


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
