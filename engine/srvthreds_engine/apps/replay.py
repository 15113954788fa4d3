"""`srvthreds-engine replay`: run the engine over a JSON Lines script with a virtual clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json import encoder as json_encoder
from typing import Any, TextIO, TypeVar

import pydantic

from srvthreds_engine.adapters.memory import (
    ListDispatcher,
    MemoryPersistence,
    MemorySessionStore,
    MemoryThredStore,
)
from srvthreds_engine.apps.config_files import json_path
from srvthreds_engine.apps.profiles import SessionDirective
from srvthreds_engine.core.addresses import AddressBook, ResolverConfig, SessionsModel
from srvthreds_engine.core.clock import VirtualClock
from srvthreds_engine.core.events import Event
from srvthreds_engine.core.limits import depth_problem, may_be_too_deep, too_deep_message
from srvthreds_engine.core.patterns import Pattern
from srvthreds_engine.ports import SessionStore, ThredStore
from srvthreds_engine.service.processing import Engine

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
ADVANCE = "$advance_ms"
SESSION = "$session"
LOG_KEYS = ("type", "eventId", "thredId", "fromReaction", "toReaction")
# The stored shape of the contract; display meta is part of the public view only.
HIDDEN_KEYS = frozenset({"meta"})
# Texts of deleted threds are dropped once they outnumber the live ones by this much.
CACHE_SLACK = 64


class ReplayInputError(ValueError):
    """An input line that cannot be used: names the input and the line (and JSON path)."""


class Replay:
    """One engine with in-memory ports and a virtual clock, driven line by line.

    The store, session store and persistence may be replaced (tests run the same scripts on
    the database adapters); give them `clock`, the virtual clock replay moves. The output
    reports what the persistence keeps in memory, so another one subclasses MemoryPersistence
    (and forwards its writes).
    """

    def __init__(
        self,
        patterns: Sequence[Pattern],
        *,
        sessions_model: SessionsModel | None = None,
        resolver_config: ResolverConfig | None = None,
        clock: VirtualClock | None = None,
        store: ThredStore | None = None,
        sessions: SessionStore | None = None,
        persistence: MemoryPersistence | None = None,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.storage: ThredStore = (
            store if store is not None else MemoryThredStore(clock=self.clock)
        )
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.persistence = persistence if persistence is not None else MemoryPersistence()
        self.dispatcher = ListDispatcher()
        self.engine = Engine(
            patterns=patterns,
            address_book=AddressBook(sessions_model, resolver_config=resolver_config),
            store=self.storage,
            sessions=self.sessions,
            persistence=self.persistence,
            dispatcher=self.dispatcher,
            clock=self.clock,
        )
        self._thred_text_cache: dict[str, tuple[dict[str, Any], str]] = {}

    async def step(self, line: Any, *, where: str = "input") -> dict[str, Any]:
        """Apply one parsed input line; returns its output record."""
        record: dict[str, Any] = json.loads(await self.step_line(line, where=where))
        return record

    async def step_line(self, line: Any, *, where: str = "input") -> str:
        """Apply one parsed input line; returns its output line as JSON (no newline)."""
        # Messages and log records are reported once, then dropped, so long runs stay small.
        self.dispatcher.messages.clear()
        self.persistence.log.clear()
        archived_before = len(self.persistence.archive)
        await self._apply(line, where=where)
        # Assembled from parts, byte for byte what `_dumps` of the whole record would give:
        # the stored threds are listed after every line, so each is serialised once per change.
        head = {"input": line, "messages": [item.to_dict() for item in self.dispatcher.messages]}
        tail = {
            "archived": [record["thred"] for record in self.persistence.archive[archived_before:]],
            "log": [
                {key: record[key] for key in LOG_KEYS if key in record}
                for record in self.persistence.log
            ],
        }
        texts = await self._thred_texts()
        if not texts:
            # Nothing stored (every thred ended): one encoder call does.
            return _dumps({**head, "threds": [], **tail})
        # `{head…}` and `{…tail}` around the threds: two encoder calls, not one per part.
        return f'{_dumps(head)[:-1]},"threds":[{",".join(texts)}],{_dumps(tail)[1:]}'

    async def _stored_items(self) -> list[tuple[str, dict[str, Any]]]:
        storage = self.storage
        if isinstance(storage, MemoryThredStore):
            return storage.stored_items()
        # Another store has no dicts of its own to share: each listing builds new ones.
        threds = sorted(await storage.list_threds(), key=lambda thred: thred.id)
        return [(thred.id, thred.stored()) for thred in threds]

    async def _thred_texts(self) -> list[str]:
        # A saved thred is a new dict in the memory store, so identity tells whether a text is
        # current (other stores give new dicts on every listing: never current).
        cache = self._thred_text_cache
        texts: list[str] = []
        items = await self._stored_items()
        for thred_id, stored in items:
            cached = cache.get(thred_id)
            if cached is None or cached[0] is not stored:
                shown = {key: value for key, value in stored.items() if key not in HIDDEN_KEYS}
                cached = cache[thred_id] = (stored, _dumps(shown))
            texts.append(cached[1])
        if len(cache) > 2 * len(items) + CACHE_SLACK:
            live = {thred_id for thred_id, _ in items}
            self._thred_text_cache = {key: value for key, value in cache.items() if key in live}
        return texts

    async def _apply(self, line: Any, *, where: str) -> None:
        if isinstance(line, dict) and ADVANCE in line:
            milliseconds = line[ADVANCE]
            if (
                isinstance(milliseconds, bool)
                or not isinstance(milliseconds, int)
                or milliseconds < 0
            ):
                raise ReplayInputError(f"{where}: {ADVANCE}: must be a non-negative integer")
            self.clock.advance(milliseconds)
            await self.engine.fire_due_timers()
        elif isinstance(line, dict) and SESSION in line:
            directive = _validated(SessionDirective, line[SESSION], where=f"{where}: {SESSION}")
            await self.sessions.add_session(directive.to_session())
        else:
            await self.engine.process(_validated(Event, line, where=where))
        await self.engine.report_thred_count()


# Output records are trees of fresh JSON data (no cycles to guard against).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
# `JSONEncoder.encode` builds a C encoder (and a closure) on every call; this one is built
# once with the very arguments `_ENCODER` would pass it (no markers: check_circular is off).
_C_MAKE_ENCODER: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(
    json_encoder, "c_make_encoder", None
)
_ONE_SHOT = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None,
        _ENCODER.default,
        json_encoder.encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )
)


def _dumps(value: Any) -> str:
    if _ONE_SHOT is None:
        return _ENCODER.encode(value)
    return "".join(_ONE_SHOT(value, 0))


def _validated(model: type[ModelT], value: Any, *, where: str) -> ModelT:
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        raise ReplayInputError(
            f"{where}: {json_path(tuple(error['loc']))}: {error['msg']}"
        ) from exc


async def run_replay(
    replay: Replay, *, source: TextIO, sink: TextIO, source_name: str = "input"
) -> None:
    """Read one line, process it, write and flush its output line, repeat."""
    for number, raw in enumerate(iter(source.readline, ""), start=1):
        if not raw.strip():
            continue
        where = f"{source_name}: line {number}"
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ReplayInputError(f"{where}: not JSON: {exc.msg} (column {exc.colno})") from exc
        except RecursionError:
            raise ReplayInputError(f"{where}: {too_deep_message()}") from None
        # The limit of POST /events: deeper input would fail later, when it is serialised.
        problem = depth_problem(line) if may_be_too_deep(raw) else None
        if problem is not None:
            raise ReplayInputError(f"{where}: {problem}")
        sink.write(await replay.step_line(line, where=where) + "\n")
        sink.flush()
