"""Reads the API server's audit log (JSON lines) to count write requests per user."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class AuditEvent:
    """The fields of one audit event that tests look at."""

    user: str
    verb: str
    uri: str
    resource: str
    namespace: str
    name: str
    code: int
    at: dt.datetime

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> AuditEvent:
        target = entry.get("objectRef") or {}
        return cls(
            user=entry.get("user", {}).get("username", ""),
            verb=entry.get("verb", ""),
            uri=entry.get("requestURI", ""),
            resource="/".join(filter(None, (target.get("resource"), target.get("subresource")))),
            namespace=target.get("namespace", ""),
            name=target.get("name", ""),
            code=int(entry.get("responseStatus", {}).get("code", 0)),
            at=dt.datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00")),
        )


def parse_audit_lines(lines: Iterable[str]) -> Iterator[AuditEvent]:
    """Audit events, skipping a partially written last line."""
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("stage") == "ResponseComplete":
            yield AuditEvent.from_json(entry)


def read_audit_events(path: Path) -> list[AuditEvent]:
    with path.open() as handle:
        return list(parse_audit_lines(handle))


def write_requests(
    events: Iterable[AuditEvent], *, user: str, since: dt.datetime | None = None
) -> list[AuditEvent]:
    """The write requests `user` made (at or after `since`, a timezone-aware time)."""
    return [
        event
        for event in events
        if event.user == user and event.verb in WRITE_VERBS and (since is None or event.at >= since)
    ]
