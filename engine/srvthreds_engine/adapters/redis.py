"""Redis adapters: the thred store as a unit of work, sessions and pattern-changed pub/sub.

Keys (spec §13), each under the constructor's `prefix` (tests isolate with it):

* `Thred:<id>` hash, field `data`: the stored thred JSON (`Thred.stored()`).
* `IDX:Thred` set of every stored thred id (the §13 `IDX:<type>` index): `count_threds` is
  SCARD, `list_threds` SMEMBERS plus one pipelined HGET per 500 threds; no SCAN of the keyspace.
* `Pattern:<id>` hash: `ni` live instances, `li` last creation (epoch ms).
* `U:UnboundReaction` set; `ParticipantThreds:<pid>` sets; `Deadlines` sorted set (member the
  thred id, score the due time in ms).
* `Done:<work_key>` hash (TTL `done_ttl_s`): a field per thred the work committed, `P:<pattern>`
  (value: the created thred id) per creation, and `C:<commit id>` per applied commit.
* `Outbox:<work_key>` list of `OutboundMessage.to_dict()` JSON (same TTL).
* `LCK:Thred:<id>` lock: a random token, `PX` expiry, extended while the unit is open.
* Sessions: `ParticipantSession:<pid>` set of session ids, `SessionParticipant:<sid>` hash field
  `data` = `{participantId, nodeId, data{roles, isProxy}}` (+ `sessionId` when the session had
  one), `IDX:ParticipantSession` set of participants with a session.
* Pub/sub channel `patternChanged` (prefixed too): `{"id": <patternId>}` or `{"all": true}`.

Round trips: opening a unit (lock + load + done mark) is one Lua script, a commit (lock check,
creation limits, every write, the done marks, the outbox and, when there is nothing to publish,
the unlock) another, and `settle` (the outbox cleared and the lock released, once the messages
are published, so a thred's messages stay in order across processes) a third: three per
simple bound event. `RoundTrips.count` counts every request the
adapters send (lock retries, lock extensions and the SCRIPT LOAD of a script's first call on a
fresh server included; the pub/sub listener's connection excluded).

Choices where the contract is open (the in-memory store should agree):

* A successful commit releases the unit's lock in the same script (`release_on_commit=True`),
  which is what makes three round trips possible; leaving the `async with` then costs nothing.
  A refused commit (limits) keeps the lock, so the caller may commit again without the refused
  creation; a second commit after a successful one raises `LockLostError` (the lock is gone).
  With `release_on_commit=False` the lock is held until the unit exits (one more round trip):
  needed when the caller publishes the outbox inside the unit to keep per-thred message order
  across processes (after the release, another process may process and publish the thred's
  next event first).
* Several creations of one pattern in one commit are checked in order, each counting against
  the next (a second creation within `interval_ms` of the first is refused).
* A change that both creates and ends a thred counts it (+1, `li` = now) and uncounts it (-1).
* An ended thred is dropped from the `ParticipantThreds` of its context's participants and of
  `participants_added`.
* Commits are idempotent under redis-py's retry after a lost reply: each carries a commit id
  whose mark makes a replayed script return success without writing again. A lock acquisition
  replayed after a lost reply recognises its own token.
* Id lists from sets (unbound threds, a participant's threds, participants with sessions) come
  back sorted by id, sessions sorted by (node id, session id): Redis sets have no order. Due
  threds with the same deadline come by id. A session without `session_id` is stored as
  `<participantId>@<nodeId>` and read back with `session_id` None.
* After its subscription is re-established (connection loss), the pattern-changed listener calls
  back with None ("all patterns"): messages published while it was away are lost.
* A cancelled acquisition may leave its lock to expire by TTL (at most `lock_ttl_ms`).

Scripts touch keys they build from the prefix (not only their declared KEYS): fine on one Redis
server, not on Redis Cluster. When Redis is down, `redis.exceptions.ConnectionError` propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.core.thred import Thred
from srvthreds_engine.ports import Clock, PatternCounters, Session, ThredChange

_log = logging.getLogger(__name__)

LOCK_TTL_MS = 5000
LOCK_TRIES = 50
LOCK_RETRY_S = 0.1
DONE_TTL_S = 24 * 3600
PATTERN_CHANGED = "patternChanged"
_LIST_CHUNK = 500
_RECONNECT_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_JITTER = random.SystemRandom()
_COMPACT = (",", ":")

# KEYS: lock, thred, done. ARGV: token ('' = no lock), ttl ms, thred id.
# Returns false while someone else holds the lock, else {done (0/1), data or false}.
_OPEN = """
if ARGV[1] ~= '' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return false
  end
