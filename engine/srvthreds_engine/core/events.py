"""Pydantic models of events and outbound messages: the wire contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic

SYSTEM_SOURCE: dict[str, str] = {"id": "SYSTEM", "name": "Workthreds Bot"}
SYSTEM_THRED_ID = "SYSTEM"
TELL = "org.wt.tell"
BROADCAST = "org.wt.broadcast"
CLIENT_TELL = "org.wt.client.tell"
CLIENT_BROADCAST = "org.wt.client.broadcast"
SYS_CONTROL = "org.wt.control.sysControl"
DATA_CONTROL = "org.wt.control.dataControl"
USER_CONTROL = "org.wt.control.userControl"
SYSTEM_EVENT_TYPES = frozenset({SYS_CONTROL, DATA_CONTROL, USER_CONTROL})


class EventSource(pydantic.BaseModel):
    """Who sent an event."""

    model_config = pydantic.ConfigDict(extra="allow")

    id: str = pydantic.Field(min_length=1)
    name: str | None = None
    uri: str | None = None


class Event(pydantic.BaseModel):
    """One event; unknown keys are kept because the original passes them through."""

    model_config = pydantic.ConfigDict(extra="allow")

    id: str = pydantic.Field(min_length=1)
    type: str = pydantic.Field(min_length=1)
    source: EventSource
    thredId: str | None = None  # noqa: N815 - the wire name
    re: str | None = None
    time: int | float | str | None = None
    data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the engine and expressions work on (absent keys stay absent)."""
        return self.model_dump(mode="json", exclude_unset=True)


@dataclass(slots=True)
class OutboundMessage:
    """An event and its resolved recipients, handed to the dispatchers."""

    event: dict[str, Any]
    to: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The message id is the id of the event it carries."""
        return str(self.event["id"])

    def to_dict(self) -> dict[str, Any]:
        """`{event, to}` as JSON."""
        return {"event": self.event, "to": list(self.to)}
