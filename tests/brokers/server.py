"""The life cycle every test server shares: start, readiness, stop, kill and its log."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.brokers.procfs import ProcessId, free_port, listens_on, process_tree
from tests.localcluster.processes import start_process
from tests.localcluster.waiting import WaitTimeoutError, wait_until

LOG_TAIL_LINES = 60


class ServerStartError(RuntimeError):
    """A server did not become ready; the message names what was awaited and ends with its log."""


def tail(path: Path, *, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file ('' when it does not exist yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Launch:
    """One process of a server: its name (for logs), argv, environment, and for a helper
    that the next process needs, the probe that says it is up."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None


class TestServer(ABC):
    """A server started as a child of the test process, in its own folder, on fixed ports.

    The ports and the folder are chosen once, so `stop()` + `start()` brings the server back
    where clients expect it, with its data. Children get SIGKILL when the test process dies
    (PR_SET_PDEATHSIG): the kernel sends it when the *thread* that forked them ends, so
    processes are spawned from the main thread only; `astart()` waits for readiness in a
    worker thread instead.
    """

    __test__ = False  # a class named Test* is not a pytest test class
    name: str = "server"
    start_timeout: float = 60.0
    stop_timeout: float = 30.0

    def __init__(self, *, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port if port is not None else free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / f"{self.name}.log"
        self.start_seconds: list[float] = []
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    @property
    @abstractmethod
    def url(self) -> str:
        """The client URL of the server."""

    @abstractmethod
    def _launches(self) -> list[Launch]:
        """The processes to start, in order (helpers first); the last one is the server."""

    @abstractmethod
    def _ready(self) -> bool:
        """One readiness probe: True when a client can use the server."""

    def _prepare(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Writes config files before the processes start."""

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return bool(self._processes) and self._processes[-1][1].poll() is None

    @property
    def pids(self) -> list[int]:
        return [process.pid for _, process in self._processes]

    def start(self) -> float:
        """Starts the server and waits until it answers; returns the seconds it took."""
        began = self._spawn()
        self._await_ready()
        return self._record_start(began)

    async def astart(self) -> float:
        """`start()` for async tests: the event loop keeps running while the server boots."""
        began = self._spawn()
        await asyncio.to_thread(self._await_ready)
        return self._record_start(began)

    def ensure_running(self) -> None:
        """Starts the server when a test left it stopped or killed."""
        if not self.running:
            self.stop()  # reaps helpers whose server died
            self.start()

    def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after `stop_timeout`), the server before its helpers."""
        for name, process in reversed(self._processes):
            self._terminate(name, process)
        self._processes.clear()

    async def astop(self) -> None:
        """`stop()` for async tests."""
        await asyncio.to_thread(self.stop)

    def kill(self) -> None:
        """SIGKILL to every process of the server and their children, like a crash."""
        tree = process_tree(self.pids)
        for _, process in self._processes:
            process.kill()
        for member in tree:
            member.kill()
        for name, process in self._processes:
            self._wait_gone(name, process, tree)
        self._processes.clear()

    def log_tail(self, *, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines=lines)

    def _spawn(self) -> float:
        if self.running:
            raise RuntimeError(f"{self.name} on port {self.port} is already running")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"start {self.name} from the main thread: PR_SET_PDEATHSIG would kill it "
                "when the starting thread ends"
            )
        self._prepare()
        began = time.monotonic()
        for launch in self._launches():
            with self.log_path.open("a") as log:
                log.write(f"==== {time.strftime('%H:%M:%S')} starting {launch.name}\n")
            process = start_process(
                launch.name, launch.argv, log=self.log_path, tie_to_parent=True, env=launch.env
            )
            self._processes.append((launch.name, process))
            if launch.ready is not None:
                self._await(launch.ready, what=f"{launch.name} of {self.name} to start", timeout=15)
        return began

    def _await_ready(self) -> None:
        what = f"{self.name} on 127.0.0.1:{self.port} to answer ({self.url})"
        self._await(self._ready_and_ours, what=what, timeout=self.start_timeout)

    def _ready_and_ours(self) -> bool:
        # Another process on the same port (a leftover or a parallel session) would pass the
        # client probe; the listening socket must belong to this server's processes.
        return listens_on([p.pid for p in process_tree(self.pids)], self.port) and self._ready()

    def _await(self, condition: Callable[[], bool], *, what: str, timeout: float) -> None:
        try:
            wait_until(condition, timeout=timeout, what=what, abort=self._exited)
        except WaitTimeoutError as error:
            self.kill()
            raise ServerStartError(f"{error}\n--- {self.log_path}:\n{self.log_tail()}") from None

    def _record_start(self, began: float) -> float:
        seconds = time.monotonic() - began
        self.start_seconds.append(seconds)
        return seconds

    def _exited(self) -> str | None:
        for name, process in self._processes:
            code = process.poll()
            if code is not None:
                return f"{name} (pid {process.pid}) exited with code {code}"
        return None

    def _terminate(self, name: str, process: subprocess.Popen[bytes]) -> None:
        tree = process_tree([process.pid])
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.stop_timeout)
        # After a graceful stop this only reaches what outlived it: a hung server, or helpers
        # a server left behind.
        if process.poll() is None:
            process.kill()
        for member in tree:
            member.kill()
        self._wait_gone(name, process, tree)

    def _wait_gone(
        self, name: str, process: subprocess.Popen[bytes], tree: Sequence[ProcessId]
    ) -> None:
        what = f"{self.name}'s {name} (pid {process.pid}) and its children to exit after SIGKILL"
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10.0)
            wait_until(
                lambda: process.poll() is not None and not any(m.alive() for m in tree),
                timeout=10.0,
                what=what,
                interval=0.05,
            )
        except WaitTimeoutError as error:
            raise RuntimeError(f"{error}\n--- {self.log_path}:\n{self.log_tail()}") from None
