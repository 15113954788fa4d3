"""A blocking AMQP 0-9-1 login probe: connect, log in, open a vhost, close cleanly."""

from __future__ import annotations

import socket
import struct

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1
_FRAME_END = b"\xce"
_CONNECTION = 10
_START, _START_OK, _TUNE, _TUNE_OK = 10, 11, 30, 31
_OPEN, _OPEN_OK, _CLOSE, _CLOSE_OK = 40, 41, 50, 51


class AmqpRefusedError(ConnectionError):
    """The broker answered but refused the login or the vhost (Connection.Close)."""


def _shortstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!B", len(data)) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _send_method(sock: socket.socket, method: int, arguments: bytes) -> None:
    payload = struct.pack("!HH", _CONNECTION, method) + arguments
    sock.sendall(struct.pack("!BHI", _FRAME_METHOD, 0, len(payload)) + payload + _FRAME_END)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _expect_method(sock: socket.socket, expected: int) -> bytes:
    frame_type, _, size = struct.unpack("!BHI", _read_exact(sock, 7))
    body = _read_exact(sock, size + 1)[:-1]
    if frame_type != _FRAME_METHOD:
        raise ConnectionError(f"unexpected AMQP frame type {frame_type}")
    class_id, method_id = struct.unpack("!HH", body[:4])
    if (class_id, method_id) == (_CONNECTION, _CLOSE):
        code = struct.unpack("!H", body[4:6])[0]
        text = body[7 : 7 + body[6]].decode(errors="replace")
        raise AmqpRefusedError(f"AMQP connection refused: {code} {text}")
    if (class_id, method_id) != (_CONNECTION, expected):
        raise ConnectionError(f"unexpected AMQP method {class_id}.{method_id}")
    return body[4:]


def amqp_login(
    port: int, *, user: str = "guest", password: str = "guest", vhost: str = "/",
    timeout: float = 5.0,
) -> None:  # fmt: skip
    """Logs in to 127.0.0.1:port and opens `vhost`; raises OSError/ConnectionError otherwise.

    RabbitMQ opens its AMQP listener last in its boot, so a successful login means the broker
    takes clients. No library: the probe runs in any thread, with or without an event loop.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_PROTOCOL_HEADER)
        _expect_method(sock, _START)
        credentials = b"\x00" + user.encode() + b"\x00" + password.encode()
        start_ok = struct.pack("!I", 0) + _shortstr("PLAIN") + _longstr(credentials)
        _send_method(sock, _START_OK, start_ok + _shortstr("en_US"))
        tune = _expect_method(sock, _TUNE)
        channel_max, frame_max, _ = struct.unpack("!HIH", tune[:8])
        _send_method(sock, _TUNE_OK, struct.pack("!HIH", channel_max, frame_max, 0))
        _send_method(sock, _OPEN, _shortstr(vhost) + _shortstr("") + b"\x00")
        _expect_method(sock, _OPEN_OK)
        _send_method(sock, _CLOSE, struct.pack("!H", 200) + _shortstr("probe") + b"\x00" * 4)
        _expect_method(sock, _CLOSE_OK)
