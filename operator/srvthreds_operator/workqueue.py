"""A coalescing work queue: one pass per key at a time; a burst of triggers adds one pass."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

logger = logging.getLogger(__name__)


class CoalescingQueue(Generic[Key]):
    """Runs `work(key)` for enqueued keys.

    Why: a CR event, a dozen child events and the resync timer can all fire within a second;
    reconciling once per trigger wastes API calls, and two concurrent passes for one CR could
    interleave their writes. Here a key is either idle, running, or running with one more pass
    owed: triggers during a pass only set the "owed" flag (the per-CR lock and the coalescing in
    one structure), and different keys run concurrently.
    """

    def __init__(self, work: Callable[[Key], Awaitable[None]]) -> None:
        self._work = work
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._owed: set[Key] = set()

    def enqueue(self, key: Key) -> None:
        """Ask for a pass over key (never blocks)."""
        if key in self._running:
            self._owed.add(key)
            return
        self._running[key] = asyncio.create_task(self._drain(key), name=f"reconcile {key}")

    async def _drain(self, key: Key) -> None:
        try:
            while True:
                self._owed.discard(key)
                try:
                    await self._work(key)
                except Exception:
                    logger.exception("work for %s failed", key)
                if key not in self._owed:
                    return
        finally:
            del self._running[key]

    @property
    def busy(self) -> bool:
        """True while any pass runs."""
        return bool(self._running)

    async def join(self) -> None:
        """Wait until no pass runs (tests, graceful shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every running pass (shutdown after losing the lease)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
