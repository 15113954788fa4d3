"""Reproducible CPU figures and profiles of the engine core through `replay` (scenarios a, b, c).

Run: `.venv/bin/python -m tests.bench.profile_replay [a|b|c ...] [--runs N] [--profile]`.
Each run feeds a fresh `Replay` line by line through `run_replay` (JSON in, JSON out, as the
command does) and reports process CPU time per line and lines per CPU second; `--profile`
adds a cProfile table of the last run, `--digest` a hash of the outputs with ids masked (to
check that an optimisation did not change what replay writes).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import itertools
import json
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from srvthreds_engine.apps.replay import Replay, run_replay
from srvthreds_engine.core import ids
from tests.bench.engine_bench import event_a, event_b, new_replay

SCENARIO_SIZES = {"a": 5000, "b": 1000, "c": 1000}
PROFILE_TOP = 25


class ScriptedIO:
    """Source and sink of `run_replay`: lines from a script that may read earlier answers."""

    def __init__(
        self,
        replay: Replay,
        script: Callable[[ScriptedIO], Iterator[dict[str, Any]]],
        *,
        digest: bool,
    ) -> None:
        self.replay = replay
        self._lines = script(self)
        self.last_output = ""
        self.outputs = 0
        self.digest = hashlib.sha256() if digest else None

    def readline(self) -> str:
        line = next(self._lines, None)
        return "" if line is None else json.dumps(line) + "\n"

    def write(self, text: str) -> int:
        self.last_output = text
        self.outputs += 1
        if self.digest is not None:
            self.digest.update(text.encode())
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def last_thred_id(self) -> str:
        # Read from the replay, not by parsing the (large) output line: drivers are not measured.
        return str(self.replay.dispatcher.messages[-1].event["thredId"])


def script_a(count: int) -> Callable[[ScriptedIO], Iterator[dict[str, Any]]]:
    def lines(_: ScriptedIO) -> Iterator[dict[str, Any]]:
        for number in range(count):
            yield event_a(number)

    return lines


def script_b(chains: int) -> Callable[[ScriptedIO], Iterator[dict[str, Any]]]:
    def lines(io_: ScriptedIO) -> Iterator[dict[str, Any]]:
        for number in range(chains):
            yield event_b("start", number)
            thred_id = io_.last_thred_id()
            yield event_b("step", number, thred_id=thred_id)
            yield event_b("finish", number, thred_id=thred_id)

    return lines


def script_c(threds: int) -> Callable[[ScriptedIO], Iterator[dict[str, Any]]]:
    def lines(io_: ScriptedIO) -> Iterator[dict[str, Any]]:
        thred_ids = []
        for number in range(threds):
            yield event_b("start", number)
            thred_ids.append(io_.last_thred_id())
        for kind in ("step", "finish"):
            for number, thred_id in enumerate(thred_ids):
                yield event_b(kind, number, thred_id=thred_id)

    return lines


SCRIPTS = {"a": script_a, "b": script_b, "c": script_c}


def deterministic_ids() -> None:
    """Replace the random part of ids by a counter, so that two runs write the same bytes."""
    counter = itertools.count()

    def counted_nanoid(size: int = ids.NANOID_SIZE) -> str:
        return f"{next(counter):0{size}d}"

    ids.nanoid = counted_nanoid


def run_once(
    scenario: str, *, profiler: cProfile.Profile | None, digest: bool
) -> tuple[int, float, float, str]:
    """One fresh replay of a scenario: (lines, CPU seconds, wall seconds, output digest)."""
    replay: Replay = new_replay()
    scripted = ScriptedIO(replay, SCRIPTS[scenario](SCENARIO_SIZES[scenario]), digest=digest)
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    asyncio.run(run_replay(replay, source=scripted, sink=scripted, source_name="bench"))  # type: ignore[arg-type]
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - cpu_started
    wall = time.perf_counter() - wall_started
    hexdigest = scripted.digest.hexdigest()[:16] if scripted.digest is not None else ""
    return scripted.outputs, cpu, wall, hexdigest


def report(scenario: str, *, runs: int, profile: bool, digest: bool) -> None:
    """Print CPU µs/line (median and best of runs) and lines per CPU second; maybe a profile."""
    per_line: list[float] = []
    profiler = cProfile.Profile() if profile else None
    lines = 0
    last_digest = ""
    if digest:
        deterministic_ids()
    for index in range(runs):
        last = index == runs - 1
        lines, cpu, _wall, last_digest = run_once(
            scenario, profiler=profiler if last else None, digest=digest
        )
        per_line.append(cpu / lines)
    median = statistics.median(per_line)
    figures = ", ".join(f"{1e6 * value:.1f}" for value in per_line)
    print(
        f"({scenario}) {lines} lines: median {1e6 * median:.1f} µs CPU/line "
        f"= {1 / median:,.0f} lines/s, best {1e6 * min(per_line):.1f} µs "
        f"= {1 / min(per_line):,.0f} lines/s  [runs: {figures}]"
        + (f"  digest {last_digest}" if digest else "")
    )
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(PROFILE_TOP)
        stats.sort_stats("cumulative").print_stats(PROFILE_TOP)
        print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCRIPTS)} (default: all)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--digest", action="store_true")
    args = parser.parse_args()
    unknown = sorted(set(args.scenarios) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {sorted(SCRIPTS)}")
    for scenario in args.scenarios or list(SCRIPTS):
        report(scenario, runs=args.runs, profile=args.profile, digest=args.digest)


if __name__ == "__main__":
    main()
