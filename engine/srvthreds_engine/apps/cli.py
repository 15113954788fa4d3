"""The `srvthreds-engine` command: replay, validate, schema and run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from srvthreds_engine.apps.config_files import (
    ConfigFileError,
    read_resolver_config,
    read_sessions_model,
)
from srvthreds_engine.core.errors import PatternError

EXIT_OK = 0
EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srvthreds-engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser("replay", help="run patterns over a JSON Lines script")
    replay.add_argument("--patterns", nargs="+", required=True, type=Path, metavar="PATH")
    replay.add_argument("--sessions", type=Path, metavar="FILE")
    replay.add_argument("--resolver", type=Path, metavar="FILE")
    replay.add_argument("--input", default="-", metavar="FILE|-")
    replay.add_argument("--output", default="-", metavar="FILE|-")

    validate = commands.add_parser("validate", help="validate pattern files")
    validate.add_argument("patterns", nargs="+", type=Path, metavar="PATTERN")

    schema = commands.add_parser("schema", help="print or write the pattern JSON Schema")
    schema.add_argument("--output", type=Path, metavar="FILE")

    run = commands.add_parser("run", help="single-process engine with the HTTP API")
    run.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile folder (default: $PROFILE_DIR)"
    )
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    arguments = _parser().parse_args(argv)
    if arguments.command == "replay":
        return _replay(arguments)
    if arguments.command == "validate":
        return _validate(arguments.patterns)
    if arguments.command == "schema":
        return _schema(arguments.output)
    from srvthreds_engine.apps.embedded import run_embedded

    return int(run_embedded(arguments.profile, host=arguments.host, port=arguments.port))


def _fail(message: str) -> int:
    print(f"srvthreds-engine: {message}", file=sys.stderr)
    return EXIT_INVALID


def _reader(name: str, *, stack: ExitStack) -> TextIO:
    if name == "-":
        return sys.stdin
    return stack.enter_context(open(name, encoding="utf-8"))


def _writer(name: str, *, stack: ExitStack) -> TextIO:
    if name == "-":
        return sys.stdout
    return stack.enter_context(open(name, "w", encoding="utf-8"))


def _replay(arguments: argparse.Namespace) -> int:
    from srvthreds_engine.apps.replay import Replay, ReplayInputError, run_replay
    from srvthreds_engine.core.patterns import load_patterns

    try:
        patterns = load_patterns(arguments.patterns)
        replay = Replay(
            patterns,
            sessions_model=read_sessions_model(arguments.sessions),
            resolver_config=read_resolver_config(arguments.resolver),
        )
        with ExitStack() as stack:
            source = _reader(arguments.input, stack=stack)
            sink = _writer(arguments.output, stack=stack)
            source_name = "stdin" if arguments.input == "-" else arguments.input
            asyncio.run(run_replay(replay, source=source, sink=sink, source_name=source_name))
    except (PatternError, ConfigFileError, ReplayInputError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror}")
    return EXIT_OK


def _validate(paths: Sequence[Path]) -> int:
    from srvthreds_engine.core.patterns import check_pattern_files

    # The same checks as loading (`run`, `replay`), duplicate ids across the files included.
    status = EXIT_OK
    for check in check_pattern_files(paths):
        for problem in check.problems:
            status = _fail(str(problem))
        if not check.problems:
            count = check.count
            print(f"{check.path}: OK ({count} pattern{'s' if count != 1 else ''})")
    return status


def _schema(output: Path | None) -> int:
    from srvthreds_engine.core.schema import pattern_schema

    text = json.dumps(pattern_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return EXIT_OK
