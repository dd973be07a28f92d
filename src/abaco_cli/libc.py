"""Two calls of Linux's C library that Python's os module does not offer, looked up once:
``sync_file_range`` (start writing a file's pages to disk without waiting) and ``mallopt``
(tune glibc's malloc). Each is None where the platform or C library has none; callers treat
both as hints and carry on without them."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from typing import cast

SYNC_FILE_RANGE_WRITE = 2  # sync_file_range(2): start writeback of the range, do not wait
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters


@functools.cache
def _function(name: str) -> ctypes._CFunctionType | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        found: ctypes._CFunctionType = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):  # a C library without it (e.g. musl's lacks mallopt)
        return None
    return found


@functools.cache
def sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """sync_file_range(fd, offset, nbytes, flags), or None."""
    function = _function("sync_file_range")
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


@functools.cache
def mallopt() -> Callable[[int, int], int] | None:
    """mallopt(param, value), or None."""
    function = _function("mallopt")
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int], int]", function)