end
return {redis.call('HEXISTS', KEYS[3], ARGV[3]), redis.call('HGET', KEYS[2], 'data')}
"""

# KEYS: lock. ARGV: token, ttl ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: outbox, lock. ARGV: token ('' = no lock held).
_SETTLE = """
redis.call('DEL', KEYS[1])
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
"""

# ARGV[1]: the head {prefix, lock, token, commit, now, work, ttl, release, changes[]};
# ARGV[1 + i]: the stored JSON of change i ('' when it ended); the rest: outbox messages.
# Returns 1 committed, 0 refused by creation limits (nothing written), -1 lock lost.
_COMMIT = """
local head = cjson.decode(ARGV[1])
local prefix = head.prefix
local done = prefix .. 'Done:' .. head.work
if redis.call('HEXISTS', done, 'C:' .. head.commit) == 1 then
  return 1
end
if head.lock ~= '' and redis.call('GET', head.lock) ~= head.token then
  return -1
end
local changes = head.changes
local counters = {}
for _, change in ipairs(changes) do
  local create = change.create
  if create then
    local key = prefix .. 'Pattern:' .. create.pattern
    local counter = counters[key]
    if not counter then
      local stored = redis.call('HMGET', key, 'ni', 'li')
      counter = {ni = tonumber(stored[1]) or 0, li = tonumber(stored[2])}
      counters[key] = counter
    end
    if create.max > 0 and counter.ni >= create.max then
      return 0
    end
    if create.interval > 0 and counter.li and head.now - counter.li < create.interval then
      return 0
    end
    counter.ni = counter.ni + 1
    counter.li = head.now
  end
end
for key, counter in pairs(counters) do
  redis.call('HSET', key, 'ni', counter.ni, 'li', counter.li)
end
local index = prefix .. 'IDX:Thred'
local unbound = prefix .. 'U:UnboundReaction'
local deadlines = prefix .. 'Deadlines'
for i, change in ipairs(changes) do
  local id = change.id
  if change.ended then
    redis.call('DEL', prefix .. 'Thred:' .. id)
    redis.call('SREM', index, id)
    redis.call('SREM', unbound, id)
    redis.call('ZREM', deadlines, id)
    for _, participant in ipairs(change.participants) do
      redis.call('SREM', prefix .. 'ParticipantThreds:' .. participant, id)
    end
    local pattern = prefix .. 'Pattern:' .. change.pattern
    local live = tonumber(redis.call('HGET', pattern, 'ni')) or 0
    if live > 0 then
      redis.call('HSET', pattern, 'ni', live - 1)
    end
  else
    redis.call('HSET', prefix .. 'Thred:' .. id, 'data', ARGV[1 + i])
    redis.call('SADD', index, id)
    if change.unbound then
      redis.call('SADD', unbound, id)
    else
      redis.call('SREM', unbound, id)
    end
    if change.deadline >= 0 then
      redis.call('ZADD', deadlines, change.deadline, id)
    else
      redis.call('ZREM', deadlines, id)
    end
    for _, participant in ipairs(change.participants) do
      redis.call('SADD', prefix .. 'ParticipantThreds:' .. participant, id)
    end
  end
  redis.call('HSET', done, id, '1')
  if change.create then
    redis.call('HSET', done, 'P:' .. change.create.pattern, id)
  end
