"""The stored shape of a thred and its public view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

ACTIVE: Final = "a"
FINISHED: Final = "f"
TERMINATED: Final = "t"
Status = Literal["a", "f", "t"]
SpawnType = Literal["child", "sibling"]

# NB: threds are plain dataclasses, not pydantic models: the engine builds, copies and
# mutates one or more per event, and only the engine (or a storage adapter reading back what
# the engine wrote) creates them, so validation would buy nothing on this hot path.


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts and lists copied, scalars shared); faster than deepcopy."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


@dataclass(slots=True)
class ThredContext:
    """Locals and participants of one thred."""

    thredId: str  # noqa: N815 - the stored name
    scope: dict[str, Any] = field(default_factory=dict)
    participantIds: list[str] = field(default_factory=list)  # noqa: N815

    def add_participants(self, ids: list[str]) -> None:
        """Add ids not yet present, keeping first-seen order."""
        known = set(self.participantIds)
        for participant in ids:
            if participant not in known:
                known.add(participant)
                self.participantIds.append(participant)


@dataclass(slots=True)
class ReactionStore:
    """Where a thred is: the current reaction, its condition state and entry time."""

    reactionName: str  # noqa: N815
    conditionState: dict[str, Any]  # noqa: N815
    startTime: int  # noqa: N815


@dataclass(slots=True)
class ThredMeta:
    """Display data of a thred."""

    label: str | None = None
    description: str | None = None
    displayUri: str | None = None  # noqa: N815

    def to_dict(self) -> dict[str, Any]:
        """The set fields as JSON."""
        shown: dict[str, Any] = {}
        if self.label is not None:
            shown["label"] = self.label
        if self.description is not None:
            shown["description"] = self.description
        if self.displayUri is not None:
            shown["displayUri"] = self.displayUri
        return shown


@dataclass(slots=True, kw_only=True)
class Thred:
    """One running instance of a pattern, as stored under `Thred:<id>`."""

    id: str
    patternId: str  # noqa: N815
    status: Status = ACTIVE
    startTime: int  # noqa: N815
    lastUpdateTime: int  # noqa: N815
    endTime: int | None = None  # noqa: N815
    reactionStore: ReactionStore  # noqa: N815
    thredContext: ThredContext  # noqa: N815
    meta: ThredMeta = field(default_factory=ThredMeta)
    parentThredId: str | None = None  # noqa: N815
    spawnType: SpawnType | None = None  # noqa: N815
    childThredIds: list[str] | None = None  # noqa: N815

    def _head(self) -> dict[str, Any]:
        head: dict[str, Any] = {
            "id": self.id,
            "patternId": self.patternId,
            "status": self.status,
            "startTime": self.startTime,
            "lastUpdateTime": self.lastUpdateTime,
        }
        if self.endTime is not None:
            head["endTime"] = self.endTime
        return head

    def _tail(self, into: dict[str, Any]) -> dict[str, Any]:
        into["meta"] = self.meta.to_dict()
        if self.parentThredId is not None:
            into["parentThredId"] = self.parentThredId
        if self.spawnType is not None:
            into["spawnType"] = self.spawnType
        if self.childThredIds is not None:
            into["childThredIds"] = list(self.childThredIds)
        return into

    def stored(self) -> dict[str, Any]:
        """The stored shape as JSON (optional fields omitted when unset); shares nothing."""
        stored = self._head()
        store = self.reactionStore
        stored["reactionStore"] = {
            "reactionName": store.reactionName,
            "conditionState": copy_json(store.conditionState),
            "startTime": store.startTime,
        }
        context = self.thredContext
        stored["thredContext"] = {
            "thredId": context.thredId,
            "scope": copy_json(context.scope),
            "participantIds": list(context.participantIds),
        }
        return self._tail(stored)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> Thred:
        """A thred from its stored shape (as `stored()` wrote it); shares nothing with it."""
        store = stored["reactionStore"]
        context = stored["thredContext"]
        meta = stored.get("meta") or {}
        children = stored.get("childThredIds")
        return cls(
            id=stored["id"],
            patternId=stored["patternId"],
            status=cast(Status, stored.get("status", ACTIVE)),
            startTime=stored["startTime"],
            lastUpdateTime=stored["lastUpdateTime"],
            endTime=stored.get("endTime"),
            reactionStore=ReactionStore(
                reactionName=store["reactionName"],
                conditionState=copy_json(store.get("conditionState") or {}),
                startTime=store["startTime"],
            ),
            thredContext=ThredContext(
                thredId=context["thredId"],
                scope=copy_json(context.get("scope") or {}),
                participantIds=list(context.get("participantIds") or []),
            ),
            meta=ThredMeta(
                label=meta.get("label"),
                description=meta.get("description"),
                displayUri=meta.get("displayUri"),
            ),
            parentThredId=stored.get("parentThredId"),
            spawnType=stored.get("spawnType"),
            childThredIds=None if children is None else list(children),
        )

    def public_view(
        self, *, pattern_name: str, broadcast_allowed: bool, expiry: dict[str, Any] | None
    ) -> dict[str, Any]:
        """State minus context and reaction store, plus pattern facts and the current reaction.

        A thred that has ended (FINISHED or TERMINATED) has no current reaction.
        """
        view = self._tail(self._head())
        view["patternName"] = pattern_name
        view["broadcastAllowed"] = broadcast_allowed
        current: dict[str, Any] = {}
        if self.status == ACTIVE:
            current["reactionName"] = self.reactionStore.reactionName
            if expiry is not None:
                current["expiry"] = expiry
        view["currentReaction"] = current
        return view
