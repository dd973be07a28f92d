"""A per-dataset lock: a timer and a person never write the same dataset at once."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from abaco_cli.errors import LockedError


def describe_holder(path: Path) -> str:
    """Who holds a lock, from what its holder wrote into the lock file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} (user {info.get('user')}, "
        f"run {info.get('run_id')}, `{info.get('command')}`, since {info.get('since')})"
    )


@contextmanager
def dataset_lock(
    path: Path,
    *,
    run_id: str,
    command: str,
    timeout_seconds: float,
    on_wait: Callable[[str], None] | None = None,
    poll_seconds: float = 0.2,
) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; wait at most ``timeout_seconds``, then LockedError.

    The kernel drops the lock when its process dies, so a crash never leaves it held.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+", encoding="utf-8")
    try:
        deadline = time.monotonic() + timeout_seconds
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced and on_wait is not None:
                    on_wait(describe_holder(path))
                    announced = True
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{path.stem} is locked by {describe_holder(path)}; "
                        f"gave up after {timeout_seconds:g}s"
                    ) from None
                time.sleep(poll_seconds)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "run_id": run_id,
            "command": command,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()
