"""Unit tests of the harness's helpers that need no server: names, ports, process trees."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from tests.brokers.fixtures import unique_name
from tests.brokers.procfs import free_port, listens_on, port_is_free, process_tree
from tests.brokers.server import tail
from tests.localcluster.waiting import wait_until


def test_unique_name_keeps_to_the_limit_and_the_allowed_characters() -> None:
    name = unique_name("test_x[Param-1] with a very long name " * 5, separator="_", limit=63)
    assert len(name) <= 63
    assert re.fullmatch(r"t_[a-z0-9_]+_[0-9a-f]{8}", name)


def test_unique_name_differs_between_calls() -> None:
    assert unique_name("same", separator="-", limit=40) != unique_name(
        "same", separator="-", limit=40
    )


def test_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) == 5
    assert all(20000 <= port < 32768 and port_is_free(port) for port in ports)


def test_listens_on_tells_the_owner_of_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listens_on([os.getpid()], port)
        assert not listens_on([os.getppid()], port)
        assert not port_is_free(port)


def test_process_tree_includes_grandchildren() -> None:
    with subprocess.Popen(["sh", "-c", "sleep 30 & wait"], stdout=subprocess.DEVNULL) as parent:
        try:
            wait_until(
                lambda: len(process_tree([parent.pid])) == 2,
                timeout=10,
                what="sh and its sleep child",
                interval=0.02,
            )
            tree = process_tree([parent.pid])
            assert parent.pid in [member.pid for member in tree]
            assert all(member.alive() for member in tree)
        finally:
            for member in process_tree([parent.pid]):
                member.kill()
            parent.wait(timeout=10)


def test_tail_returns_the_last_lines_and_nothing_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {n}\n" for n in range(10)))
    assert tail(log, lines=2) == "line 8\nline 9"
    assert tail(tmp_path / "missing.log") == ""
