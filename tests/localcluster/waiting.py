"""Polling with deadlines, and HTTPS health probes of the control-plane components."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class WaitTimeoutError(TimeoutError):
    """A condition did not hold before its deadline; the message says what was awaited."""


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Polls `condition` until true; returns the seconds it took.

    `abort` returns a reason to give up early (e.g. the process being awaited has exited).
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if condition():
            return time.monotonic() - start
        reason = abort() if abort is not None else None
        if reason is not None:
            raise WaitTimeoutError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tls_context(*, ca: Path | None, client_cert: Path | None = None, client_key: Path | None = None
                ) -> ssl.SSLContext:  # fmt: skip
    """A client TLS context trusting `ca` (None: the component's self-signed cert is accepted)."""
    if ca is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(ca))
    if client_cert is not None and client_key is not None:
        context.load_cert_chain(str(client_cert), str(client_key))
    return context


def http_ok(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    """True when GET url answers 200 (connection errors count as not yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
