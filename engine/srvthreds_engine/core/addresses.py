"""Address resolution: `$all`, `$thred`, `$<group>`, service addresses and literals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic

ALL = "$all"
THRED = "$thred"


class GroupMember(pydantic.BaseModel):
    """One member of a group."""

    model_config = pydantic.ConfigDict(extra="allow")

    participantId: str  # noqa: N815 - the config key


class Group(pydantic.BaseModel):
    """A named group of participants."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str
    participants: list[GroupMember] = pydantic.Field(default_factory=list)


class SessionsModel(pydantic.BaseModel):
    """The sessions model config: groups of participants."""

    model_config = pydantic.ConfigDict(extra="allow")

    groups: list[Group] = pydantic.Field(default_factory=list)


class AgentAddress(pydantic.BaseModel):
    """One service (agent) address of the resolver config."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str
    nodeType: str  # noqa: N815
    nodeId: str  # noqa: N815
    configName: str | None = None  # noqa: N815
    remote: bool = False
    hidden: bool = False


class ResolverConfig(pydantic.BaseModel):
    """The resolver config: the service addresses."""

    model_config = pydantic.ConfigDict(extra="allow")

    agents: list[AgentAddress] = pydantic.Field(default_factory=list)


def flatten(value: Any) -> list[Any]:
    """Flatten nested lists fully (the original flattens one level only)."""
    if not isinstance(value, list):
        return [value]
    flat: list[Any] = []
    for item in value:
        flat.extend(flatten(item))
    return flat


class AddressBook:
    """Groups and service addresses, resolved without I/O."""

    def __init__(
        self,
        sessions_model: SessionsModel | None = None,
        *,
        resolver_config: ResolverConfig | None = None,
    ) -> None:
        self.sessions_model = sessions_model or SessionsModel()
        self.resolver_config = resolver_config or ResolverConfig()
        self._groups = {
            group.name: [member.participantId for member in group.participants]
            for group in self.sessions_model.groups
        }
        self._local_services: set[str] = set()
        for agent in self.resolver_config.agents:
            if not agent.remote:
                self._local_services.update((agent.nodeType, agent.nodeId))

    def group_members(self, name: str) -> list[str]:
        """Members of a group (unknown group: none)."""
        return list(self._groups.get(name, []))

    def is_member(self, participant_id: str, *, group: str) -> bool:
        """Whether the participant belongs to the group."""
        return participant_id in self._groups.get(group, [])

    def is_service(self, address: str) -> bool:
        """Whether an address names a (non-remote) service agent."""
        return address in self._local_services

    def resolve(
        self,
        addresses: Iterable[str],
        *,
        thred_participants: Iterable[str],
        participants_with_sessions: Iterable[str] | None = None,
    ) -> list[str]:
        """Expand groups and `$thred`, deduplicated in first-seen order.

        `participants_with_sessions` answers `$all` (absent when the caller knows there is none).
        """
        requested = list(addresses)
        if ALL in requested:
            return list(dict.fromkeys(participants_with_sessions or []))
        resolved: dict[str, None] = {}
        for address in requested:
            for target in self._expand(address, thred_participants=thred_participants):
                resolved[target] = None
        return list(resolved)

    def _expand(self, address: str, *, thred_participants: Iterable[str]) -> list[str]:
        if address == THRED:
            return [item for item in thred_participants if not self.is_service(item)]
        if address.startswith("$"):
            return self.group_members(address[1:])
        return [address]