end
redis.call('HSET', done, 'C:' .. head.commit, '1')
redis.call('EXPIRE', done, head.ttl)
local first = #changes + 2
if first <= #ARGV then
  local outbox = prefix .. 'Outbox:' .. head.work
  for i = first, #ARGV do
    redis.call('RPUSH', outbox, ARGV[i])
  end
  redis.call('EXPIRE', outbox, head.ttl)
end
if head.release and head.lock ~= '' then
  redis.call('DEL', head.lock)
end
if head.sessions then
  local found = {}
  local seen = {}
  for i = first, #ARGV do
    for _, pid in ipairs(cjson.decode(ARGV[i]).to) do
      if not seen[pid] then
        seen[pid] = true
        local sessions = {}
        local members = redis.call('SMEMBERS', prefix .. 'ParticipantSession:' .. pid)
        for _, session in ipairs(members) do
          local stored = redis.call('HGET', prefix .. 'SessionParticipant:' .. session, 'data')
          if stored then
            sessions[#sessions + 1] = stored
          end
        end
        found[#found + 1] = pid
        found[#found + 1] = sessions
      end
    end
  end
  return {1, found}
end
return 1
"""

# ARGV: prefix, participant id, node id, session key id, session JSON.
_ADD_SESSION = """
local prefix = ARGV[1]
local members = prefix .. 'ParticipantSession:' .. ARGV[2]
local own = prefix .. 'SessionParticipant:' .. ARGV[4]
local previous = redis.call('HGET', own, 'data')
if previous then
  local owner = cjson.decode(previous).participantId
  if owner ~= ARGV[2] then
    local theirs = prefix .. 'ParticipantSession:' .. owner
    redis.call('SREM', theirs, ARGV[4])
    if redis.call('SCARD', theirs) == 0 then
      redis.call('SREM', prefix .. 'IDX:ParticipantSession', owner)
    end
  end
end
for _, session in ipairs(redis.call('SMEMBERS', members)) do
  local key = prefix .. 'SessionParticipant:' .. session
  local stored = redis.call('HGET', key, 'data')
  if not stored then
    redis.call('SREM', members, session)
  elseif session ~= ARGV[4] and cjson.decode(stored).nodeId == ARGV[3] then
    redis.call('DEL', key)
    redis.call('SREM', members, session)
  end
end
redis.call('HSET', own, 'data', ARGV[5])
redis.call('SADD', members, ARGV[4])
redis.call('SADD', prefix .. 'IDX:ParticipantSession', ARGV[2])
return 1
"""

# ARGV: prefix, session key id. Returns 1 when the session existed.
_REMOVE_SESSION = """
local prefix = ARGV[1]
local own = prefix .. 'SessionParticipant:' .. ARGV[2]
local stored = redis.call('HGET', own, 'data')
if not stored then
  return 0
end
local participant = cjson.decode(stored).participantId
local members = prefix .. 'ParticipantSession:' .. participant
redis.call('DEL', own)
redis.call('SREM', members, ARGV[2])
if redis.call('SCARD', members) == 0 then
  redis.call('SREM', prefix .. 'IDX:ParticipantSession', participant)
end
return 1
"""

# ARGV: prefix, participant id. Returns the session JSON documents.
_SESSIONS_FOR = """
local prefix = ARGV[1]
local found = {}
for i = 2, #ARGV do
  local sessions = {}
  for _, session in ipairs(redis.call('SMEMBERS', prefix .. 'ParticipantSession:' .. ARGV[i])) do
    local stored = redis.call('HGET', prefix .. 'SessionParticipant:' .. session, 'data')
    if stored then
      sessions[#sessions + 1] = stored
    end
  end
  found[#found + 1] = sessions
end
return found
"""


class LockTimeoutError(RuntimeError):
    """A lock could not be taken within its retries (held elsewhere, or a self-spawn)."""


class LockLostError(RuntimeError):
    """A unit's lock expired or was taken by another owner before the commit: nothing written."""


@dataclass(slots=True)
class RoundTrips:
    """Requests sent to Redis (one per command, pipeline or script call); share to sum them."""

    count: int = 0


def connect(url: str) -> Redis:
    """A client for `url` (redis:// or rediss://); commands connect lazily."""
    return Redis.from_url(url)


async def _run_script(
    client: Redis,
    script: AsyncScript,
    *,
    keys: Sequence[str],
    args: Sequence[Any],
    round_trips: RoundTrips,
) -> Any:
    """EVALSHA, loading the script first when the server lacks it; every request counted."""
    round_trips.count += 1
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # A restarted or flushed server: load, then run (two more requests).
        round_trips.count += 2
        script.sha = await client.script_load(script.script)
        return await client.evalsha(script.sha, len(keys), *keys, *args)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _change_head(change: ThredChange) -> dict[str, Any]:
    thred = change.thred
    head: dict[str, Any] = {"id": thred.id, "pattern": thred.patternId}
    if change.ended:
        head["ended"] = True
        head["participants"] = list(
            dict.fromkeys([*thred.thredContext.participantIds, *change.participants_added])
        )
    else:
        head["unbound"] = change.unbound
        head["deadline"] = -1 if change.deadline_ms is None else change.deadline_ms
        head["participants"] = list(change.participants_added)
    create = change.create
    if create is not None:
        head["create"] = {
            "pattern": create.pattern_id,
            "max": create.max_instances,
            "interval": create.interval_ms,
        }
    return head


def _change_data(change: ThredChange) -> str:
    return "" if change.ended else json.dumps(change.thred.stored(), separators=_COMPACT)


class RedisThredUnit:
    """One thred locked (unless asked not to) and loaded; `async with` it, then commit."""

    __slots__ = (
        "_commits",
        "_extender",
        "_extending",
        "_held",
        "_lock_key",
        "_store",
        "_thred_id",
        "_token",
        "_work_key",
        "done",
        "recipient_sessions",
        "thred",
    )

    def __init__(self, store: RedisThredStore, thred_id: str, *, work_key: str, lock: bool) -> None:
        self._store = store
        self._thred_id = thred_id
        self._work_key = work_key
        self._lock_key = store.key(f"LCK:Thred:{thred_id}") if lock else ""
        self._token = secrets.token_hex(12)
        self._held = False
        self._commits = 0
        self._extender: asyncio.TimerHandle | None = None
        self._extending: asyncio.Task[None] | None = None
        self.thred: Thred | None = None
        self.done = False
        self.recipient_sessions: dict[str, list[Session]] | None = None

    async def __aenter__(self) -> RedisThredUnit:
        if not self._lock_key:
            # A brand-new id (the only use of lock=False): nothing can be stored under it yet,
            # and no work can have been done for it, so there is nothing to read.
            return self
        store = self._store
        keys = [
            self._lock_key or store.key(f"LCK:Thred:{self._thred_id}"),
            store.key(f"Thred:{self._thred_id}"),
            store.key(f"Done:{self._work_key}"),
        ]
        args = [self._token if self._lock_key else "", store.lock_ttl_ms, self._thred_id]
        for attempt in range(store.lock_tries):
            loaded = await store.run(store.scripts.open, keys=keys, args=args)
            if loaded is not None:
                try:
                    self._loaded(loaded)
                except BaseException:
                    await self.__aexit__(None, None, None)
                    raise
                return self
            if attempt + 1 < store.lock_tries:
                await asyncio.sleep(store.lock_retry_s * _JITTER.uniform(0.5, 1.5))
        raise LockTimeoutError(
            f"could not lock {self._lock_key}: held elsewhere through {store.lock_tries} tries"
        )

    def _loaded(self, loaded: list[Any]) -> None:
        self._held = bool(self._lock_key)
        self.done = bool(loaded[0])
        data = loaded[1]
        self.thred = None if data is None else Thred.from_stored(json.loads(data))
        if self._held:
            self._schedule_extension()

    def _schedule_extension(self) -> None:
        interval = self._store.lock_ttl_ms / 3000
        self._extender = asyncio.get_running_loop().call_later(interval, self._extend_soon)

    def _extend_soon(self) -> None:
        self._extender = None
        self._extending = asyncio.create_task(self._extend())

    async def _extend(self) -> None:
        store = self._store
        try:
            extended = await store.run(
                store.scripts.extend,
                keys=[self._lock_key],
                args=[self._token, store.lock_ttl_ms],
            )
        except (RedisError, OSError) as exc:
            _log.warning("could not extend %s (retrying): %s", self._lock_key, exc)
            extended = 1
        if not self._held:
            return
        if extended:
            self._schedule_extension()
        else:
            _log.warning("lost the lock %s: it expired or was taken", self._lock_key)
            self._held = False

    async def _stop_extending(self) -> None:
        if self._extender is not None:
            self._extender.cancel()
            self._extender = None
        extending, self._extending = self._extending, None
        if extending is not None and not extending.done():
            # Let an extension in flight finish: cancelling mid-command drops the connection.
            await asyncio.wait({extending})

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        if not self._held:
            await self._stop_extending()
            return
        self._held = False
        await self._stop_extending()
        store = self._store
        try:
            await store.run(store.scripts.release, keys=[self._lock_key], args=[self._token])
        except (RedisError, OSError):
            if exc_type is None:
                raise
            # Keep the processing's own error; the lock expires by its TTL.
            _log.warning("could not release %s", self._lock_key, exc_info=True)

    async def commit(
        self,
        changes: Sequence[ThredChange],
        *,
        outbox: Sequence[OutboundMessage],
        release: bool = True,
    ) -> bool:
        """Write everything in one script; False (nothing written) when limits refuse.

        `release` (and the store's `release_on_commit`) frees the lock in the same script;
        otherwise `settle` does, with the outbox, once the messages are published.
        """
        if self._lock_key and not self._held:
            raise LockLostError(
                f"the unit no longer holds {self._lock_key} (committed already, or the lock "
                f"was lost); work {self._work_key} not written"
            )
        store = self._store
        self._commits += 1
        release = release and store.release_on_commit and bool(self._lock_key)
        head = {
            "prefix": store.prefix,
            "lock": self._lock_key,
            "token": self._token,
            "commit": f"{self._token}.{self._commits}",
            "now": store.clock.now_ms(),
            "work": self._work_key,
            "ttl": store.done_ttl_s,
            "release": release,
            "sessions": store.read_recipient_sessions and bool(outbox),
            "changes": [_change_head(change) for change in changes],
        }
        args = [
            json.dumps(head, separators=_COMPACT),
            *(_change_data(change) for change in changes),
            *(json.dumps(message.to_dict(), separators=_COMPACT) for message in outbox),
        ]
        result = await store.run(store.scripts.commit, keys=[], args=args)
        if isinstance(result, list):
            self.recipient_sessions = _sessions_by_participant(result[1])
            result = result[0]
        if result == -1:
            self._held = False
            raise LockLostError(
                f"lost the lock {self._lock_key} before committing work {self._work_key}: "
                "it expired or another process took it; nothing was written"
            )
        if result == 0:
            return False
        if release:
            self._held = False
            await self._stop_extending()
        return True

    async def settle(self) -> None:
        """Clear the work's outbox and release the lock (if still held) in one round trip."""
        store = self._store
        token = self._token if self._held else ""
        self._held = False
        await self._stop_extending()
        await store.run(
            store.scripts.settle,
            keys=[store.key(f"Outbox:{self._work_key}"), self._lock_key or store.key("-")],
            args=[token],
        )


@dataclass(slots=True)
class _Scripts:
    open: AsyncScript
    extend: AsyncScript
    release: AsyncScript
    commit: AsyncScript
    settle: AsyncScript


class RedisThredStore:
    """`ThredStore` on Redis: token-owned expiring locks, one script to load, one to commit."""

    def __init__(
        self,
        client: Redis,
        *,
        clock: Clock,
        prefix: str = "",
        lock_ttl_ms: int = LOCK_TTL_MS,
        lock_tries: int = LOCK_TRIES,
        lock_retry_s: float = LOCK_RETRY_S,
        done_ttl_s: int = DONE_TTL_S,
        release_on_commit: bool = True,
        read_recipient_sessions: bool = False,
        round_trips: RoundTrips | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.prefix = prefix
        self.lock_ttl_ms = lock_ttl_ms
        self.lock_tries = lock_tries
        self.lock_retry_s = lock_retry_s
        self.done_ttl_s = done_ttl_s
        self.release_on_commit = release_on_commit
        # The commit also reads the sessions of its messages' recipients (routing needs them),
        # saving a round trip; only right when the session store uses the same prefix.
        self.read_recipient_sessions = read_recipient_sessions
        self.round_trips = round_trips if round_trips is not None else RoundTrips()
        self.scripts = _Scripts(
            open=client.register_script(_OPEN),
            extend=client.register_script(_EXTEND),
            release=client.register_script(_RELEASE),
            commit=client.register_script(_COMMIT),
            settle=client.register_script(_SETTLE),
        )

    def key(self, name: str) -> str:
        """The Redis key of `name` under this store's prefix."""
        return self.prefix + name

    async def run(self, script: AsyncScript, *, keys: list[str], args: Sequence[Any]) -> Any:
        """Call a registered script (EVALSHA), counting the round trip."""
        return await _run_script(
            self.client, script, keys=keys, args=args, round_trips=self.round_trips
        )

    def unit(self, thred_id: str, *, work_key: str, lock: bool = True) -> RedisThredUnit:
        """Lock (unless `lock` is False), load the thred and its done mark in one round trip."""
        return RedisThredUnit(self, thred_id, work_key=work_key, lock=lock)

    async def ping(self) -> bool:
        """Readiness: True when Redis answers (raises ConnectionError when it is down)."""
        self.round_trips.count += 1
        return bool(await self.client.ping())

    async def creation_done(self, work_key: str, *, pattern_id: str) -> bool:
        """Whether `work_key` already created a thred of this pattern (a redelivery)."""
        self.round_trips.count += 1
        return bool(await self.client.hexists(self.key(f"Done:{work_key}"), f"P:{pattern_id}"))

    async def get_thred(self, thred_id: str) -> Thred | None:
        """The stored thred, or None."""
        self.round_trips.count += 1
        data = await self.client.hget(self.key(f"Thred:{thred_id}"), "data")
        return None if data is None else Thred.from_stored(json.loads(data))

    async def list_threds(self) -> list[Thred]:
        """Every stored thred, sorted by id (SMEMBERS of the index, then pipelined HGETs)."""
        self.round_trips.count += 1
        ids = sorted(_text(member) for member in await self.client.smembers(self.key("IDX:Thred")))
        threds: list[Thred] = []
        for start in range(0, len(ids), _LIST_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for thred_id in ids[start : start + _LIST_CHUNK]:
                pipe.hget(self.key(f"Thred:{thred_id}"), "data")
            self.round_trips.count += 1
            threds.extend(
                Thred.from_stored(json.loads(data)) for data in await pipe.execute() if data
            )
        return threds

    async def count_threds(self) -> int:
        """How many threds are stored."""
        self.round_trips.count += 1
        return int(await self.client.scard(self.key("IDX:Thred")))

    async def unbound_thred_ids(self) -> list[str]:
        """Threds whose current reaction accepts unbound events, sorted by id."""
        return await self._members("U:UnboundReaction")

    async def participant_thred_ids(self, participant_id: str) -> list[str]:
        """The threds a participant takes part in, sorted by id."""
        return await self._members(f"ParticipantThreds:{participant_id}")

    async def _members(self, name: str) -> list[str]:
        self.round_trips.count += 1
        return sorted(_text(member) for member in await self.client.smembers(self.key(name)))

    async def get_counters(self, pattern_id: str) -> PatternCounters:
        """The pattern's live instance count and last creation time."""
        self.round_trips.count += 1
        live, last = await self.client.hmget(self.key(f"Pattern:{pattern_id}"), ["ni", "li"])
        return PatternCounters(
            instances=0 if live is None else int(live),
            last_instance_ms=None if last is None else int(last),
        )

    async def due_thred_ids(self, now_ms: int, *, limit: int = 100) -> list[str]:
        """Threds whose expiry deadline is at or before `now_ms`, earliest first."""
        self.round_trips.count += 1
        due = await self.client.zrangebyscore(
            self.key("Deadlines"), "-inf", now_ms, start=0, num=limit
        )
        return [_text(member) for member in due]

    async def next_deadline_ms(self) -> int | None:
        """The earliest expiry deadline, or None."""
        self.round_trips.count += 1
        first = await self.client.zrange(self.key("Deadlines"), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def outbox(self, work_key: str) -> list[OutboundMessage]:
        """Messages committed for `work_key` and not yet cleared, in commit order."""
        self.round_trips.count += 1
        stored = await self.client.lrange(self.key(f"Outbox:{work_key}"), 0, -1)
        messages: list[OutboundMessage] = []
        for entry in stored:
            message = json.loads(entry)
            messages.append(OutboundMessage(event=message["event"], to=list(message["to"])))
        return messages

    async def clear_outbox(self, work_key: str) -> None:
        """Forget the outbox of `work_key` (its messages are published)."""
        self.round_trips.count += 1
        await self.client.delete(self.key(f"Outbox:{work_key}"))


def _session_key_id(session: Session) -> str:
    if session.session_id is not None:
        return session.session_id
    return f"{session.participant_id}@{session.node_id}"


def _sessions_by_participant(found: list[Any]) -> dict[str, list[Session]]:
    """`[pid, [session JSON...], pid, ...]` from a script, as sessions by participant."""
    return {
        _text(found[index]): sorted(
            (_session_from(stored) for stored in found[index + 1]),
            key=lambda session: (session.node_id, session.session_id or ""),
        )
        for index in range(0, len(found), 2)
    }


def _session_from(stored: bytes | str) -> Session:
    document = json.loads(stored)
    data = document.get("data") or {}
    return Session(
        participant_id=document["participantId"],
        node_id=document["nodeId"],
        roles=list(data.get("roles") or []),
        session_id=document.get("sessionId"),
    )


class RedisSessionStore:
    """`SessionStore` on Redis: one session per participant and node, as the memory store."""

    def __init__(
        self, client: Redis, *, prefix: str = "", round_trips: RoundTrips | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.round_trips = round_trips if round_trips is not None else RoundTrips()
        self._add = client.register_script(_ADD_SESSION)
        self._remove = client.register_script(_REMOVE_SESSION)
        self._for = client.register_script(_SESSIONS_FOR)

    async def add_session(self, session: Session) -> None:
        """Register a live session, replacing the participant's session on the same node."""
        document: dict[str, Any] = {
            "participantId": session.participant_id,
            "nodeId": session.node_id,
            "data": {"roles": list(session.roles), "isProxy": False},
        }
        if session.session_id is not None:
            document["sessionId"] = session.session_id
        args = [
            self.prefix,
            session.participant_id,
            session.node_id,
            _session_key_id(session),
            json.dumps(document, separators=_COMPACT),
        ]
        await self._run(self._add, args=args)

    async def remove_session(self, session_id: str) -> bool:
        """Forget a session (its id, or `<participantId>@<nodeId>` for one added without)."""
        return bool(await self._run(self._remove, args=[self.prefix, session_id]))

    async def sessions_for(self, participant_id: str) -> list[Session]:
        """Live sessions of a participant, sorted by node id."""
        return (await self.sessions_of([participant_id]))[participant_id]

    async def sessions_of(self, participant_ids: Sequence[str]) -> dict[str, list[Session]]:
        """Live sessions of several participants in one round trip, each sorted by node id."""
        if not participant_ids:
            return {}
        found = await self._run(self._for, args=[self.prefix, *participant_ids])
        return {
            participant_id: sorted(
                (_session_from(stored) for stored in stored_sessions),
                key=lambda session: (session.node_id, session.session_id or ""),
            )
            for participant_id, stored_sessions in zip(participant_ids, found, strict=True)
        }

    async def _run(self, script: AsyncScript, *, args: Sequence[Any]) -> Any:
        return await _run_script(
            self.client, script, keys=[], args=args, round_trips=self.round_trips
        )

    async def participants_with_sessions(self) -> list[str]:
        """Every participant with at least one session, sorted by id."""
        self.round_trips.count += 1
        members = await self.client.smembers(self.prefix + "IDX:ParticipantSession")
        return sorted(_text(member) for member in members)


PatternChangedCallback = Callable[[str | None], Awaitable[None]]


def _changed_pattern(payload: bytes | str) -> str | None:
    document = json.loads(payload)
    if document.get("all"):
        return None
    return str(document["id"])


class RedisPatternChanges:
    """Pattern-changed notices between replicas: `publish` one, `subscribe` to all of them."""

    def __init__(self, client: Redis, *, prefix: str = "") -> None:
        self.client = client
        self.channel = prefix + PATTERN_CHANGED

    async def publish(self, pattern_id: str | None) -> int:
        """Announce a changed pattern (None: all of them); returns how many listeners got it."""
        payload = {"all": True} if pattern_id is None else {"id": pattern_id}
        return int(await self.client.publish(self.channel, json.dumps(payload)))

    async def subscribe(self, callback: PatternChangedCallback) -> asyncio.Task[None]:
        """Listen until the returned task is cancelled; returns once the subscription is live.

        `callback` gets the pattern id, or None for all patterns (also after a reconnection).
        The first connection's failure is raised here; later ones are retried with back-off.
        """
        subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listener = asyncio.create_task(self._listen(callback, subscribed=subscribed))
        try:
            await asyncio.wait({subscribed, listener}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            listener.cancel()
            raise
        if not subscribed.done():
            listener.result()
            raise RuntimeError(f"the {self.channel} listener ended before it subscribed")
        subscribed.result()
        return listener

    async def _listen(
        self, callback: PatternChangedCallback, *, subscribed: asyncio.Future[None]
    ) -> None:
        failures = 0
        while True:
            pubsub = self.client.pubsub()
            # redis-py leaves `aclose` unannotated.
            close: Callable[[], Awaitable[None]] = pubsub.aclose
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    failures = 0
                    await self._deliver(message, callback=callback, subscribed=subscribed)
            except (RedisError, OSError) as exc:
                if not subscribed.done():
                    subscribed.set_exception(exc)
                    return
                delay = _RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)]
                failures += 1
                _log.warning("pattern-changed subscription lost, retrying in %s s: %s", delay, exc)
                await asyncio.sleep(delay)
            finally:
                await close()

    async def _deliver(
        self,
        message: dict[str, Any],
        *,
        callback: PatternChangedCallback,
        subscribed: asyncio.Future[None],
    ) -> None:
        kind = _text(message["type"])
        if kind == "subscribe":
            if not subscribed.done():
                subscribed.set_result(None)
                return
            # Resubscribed after a connection loss: notices sent meanwhile are gone.
            await self._call(callback, None)
        elif kind == "message":
            try:
                changed = _changed_pattern(message["data"])
            except (ValueError, KeyError, TypeError, AttributeError):
                _log.warning("ignored a malformed pattern-changed notice: %r", message["data"])
                return
            await self._call(callback, changed)

    @staticmethod
    async def _call(callback: PatternChangedCallback, pattern_id: str | None) -> None:
        try:
            await callback(pattern_id)
        except Exception:
            _log.exception("pattern-changed callback failed for %s", pattern_id or "all")
