"""Clocks: the wall clock for servers and a virtual clock for `replay` and tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime

REPLAY_EPOCH_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        """Now, in epoch milliseconds."""
        return time.time_ns() // 1_000_000


class VirtualClock:
    """Time that moves only when told to."""

    def __init__(self, start_ms: int = REPLAY_EPOCH_MS) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """The current virtual time in epoch milliseconds."""
        return self._now_ms

    def advance(self, milliseconds: int) -> None:
        """Move time forward (never backward)."""
        if milliseconds < 0:
            raise ValueError(f"cannot move the clock backward by {milliseconds} ms")
        self._now_ms += milliseconds
