"""The stored shape of a thred and its public view."""

from __future__ import annotations

from typing import Any, Final, Literal

import pydantic

ACTIVE: Final = "a"
FINISHED: Final = "f"
TERMINATED: Final = "t"
Status = Literal["a", "f", "t"]


class ThredContext(pydantic.BaseModel):
    """Locals and participants of one thred."""

    thredId: str  # noqa: N815 - the stored name
    scope: dict[str, Any] = pydantic.Field(default_factory=dict)
    participantIds: list[str] = pydantic.Field(default_factory=list)  # noqa: N815

    def add_participants(self, ids: list[str]) -> None:
        """Add ids not yet present, keeping first-seen order."""
        known = set(self.participantIds)
        for participant in ids:
            if participant not in known:
                known.add(participant)
                self.participantIds.append(participant)


class ReactionStore(pydantic.BaseModel):
    """Where a thred is: the current reaction, its condition state and entry time."""

    reactionName: str  # noqa: N815
    conditionState: dict[str, Any] = pydantic.Field(default_factory=dict)  # noqa: N815
    startTime: int  # noqa: N815


class ThredMeta(pydantic.BaseModel):
    """Display data of a thred."""

    label: str | None = None
    description: str | None = None
    displayUri: str | None = None  # noqa: N815


class Thred(pydantic.BaseModel):
    """One running instance of a pattern, as stored under `Thred:<id>`."""

    id: str
    patternId: str  # noqa: N815
    status: Status = ACTIVE
    startTime: int  # noqa: N815
    lastUpdateTime: int  # noqa: N815
    endTime: int | None = None  # noqa: N815
    reactionStore: ReactionStore  # noqa: N815
    thredContext: ThredContext  # noqa: N815
    meta: ThredMeta = pydantic.Field(default_factory=ThredMeta)
    parentThredId: str | None = None  # noqa: N815
    spawnType: Literal["child", "sibling"] | None = None  # noqa: N815
    childThredIds: list[str] | None = None  # noqa: N815

    def stored(self) -> dict[str, Any]:
        """The stored shape as JSON (optional fields omitted when unset)."""
        return self.model_dump(mode="json", exclude_none=True)

    def public_view(
        self, *, pattern_name: str, broadcast_allowed: bool, expiry: dict[str, Any] | None
    ) -> dict[str, Any]:
        """State minus context and reaction store, plus pattern facts and the current reaction."""
        view = self.model_dump(
            mode="json", exclude={"thredContext", "reactionStore"}, exclude_none=True
        )
        view["patternName"] = pattern_name
        view["broadcastAllowed"] = broadcast_allowed
        current: dict[str, Any] = {"reactionName": self.reactionStore.reactionName}
        if expiry is not None:
            current["expiry"] = expiry
        view["currentReaction"] = current
        return view
