"""`allowedSources` regular expressions (`/re/` entries), run by RE2 in time linear in the id.

Python's `re` backtracks: `/^(a+)+$/` against a client-chosen `source.id` of a few dozen
characters would block the event loop for seconds. RE2 has no backreferences and no lookaround
(https://github.com/google/re2/wiki/Syntax); a regex it refuses is a load error.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

# Distinct regexes of the loaded patterns; a pattern set holds far fewer.
COMPILED_CACHE_SIZE = 1024


def regex_of(entry: str) -> str | None:
    """The regex of an `allowedSources` entry written `/re/`, or None for other entries."""
    if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
        return entry[1:-1]
    return None


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compiled(regex: str) -> Any:
    options = re2.Options()
    options.case_sensitive = False
    # Compile errors are reported by regex_problem; RE2 would also print them to stderr.
    options.log_errors = False
    return re2.compile(regex, options)


def regex_problem(regex: str) -> str | None:
    """Why RE2 does not compile `regex` (for load-time validation), or None when it does."""
    try:
        _compiled(regex)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return (
            f"regex {regex!r} does not compile under RE2 (no backreferences, no lookaround): "
            f"{reason}"
        )
    return None


def regex_matches(regex: str, *, source_id: str) -> bool:
    """Case-insensitive search of `regex` in `source_id`; a regex RE2 refuses matches nothing."""
    try:
        return _compiled(regex).search(source_id) is not None
    except re2.error:
        return False
