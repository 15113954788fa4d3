"""The Prometheus observer and the JSON/text log formats."""

from __future__ import annotations

import io
import json
import logging

import pytest

from srvthreds_engine.adapters.prometheus import EngineMetrics, PrometheusObserver
from srvthreds_engine.apps.logging import configure_logging, flush_logging


def test_the_observer_moves_every_engine_metric() -> None:
    metrics = EngineMetrics()
    observer = PrometheusObserver(metrics)
    observer.event_processed(result="matched", seconds=0.0003)
    observer.event_processed(result="no_match", seconds=0.0001)
    observer.thred_creation_skipped(pattern_id="incident", reason="maxInstances")
    observer.threds_changed(active=3)
    text = metrics.exposition().decode()
    assert 'srvthreds_events_processed_total{result="matched"} 1.0' in text
    assert 'srvthreds_events_processed_total{result="no_match"} 1.0' in text
    assert "srvthreds_active_threds 3.0" in text
    assert 'srvthreds_event_processing_seconds_bucket{le="0.0005"} 2.0' in text
    assert (
        'srvthreds_thred_creations_skipped_total{pattern="incident",reason="maxInstances"} 1.0'
        in text
    )


def test_two_apps_have_separate_registries() -> None:
    first, second = EngineMetrics(), EngineMetrics()
    first.events_received.inc()
    assert "srvthreds_events_received_total 1.0" in first.exposition().decode()
    assert "srvthreds_events_received_total 0.0" in second.exposition().decode()


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    flush_logging()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_are_one_object_a_line_with_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="json", stream=stream)
    logging.getLogger("srvthreds.test").info("event queued", extra={"eventId": "e1"})
    logging.getLogger("srvthreds.test").debug("not shown")
    flush_logging()
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "srvthreds.test"
    assert entry["message"] == "event queued"
    assert entry["eventId"] == "e1"
    assert entry["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_root_logger")
def test_text_logs_append_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging(level="DEBUG", log_format="text", stream=stream)
    logging.getLogger("srvthreds.test").debug("hello", extra={"thredId": "t1"})
    flush_logging()
    line = stream.getvalue().strip()
    assert "DEBUG" in line
    assert line.endswith("hello thredId='t1'")


@pytest.mark.usefixtures("restore_root_logger")
def test_exceptions_are_logged_with_their_traceback() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="json", stream=stream)
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("srvthreds.test").exception("failed %s", "badly")
    flush_logging()
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "failed badly"
    assert "ValueError: bad value" in entry["exception"]
