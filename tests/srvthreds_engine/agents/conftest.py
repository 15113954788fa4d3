"""Fixtures of the agent tests: the node tests' report and fresh backends."""

from __future__ import annotations

from tests.srvthreds_engine.backends.conftest import report, shared_backends

__all__ = ["report", "shared_backends"]
