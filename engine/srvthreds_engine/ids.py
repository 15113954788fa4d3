"""Id generation with nanoid's alphabet (`evt` + 21 chars, `<patternId>_` + 21 chars)."""

from __future__ import annotations

import secrets

NANOID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
NANOID_SIZE = 21


# 64 symbols: one random byte masked to 6 bits is uniform, exactly as nanoid does.
_BYTE_TO_SYMBOL = bytes(ord(NANOID_ALPHABET[byte & 63]) for byte in range(256))


def nanoid(size: int = NANOID_SIZE) -> str:
    """A URL-safe random id of `size` characters, as nanoid makes them."""
    return secrets.token_bytes(size).translate(_BYTE_TO_SYMBOL).decode("ascii")


def event_id() -> str:
    """The id of an engine-built event."""
    return "evt" + nanoid()


def thred_id(pattern_id: str) -> str:
    """The id of a new thred of a pattern."""
    return f"{pattern_id}_{nanoid()}"
