"""Loopback ports and process trees, read from the kernel (sockets and /proc)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Below Linux's ephemeral range (32768-60999): a server restarted on its port must not find it
# taken by some client's outgoing connection in the meantime.
_PORT_RANGE = (20000, 32000)
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and this process has not handed out."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE} after 200 tries")


def port_listens(port: int) -> bool:
    """True when a TCP connection to 127.0.0.1:port is accepted."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """True when 127.0.0.1:port can be bound (no server and no listener left behind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers set SO_REUSEADDR too: without it a port in TIME_WAIT would look taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


@dataclass(frozen=True)
class ProcessId:
    """A pid with its start time (/proc/<pid>/stat field 22), so a reused pid never matches."""

    pid: int
    started: int

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.started and stat[0] != "Z"

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def process_tree(roots: Sequence[int]) -> list[ProcessId]:
    """The processes in `roots` and all their descendants, found through /proc.

    Erlang's erl_child_setup calls setsid(), so a process group does not cover a RabbitMQ
    node; the parent links do.
    """
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
            started[int(entry.name)] = stat[2]
    found: list[ProcessId] = []
    pending = [pid for pid in roots if pid in started]
    while pending:
        pid = pending.pop()
        found.append(ProcessId(pid, started[pid]))
        pending.extend(child for child in children.get(pid, []) if child in started)
    return found


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (any local address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # fields[3] is the socket state: 0A is LISTEN.
                if fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                    inodes.add(fields[9])
    return inodes


def listens_on(pids: Sequence[int], port: int) -> bool:
    """True when one of `pids` holds the socket listening on `port`.

    Tells a server's own listener from another process's on the same port (which a client
    probe cannot).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return True
    return False
