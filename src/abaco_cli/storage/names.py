"""Object names: plain relative keys, the same rules on every backend.

A name is '/'-separated, relative to the destination's prefix, and safe to mirror as a path
below a folder: no empty segment (so no leading, trailing or doubled '/'), no '.' or '..'
segment, no backslash, no control character, at most 1024 bytes of UTF-8 (the limit of GCS
and S3 keys), and no segment starting with ``.abaco-`` (the local backend's own files).
"""

from __future__ import annotations

import re

from abaco_cli.storage.errors import InvalidObjectName

MAX_KEY_BYTES = 1024
RESERVED_PREFIX = ".abaco-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid object name, or None when it is."""
    if not isinstance(name, str):
        return "it is not text"
    if not name:
        return "it is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    if _CONTROL.search(name):
        return "it holds a control character"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is absolute (starts with '/')"
    for segment in name.split("/"):
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if segment.startswith(RESERVED_PREFIX):
            return f"segments starting with {RESERVED_PREFIX!r} are reserved"
    return None


def check_name(name: str) -> str:
    """``name`` itself when it is a valid object name; else InvalidObjectName.

    Callers validate every name that comes back from ``Destination.list()`` with this before
    they use it as a path or a key: listings are untrusted input.
    """
    problem = name_problem(name)
    if problem is not None:
        shown = repr(name)[:120] if isinstance(name, str) else type(name).__name__
        raise InvalidObjectName(f"object name {shown} refused: {problem}")
    return name
