"""Log sequence numbers (LSNs): PostgreSQL's ``X/Y`` text, and 16-digit keys that sort in order.

An LSN is a 64-bit position in the write-ahead log. The lake compares LSNs only as integers
(``"9/0" > "10/0"`` as text), writes them as PostgreSQL does (``16/B374D848``) in its state and
commit metadata, and as 16 upper-case hex digits (``00000016B374D848``) in file names, so that
names sort in LSN order. Both forms are read back from files: the parsers are strict and refuse
anything but their own form (no sign, no space, no ``0x``, no empty half, no digit too many).
"""

from __future__ import annotations

import re

__all__ = ["MAX_LSN", "format_lsn", "lsn_key", "parse_lsn", "parse_lsn_key"]

MAX_LSN = 2**64 - 1
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_KEY = re.compile(r"[0-9A-F]{16}")


def _checked(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LSN:
        raise ValueError(f"an LSN is an integer from 0 to 2**64 - 1, not {value!r}")
    return value


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` -> ``0x16B374D848``; ValueError for anything but PostgreSQL's form."""
    match = _LSN.fullmatch(text) if isinstance(text, str) else None
    if match is None or not text.isascii():
        raise ValueError(f"not an LSN like 16/B374D848: {text!r:.40}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(value: int) -> str:
    """PostgreSQL's form of an LSN: ``16/B374D848`` (upper-case hex, no leading zeros)."""
    value = _checked(value)
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def lsn_key(value: int) -> str:
    """The LSN as 16 upper-case hex digits (``00000016B374D848``): file names in LSN order."""
    return f"{_checked(value):016X}"


def parse_lsn_key(text: str) -> int:
    """The inverse of ``lsn_key``: exactly 16 upper-case hex digits; ValueError otherwise."""
    if not isinstance(text, str) or _KEY.fullmatch(text) is None or not text.isascii():
        raise ValueError(f"not a 16-digit LSN key like 00000016B374D848: {text!r:.40}")
    return int(text, 16)
