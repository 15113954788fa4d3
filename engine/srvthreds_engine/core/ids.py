"""Id generation with nanoid's alphabet (`evt` + 21 chars, `<patternId>_` + 21 chars)."""

from __future__ import annotations

import os
import secrets

NANOID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
NANOID_SIZE = 21


# 64 symbols: one random byte masked to 6 bits is uniform, exactly as nanoid does.
_BYTE_TO_SYMBOL = bytes(ord(NANOID_ALPHABET[byte & 63]) for byte in range(256))


class _RandomPool:
    """`secrets` (OS CSPRNG) bytes drawn in blocks, each byte handed out once.

    One system call per id costs more than building the id, and the engine makes two ids per
    event. A forked child starts with an empty pool, so it never repeats its parent's ids.
    """

    BLOCK_SIZE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._pool):
            self._pool = secrets.token_bytes(max(self.BLOCK_SIZE, size))
            self._at = 0
        chunk = self._pool[self._at : self._at + size]
        self._at += size
        return chunk

    def forget(self) -> None:
        self._pool = b""
        self._at = 0


_POOL = _RandomPool()
os.register_at_fork(after_in_child=_POOL.forget)


def nanoid(size: int = NANOID_SIZE) -> str:
    """A URL-safe random id of `size` characters, as nanoid makes them."""
    return _POOL.take(size).translate(_BYTE_TO_SYMBOL).decode("ascii")


def event_id() -> str:
    """The id of an engine-built event."""
    return "evt" + nanoid()


def thred_id(pattern_id: str) -> str:
    """The id of a new thred of a pattern."""
    return f"{pattern_id}_{nanoid()}"
