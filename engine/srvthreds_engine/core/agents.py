"""What agents exchange with the engine (spec §12): inbound messages, replies, error events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from srvthreds_engine.core import ids
from srvthreds_engine.core.errors import TASK_ERROR
from srvthreds_engine.core.limits import depth_problem, may_be_too_deep, too_deep_message

PERSISTENCE_NODE_TYPE = "org.wt.persistence"
SESSION_NODE_TYPE = "org.wt.session"


class AgentMessageError(ValueError):
    """A queue message is not `{id, event, to}`; the message says what and where."""


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """One message from `message-exchange`: its id, the event it carries and its recipients."""

    id: str
    event: dict[str, Any]
    to: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The message as sent on the queue and to proxy sockets (§12: the whole Message)."""
        return {"id": self.id, "event": self.event, "to": list(self.to)}


def parse_agent_message(body: bytes) -> AgentMessage:
    """The message in a queue body, or AgentMessageError naming what is wrong."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise AgentMessageError(too_deep_message()) from None
    except ValueError as exc:
        raise AgentMessageError(f"not JSON: {exc}") from None
    problem = depth_problem(document) if may_be_too_deep(body) else None
    if problem is not None:
        raise AgentMessageError(problem)
    if not isinstance(document, dict):
        raise AgentMessageError(f"not a message object: {type(document).__name__}")
    message_id, event, to = document.get("id"), document.get("event"), document.get("to")
    if not isinstance(message_id, str) or not message_id:
        raise AgentMessageError("id: a non-empty string is required")
    if not isinstance(event, dict):
        raise AgentMessageError("event: an object is required")
    if not isinstance(event.get("id"), str) or not event.get("id"):
        raise AgentMessageError("event.id: a non-empty string is required")
    if not isinstance(to, list) or not all(isinstance(item, str) for item in to):
        raise AgentMessageError("to: a list of addresses is required")
    return AgentMessage(id=message_id, event=event, to=list(to))


def agent_event_id(node_id: str) -> str:
    """The id of an event an agent makes: its node id and a nanoid (§12)."""
    return node_id + ids.nanoid()


def reply_event(
    request: dict[str, Any],
    *,
    node_id: str,
    node_type: str,
    name: str,
    result: Any,
    now_ms: int,
) -> dict[str, Any]:
    """An agent's answer to `request` (§12): same thred, `re` = the request's id."""
    event = _agent_event(request, node_id=node_id, node_type=node_type, name=name, now_ms=now_ms)
    event["data"] = {
        "title": f"{node_id} Result",
        "content": {"values": {"result": result}},
    }
    return event


def error_event(
    request: dict[str, Any],
    *,
    node_id: str,
    node_type: str,
    name: str,
    message: str,
    now_ms: int,
    code: int = TASK_ERROR,
) -> dict[str, Any]:
    """An agent's failure to handle `request` (§12: default code 5200), in `content.error`."""
    event = _agent_event(request, node_id=node_id, node_type=node_type, name=name, now_ms=now_ms)
    event["data"] = {
        "title": f"{node_id} Error",
        "content": {"error": {"message": message, "code": code}},
    }
    return event


def _agent_event(
    request: dict[str, Any], *, node_id: str, node_type: str, name: str, now_ms: int
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": agent_event_id(node_id),
        "type": node_type,
        "re": request.get("id"),
        "source": {"id": node_id, "name": name},
        "time": now_ms,
    }
    thred_id = request.get("thredId")
    if thred_id is not None:
        event["thredId"] = thred_id
    return event
