"""`make bench`: runs the engine and operator benchmarks and writes BENCHMARKS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _engine_section() -> str:
    from tests.bench.engine_bench import run_engine_benchmarks

    return run_engine_benchmarks()


def _operator_section() -> str:
    from tests.bench.operator_bench import run_operator_benchmarks

    return run_operator_benchmarks()


def _backends_section() -> str:
    from tests.bench.backends_bench import run_backends_benchmarks

    return run_backends_benchmarks()


SECTIONS = {
    "engine": _engine_section,
    "operator": _operator_section,
    "backends": _backends_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("only", nargs="*", help=f"run only these sections ({', '.join(SECTIONS)})")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    chosen = args.only or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    parts = [
        "# Benchmarks\n",
        f"Written by `make bench` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        "Figures are from the machine named in each section; rerun `make bench` to refresh.\n",
    ]
    for name in chosen:
        print(f"[bench] running the {name} benchmarks", file=sys.stderr, flush=True)
        parts.append(SECTIONS[name]())
    args.output.write_text("\n".join(parts), encoding="utf-8")
    print(f"[bench] wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
