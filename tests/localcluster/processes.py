"""Starts the control plane's processes and stops them by pid, also after a crash."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1

# Children started by this interpreter: reaping them through their Popen sets its returncode,
# so Popen.__del__ raises no "still running" ResourceWarning (an error under pytest).
# Entries stay after exit: a dozen small objects per cluster started.
_CHILDREN: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """One started process as recorded in the pid file: enough to find and stop it later."""

    name: str
    pid: int
    binary: str

    def line(self) -> str:
        return f"{self.name} {self.pid} {self.binary}\n"


def parse_pid_file(text: str) -> list[ProcessRecord]:
    """Reads `name pid binary` lines; skips malformed lines (a crash may truncate it)."""
    records = []
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1].isdigit():
            records.append(ProcessRecord(parts[0], int(parts[1]), parts[2]))
    return records


def read_pid_file(path: Path) -> list[ProcessRecord]:
    return parse_pid_file(path.read_text()) if path.exists() else []


def append_pid_file(path: Path, record: ProcessRecord) -> None:
    with path.open("a") as handle:
        handle.write(record.line())


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the pytest/run-demo process dies without
    # cleaning up, the kernel kills the child, so no server outlives its session. SIGKILL, not
    # SIGTERM: all servers get the signal at once, and an API server whose etcd went first
    # hangs in its shutdown for minutes (measured); the data is thrown away anyway.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    tie_to_parent: bool,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Starts argv with stdout and stderr appended to `log`, in a new session."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,  # noqa: PLW1509
            env=env,
        )
    _CHILDREN[process.pid] = (str(argv[0]), process)
    return process


def _started_here(record: ProcessRecord) -> subprocess.Popen[bytes] | None:
    binary, child = _CHILDREN.get(record.pid, ("", None))
    return child if binary == record.binary else None


def _runs_binary(record: ProcessRecord) -> bool:
    proc = Path("/proc") / str(record.pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return False
    # argv[1] for a script, whose argv[0] is its interpreter.
    return state != "Z" and record.binary in argv[:2]


def is_running(record: ProcessRecord) -> bool:
    """True when `record.pid` is alive and still runs `record.binary` (pids get reused).

    NB: for a child started by this interpreter only Popen.poll() is reliable: right after
    Popen returns, /proc/<pid>/cmdline can still be empty (exec not finished; measured), and
    an exited child stays a zombie until reaped.
    """
    child = _started_here(record)
    if child is not None:
        return child.poll() is None
    return _runs_binary(record)


def _signal_all(records: Iterable[ProcessRecord], signum: int) -> None:
    for record in records:
        if is_running(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signum)


def _wait_gone(records: Sequence[ProcessRecord], *, deadline: float) -> list[ProcessRecord]:
    while True:
        alive = [record for record in records if is_running(record)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def stop_processes(records: Sequence[ProcessRecord], *, grace_seconds: float = 15.0) -> list[str]:
    """Stops records one by one, in order: SIGTERM, then SIGKILL after the grace period.

    One at a time, because an API server whose etcd vanished first takes the whole grace
    period to shut down (measured: ~1.5 s in order against 15 s all at once). Returns the
    names of the processes that had to be killed.
    """
    killed = []
    for record in records:
        _signal_all([record], signal.SIGTERM)
        if _wait_gone([record], deadline=time.monotonic() + grace_seconds):
            _signal_all([record], signal.SIGKILL)
            killed.append(record.name)
            if _wait_gone([record], deadline=time.monotonic() + 5.0):
                raise RuntimeError(f"{record.name} (pid {record.pid}) survived SIGKILL")
    return killed
