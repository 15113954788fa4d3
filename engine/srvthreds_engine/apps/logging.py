"""Log configuration: one JSON object a line (time, level, logger, message, extras) or text."""

from __future__ import annotations

import atexit
import copy
import datetime as dt
import json
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any

# Attributes every LogRecord has; anything else came through `extra=` and is logged as a field.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object, with the `extra=` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single line of JSON."""
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (key, value) for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines, with the `extra=` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as text followed by its extra fields."""
        text = super().format(record)
        extras = " ".join(
            f"{key}={value!r}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES
        )
        return f"{text} {extras}" if extras else text


class _DeferredFormatQueueHandler(QueueHandler):
    """Queues records for the writer thread, keeping their fields for the JSON formatter."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Freeze what may change after the call (message arguments, the live exception)."""
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = logging.Formatter().formatException(record.exc_info)
            prepared.exc_info = None
        return prepared


_listener: QueueListener | None = None


def configure_logging(*, level: str, log_format: str, stream: IO[str] | None = None) -> None:
    """Send every log record to one stream in the chosen format (replaces old handlers).

    NB: records are written by a background thread: a slow reader of stderr (a full pipe)
    must never block the event loop. `flush_logging()` waits for the queued records.
    """
    global _listener  # noqa: PLW0603 - one writer thread per process
    flush_logging()
    writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_DeferredFormatQueueHandler(records))
    root.setLevel(level)
    # aiohttp's access log is one line per request: too noisy at INFO for an event API.
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))
    _listener = QueueListener(records, writer)
    _listener.start()


def flush_logging() -> None:
    """Write every queued record and stop the writer thread (at exit, or to reconfigure)."""
    global _listener  # noqa: PLW0603 - one writer thread per process
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(flush_logging)
