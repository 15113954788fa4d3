"""The apply ledger: decides, without I/O, whether a child must be (re)applied.

Why: a server-side apply of an unchanged manifest is still a PATCH request (the audit log and the
API server count it), so a steady state must make none. Comparing the desired manifest with the
live object field by field is unreliable (the API server adds defaults, controllers add status),
so the ledger compares two things it can trust:

1. the hash of the desired manifest with the hash of the manifest we last applied to that child,
   which catches every change *we* want (spec edits, new config hashes, new operator versions);
2. the fields our field manager owns on the live object (its `managedFields` entry for the
   `Apply` operation of `srvthreds-operator`) with the owned-fields set the API server returned
   right after our last apply, which catches every change *someone else* made: an Update that
   changes a field we own moves that field's ownership to the other manager, so our set shrinks;
   a deleted and re-created (or missing) child has no entry or a different uid.

Status writes by controllers live in their own managedFields entries (subresource `status`) and
never touch our set, so pods becoming ready do not cause re-applies. An operator restart starts
with an empty ledger, so every child is applied once (harmless: SSA is idempotent), after which the
steady state is quiet again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

ChildKey = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name)."""


def child_key(manifest: Mapping[str, Any]) -> ChildKey:
    """The identity of a child across desired and live objects."""
    metadata = manifest.get("metadata") or {}
    return (
        str(manifest.get("apiVersion", "")),
        str(manifest.get("kind", "")),
        str(metadata.get("namespace") or ""),
        str(metadata.get("name", "")),
    )


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A stable content hash (key order does not matter)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def owns_field(live: Mapping[str, Any], *, field_manager: str, path: Sequence[str]) -> bool:
    """Whether our Apply entry owns the field at path (e.g. ["spec", "replicas"])."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == field_manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            node: Any = entry.get("fieldsV1") or {}
            for part in path:
                if not isinstance(node, Mapping) or f"f:{part}" not in node:
                    return False
                node = node[f"f:{part}"]
            return True
    return False


def owned_fields(live: Mapping[str, Any], *, field_manager: str) -> str | None:
    """Our Apply entry's fieldsV1, canonicalised; None when we own nothing on this object."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == field_manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return json.dumps(entry.get("fieldsV1") or {}, sort_keys=True, separators=(",", ":"))
    return None


@dataclasses.dataclass(frozen=True)
class _Applied:
    desired_hash: str
    uid: str
    fields: str | None


class ApplyLedger:
    """What we last applied per child, and whether the live object still matches it."""

    def __init__(self, *, field_manager: str) -> None:
        self._field_manager = field_manager
        self._applied: dict[ChildKey, _Applied] = {}

    def needs_apply(self, desired: Mapping[str, Any], *, live: Mapping[str, Any] | None) -> bool:
        """True unless we applied exactly this manifest and nobody changed our fields since."""
        if live is None:
            return True
        record = self._applied.get(child_key(desired))
        if record is None or record.desired_hash != manifest_hash(desired):
            return True
        metadata = live.get("metadata") or {}
        if str(metadata.get("uid", "")) != record.uid:
            return True
        return owned_fields(live, field_manager=self._field_manager) != record.fields

    def record(self, desired: Mapping[str, Any], *, live: Mapping[str, Any]) -> None:
        """Remember the manifest we applied and the owned fields the API server answered with."""
        metadata = live.get("metadata") or {}
        self._applied[child_key(desired)] = _Applied(
            desired_hash=manifest_hash(desired),
            uid=str(metadata.get("uid", "")),
            fields=owned_fields(live, field_manager=self._field_manager),
        )

    def forget(self, key: ChildKey) -> None:
        """Drop a pruned child so a later re-creation is applied."""
        self._applied.pop(key, None)
