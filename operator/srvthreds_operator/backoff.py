"""Retry delays after failed reconcile passes: capped exponential back-off with full jitter.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the n-th consecutive
failure waits a uniformly random time in [0, min(cap, base * factor ** (n - 1))). Spreading the
whole interval, not only a fraction of it, keeps many clusters that failed together (an API
server restart, a quota shared by a namespace) from retrying in lock-step, and is the variant
with the least total work in that study. The random source is injected so tests are exact.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

RandomSource = Callable[[], float]
"""Returns a float in [0, 1), like `random.random`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long to wait before retrying a cluster whose pass failed `failures` times in a row."""

    base_seconds: float = 1.0
    factor: float = 2.0
    cap_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.base_seconds <= 0:
            raise ValueError(f"the retry base must be positive, got {self.base_seconds}")
        if self.factor < 1:
            raise ValueError(f"the retry factor must be at least 1, got {self.factor}")
        if self.cap_seconds < self.base_seconds:
            raise ValueError("the retry cap must not be below the retry base")

    def ceiling(self, failures: int) -> float:
        """The upper bound of the delay after `failures` consecutive failures (>= 1)."""
        if failures < 1:
            raise ValueError(f"failures counts from 1, got {failures}")
        # Growth stops at the cap, so the float stays finite however long a cluster keeps failing.
        ceiling = self.base_seconds
        for _ in range(failures - 1):
            ceiling *= self.factor
            if ceiling >= self.cap_seconds:
                return self.cap_seconds
        return min(ceiling, self.cap_seconds)

    def delay(self, failures: int, *, rand: RandomSource = random.random) -> float:
        """A delay drawn uniformly from [0, ceiling(failures))."""
        return self.ceiling(failures) * rand()
