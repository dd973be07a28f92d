"""A per-dataset lock: a timer and a person never write the same dataset at once.

The lock is an flock on ``locks/<dataset>.lock``, opened without following a link; the holder
writes who it is into the file (pid, host, user, run id, command, since when) and empties it
when it lets go, so that ``probe_locks`` can tell a held lock, a free one, and a stale one
(holder info left by a process that died).
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from abaco_cli.errors import LockedError, UnsafePathError

_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _open(path: Path) -> int:
    """The lock file's descriptor; a link or anything but a regular file is refused."""
    try:
        fd = os.open(path, _OPEN, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(
                f"{path} is a symbolic link: refusing to use it as a lock"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file: refusing to use it as a lock")
    return fd


def _holder_text(info: dict[str, object]) -> str:
    return (
        f"pid {info.get('pid')} on {info.get('host')} (user {info.get('user')}, "
        f"run {info.get('run_id')}, `{info.get('command')}`, since {info.get('since')})"
    )


def describe_holder(path: Path) -> str:
    """Who holds a lock, from what its holder wrote into the lock file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            text = os.read(fd, 65536).decode("utf-8", "replace")
        finally:
            os.close(fd)
        info = json.loads(text or "{}")
    except (OSError, ValueError):
        return "another process"
    return _holder_text(info) if isinstance(info, dict) and info else "another process"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


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
    fd = _open(path)
    try:
        deadline = time.monotonic() + timeout_seconds
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
            "user": _user(),
            "run_id": run_id,
            "command": command,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ probing


@dataclass
class LockProbe:
    """The locks of a runtime tree: held now, and stale (holder info of a dead process)."""

    held: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # "<file> (<why>)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_holder(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "holder info unreadable"
    if not isinstance(info, dict):
        return "holder info unreadable"
    pid, host = info.get("pid"), info.get("host")
    fate = "is gone"
    if isinstance(pid, int) and host == socket.gethostname() and _pid_alive(pid):
        fate = "is alive but no longer holds it"
    return (
        f"pid {pid} on {host} {fate}; run {info.get('run_id')}, `{info.get('command')}`, "
        f"since {info.get('since')}"
    )


def probe_locks(folder: Path) -> LockProbe:
    """Which locks in ``folder`` are held, and which hold info of a process that died."""
    probe = LockProbe()
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            return probe
        paths = sorted(folder.glob("*.lock"))
    except FileNotFoundError:
        return probe
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # a link, or gone
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                probe.held.append(path.stem)
                continue
            try:
                text = os.read(fd, 65536).decode("utf-8", "replace").strip()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if text:
            probe.stale.append(f"{path.name} ({_stale_holder(text)})")
    return probe
