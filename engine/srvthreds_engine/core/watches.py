"""Thred watches (`watchThreds`): who gets pushed thred views, debounced, with expiry."""

from __future__ import annotations

from dataclasses import dataclass

DEBOUNCE_MS = 1_000
EXPIRY_MS = 60_000


@dataclass(slots=True)
class Watch:
    """One watcher: pushes carry `re` = the id of the event that started the watch."""

    watch_id: str
    expires_ms: int


class ThredWatches:
    """Watchers by participant and the pending (debounced) push; pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self._changed_since_ms: int | None = None

    def start(self, participant_id: str, *, watch_id: str, now_ms: int) -> None:
        """Start (or restart) a watch for 60 s."""
        self._watches[participant_id] = Watch(watch_id, now_ms + EXPIRY_MS)

    def renew(self, participant_id: str, *, watch_id: str, now_ms: int) -> None:
        """Extend a watch by 60 s (starting one if there is none)."""
        watch = self._watches.get(participant_id)
        if watch is None:
            self.start(participant_id, watch_id=watch_id, now_ms=now_ms)
        else:
            watch.expires_ms = now_ms + EXPIRY_MS

    def stop(self, participant_id: str) -> None:
        """End a watch."""
        self._watches.pop(participant_id, None)

    def changed(self, *, now_ms: int) -> None:
        """Note a thred change; the push follows after the debounce interval."""
        if self._watches and self._changed_since_ms is None:
            self._changed_since_ms = now_ms

    def due_ms(self) -> int | None:
        """When the pending push is due, or None."""
        if self._changed_since_ms is None:
            return None
        return self._changed_since_ms + DEBOUNCE_MS

    def take_due(self, *, now_ms: int) -> list[tuple[str, Watch]]:
        """The live watchers to push to now (clears the pending push and expired watches)."""
        due = self.due_ms()
        if due is None or now_ms < due:
            return []
        self._changed_since_ms = None
        self._watches = {
            key: watch for key, watch in self._watches.items() if watch.expires_ms > now_ms
        }
        return list(self._watches.items())
