"""Small files at paths the configuration names (the audit log's head): written atomically.

Files of the runtime tree go through runtime/files.py, which checks every path against the
tree's allow-list; this is for the few files whose place is configuration, not the tree.
"""

from __future__ import annotations

import os
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def write_text_atomic(target: Path, text: str, tag: str) -> None:
    """Write a small text file atomically: a hidden temporary file beside it (never through a
    link), fsync, rename over it, fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{tag}.tmp")
    try:
        fd = os.open(temp, _CREATE, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
