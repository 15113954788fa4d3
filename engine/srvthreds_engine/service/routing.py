"""Outbound routing (spec §12): which queue message each resolved recipient of an event gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.ports import RoutedMessage, Session

# Where participants whose session names no node are reached.
DEFAULT_SESSION_ROUTE = "org.wt.session"


def route_message(
    message: OutboundMessage,
    *,
    sessions: Mapping[str, Sequence[Session]],
    is_service: Callable[[str], bool],
) -> list[RoutedMessage]:
    """One queue message per service address, and one per session node for the participants.

    Services get `id=<eventId>_agent_<i>` with their address as routing key. Participants are
    grouped by the nodes of their live sessions, one message per node (`id=<eventId>_<i>`, the
    node id as routing key, `to` the participants on it); a participant without a session is
    not reached (the original drops it too).
    """
    routed: list[RoutedMessage] = []
    by_node: dict[str, dict[str, None]] = {}
    for address in message.to:
        if is_service(address):
            routed.append(
                _routed(message, key=address, suffix=f"agent_{len(routed)}", to=[address])
            )
            continue
        for session in sessions.get(address, ()):
            by_node.setdefault(session.node_id or DEFAULT_SESSION_ROUTE, {})[address] = None
    for index, (node_id, participants) in enumerate(by_node.items()):
        routed.append(_routed(message, key=node_id, suffix=str(index), to=list(participants)))
    return routed


def _routed(message: OutboundMessage, *, key: str, suffix: str, to: list[str]) -> RoutedMessage:
    message_id = f"{message.id}_{suffix}"
    return RoutedMessage(
        routing_key=key,
        message_id=message_id,
        body={"id": message_id, "event": message.event, "to": to},
    )


def participants_to_look_up(
    messages: Sequence[OutboundMessage], *, is_service: Callable[[str], bool]
) -> list[str]:
    """The recipients whose sessions routing needs (every non-service address, once)."""
    wanted: dict[str, None] = {}
    for message in messages:
        for address in message.to:
            if not is_service(address):
                wanted[address] = None
    return list(wanted)
