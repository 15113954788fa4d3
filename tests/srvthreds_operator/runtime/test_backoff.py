"""The retry delay: capped exponential ceiling, full jitter from an injected random source."""

from __future__ import annotations

import pytest

from srvthreds_operator.backoff import RetryPolicy

POLICY = RetryPolicy(base_seconds=1.0, factor=2.0, cap_seconds=300.0)


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (11, 300.0)],
)
def test_the_ceiling_doubles_per_failure_up_to_the_cap(failures: int, ceiling: float) -> None:
    assert POLICY.ceiling(failures) == ceiling


def test_the_ceiling_stays_at_the_cap_for_a_cluster_failing_for_days() -> None:
    assert POLICY.ceiling(100_000) == 300.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_full_jitter_draws_uniformly_below_the_ceiling(draw: float) -> None:
    assert POLICY.delay(4, rand=lambda: draw) == pytest.approx(8.0 * draw)


def test_the_delay_never_reaches_the_cap() -> None:
    assert POLICY.delay(50, rand=lambda: 0.999999) < 300.0


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        POLICY.ceiling(0)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"base_seconds": 0.0}, "base must be positive"),
        ({"factor": 0.5}, "factor must be at least 1"),
        ({"base_seconds": 10.0, "cap_seconds": 5.0}, "cap must not be below"),
    ],
)
def test_a_nonsensical_policy_is_refused(options: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetryPolicy(**options)
