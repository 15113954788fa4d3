"""Outbound routing (spec §12): one queue message per service, one per session node."""

from __future__ import annotations

from srvthreds_engine.core.events import OutboundMessage
from srvthreds_engine.ports import Session
from srvthreds_engine.service.routing import participants_to_look_up, route_message

SERVICES = {"org.wt.persistence", "org.wt.robot"}


def is_service(address: str) -> bool:
    return address in SERVICES


def message(*to: str) -> OutboundMessage:
    return OutboundMessage(event={"id": "evt1", "type": "org.wt.tell"}, to=list(to))


def test_each_service_address_gets_its_own_message_keyed_by_the_address() -> None:
    routed = route_message(
        message("org.wt.persistence", "org.wt.robot"), sessions={}, is_service=is_service
    )
    assert [(item.routing_key, item.message_id, item.body["to"]) for item in routed] == [
        ("org.wt.persistence", "evt1_agent_0", ["org.wt.persistence"]),
        ("org.wt.robot", "evt1_agent_1", ["org.wt.robot"]),
    ]
    assert all(item.body["event"] == {"id": "evt1", "type": "org.wt.tell"} for item in routed)


def test_participants_are_grouped_by_the_nodes_of_their_sessions() -> None:
    sessions = {
        "ann": [Session("ann", "node-a"), Session("ann", "node-b")],
        "bob": [Session("bob", "node-a")],
    }
    routed = route_message(message("ann", "bob"), sessions=sessions, is_service=is_service)
    assert [(item.routing_key, item.message_id, item.body["to"]) for item in routed] == [
        ("node-a", "evt1_0", ["ann", "bob"]),
        ("node-b", "evt1_1", ["ann"]),
    ]


def test_a_participant_without_a_session_is_not_reached() -> None:
    routed = route_message(
        message("org.wt.robot", "nobody"), sessions={"nobody": []}, is_service=is_service
    )
    assert [item.routing_key for item in routed] == ["org.wt.robot"]


def test_a_session_without_a_node_goes_to_the_default_session_route() -> None:
    routed = route_message(
        message("ann"), sessions={"ann": [Session("ann", "")]}, is_service=is_service
    )
    assert [item.routing_key for item in routed] == ["org.wt.session"]


def test_only_participants_are_looked_up_each_once() -> None:
    messages = [message("ann", "org.wt.robot"), message("bob", "ann")]
    assert participants_to_look_up(messages, is_service=is_service) == ["ann", "bob"]
